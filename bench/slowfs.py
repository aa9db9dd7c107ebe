#!/usr/bin/env python3
"""A read-only FUSE passthrough of a folder that waits DELAY_MS before answering each call, as a
network filesystem waits on its round trips (the machine here has no NFS server and no netem).
Used by bench/walk.sh. Needs the `mfusepy` module (pip) and /dev/fuse.

    python3 bench/slowfs.py SOURCE MOUNTPOINT DELAY_MS
"""
import errno
import os
import sys
import time

import mfusepy as fuse


class Slow(fuse.Operations):
    use_ns = True  # times in nanoseconds

    def __init__(self, root, delay):
        self.root = root
        self.delay = delay

    def _wait(self):
        time.sleep(self.delay)

    def _path(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def getattr(self, path, fh=None):
        self._wait()
        try:
            st = os.lstat(self._path(path))
        except OSError as e:
            raise fuse.FuseOSError(e.errno)
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")
        out = {k: getattr(st, k) for k in keys}
        for t in ("st_atime", "st_mtime", "st_ctime"):
            out[t] = getattr(st, t + "_ns")
        return out

    def readdir(self, path, fh):
        self._wait()
        return [".", ".."] + os.listdir(self._path(path))

    def readlink(self, path):
        self._wait()
        return os.readlink(self._path(path))

    def open(self, path, flags):
        self._wait()
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise fuse.FuseOSError(errno.EROFS)
        return os.open(self._path(path), flags)

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def release(self, path, fh):
        os.close(fh)
        return 0

    def statfs(self, path):
        st = os.statvfs(self._path(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
                "f_flag", "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}


if __name__ == "__main__":
    source, mountpoint, delay_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    # Kernel caching off (attr/entry timeouts 0), so every walk pays every round trip; threads
    # on, as a network filesystem serves calls in parallel.
    fuse.FUSE(Slow(source, delay_ms / 1000), mountpoint, foreground=True, ro=True,
              attr_timeout=0, entry_timeout=0, allow_other=True, nothreads=False)
