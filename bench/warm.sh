# bench/warm.sh — sourced by bench/engine.sh and bench/calibre.sh: what every timed run starts
# from. Both take effect right before a run, after its settling pause.
#
# warm_corpus DIR: page cache warm — read the corpus right before the run. (Some VMs, this one
# among them, run a DAMON "pageout" scheme that evicts pages untouched for a few seconds, so a
# settling pause would otherwise leave part of the corpus on disk.)
warm_corpus() { find "$1" -type f -exec cat {} + >/dev/null; }
#
# warm_memory: this VM hands free memory back to its host (virtio-balloon free page reporting),
# and the first touch of such memory is slow — after a run that freed a lot (rclone, calibre,
# deleting trees), the next one's page-cache writes copied at ~0.5 GB/s instead of ~10 (cp -r:
# 0.37 s became 1.1-1.4 s, all of it in the kernel's memcpy). Touching 3 GiB right before each
# run gives every tool the memory a physical machine would have.
warm_memory() { python3 -c 'b = bytes([1]) * (3 << 30)'; }
