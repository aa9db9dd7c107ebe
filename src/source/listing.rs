//! What a folder holds, and reading folders ahead of the walk. `list_folder` reads one folder
//! (its names sorted, hidden and temporary names left out, each entry's metadata). On a network
//! or FUSE filesystem every readdir and stat waits on a round trip, and the walk (one folder at a
//! time, sorted, depth-first) would wait for them one by one: there a pool of threads
//! (`ListingPool`) lists the folders the walk will enter next, and the walk takes each listing
//! when it gets there, in its own order, so what it reports does not change. On a local disk the
//! walk lists folders itself (threads measured no faster there).

use super::folder::{is_ignored_name, name_for_ref};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// One entry of a folder: its name and what `stat` (through symlinks) said of it.
pub struct Entry {
    pub name: OsString,
    pub meta: Result<Metadata, StatError>,
}

/// Why an entry could not be stat'ed.
#[derive(Debug)]
pub struct StatError {
    pub error: std::io::Error,
    /// The entry is a symlink whose target is missing or loops.
    pub dangling_symlink: bool,
}

/// A folder's entries, sorted by name, without ignored names.
pub fn list_folder(abs: &Path) -> std::io::Result<Vec<Entry>> {
    let mut names: Vec<OsString> = fs::read_dir(abs)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| !is_ignored_name(&name_for_ref(n)))
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let path = abs.join(&name);
            let meta = fs::metadata(&path).map_err(|error| StatError {
                error,
                dangling_symlink: fs::symlink_metadata(&path)
                    .is_ok_and(|l| l.file_type().is_symlink()),
            });
            Entry { name, meta }
        })
        .collect())
}

/// How a folder is listed (`list_folder`; tests slow it down).
pub type ListFn = fn(&Path) -> std::io::Result<Vec<Entry>>;

/// A folder by (device, inode): the same folder reached through a symlink has the same key.
pub type FolderKey = (u64, u64);

/// Listings held ready at most; past that the threads wait for the walk (and a listing the
/// walk never takes, e.g. a folder it reaches by another path, cannot hold the pool up for
/// long: the walk lists what it does not find ready itself).
const AHEAD: usize = 1024;

/// Threads listing ahead, when the filesystem is a network or FUSE one.
const THREADS_ON_SLOW_FS: usize = 8;

/// How many threads list ahead of a walk of `root`: `BOOKFERRY_WALK_THREADS` when set (0: none),
/// else `THREADS_ON_SLOW_FS` on a network or FUSE filesystem and none elsewhere.
pub fn threads_for(root: &Path) -> usize {
    if let Some(n) = std::env::var("BOOKFERRY_WALK_THREADS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return n;
    }
    if is_slow_filesystem(root) {
        THREADS_ON_SLOW_FS
    } else {
        0
    }
}

/// A filesystem whose calls go over a network or to a user-space server (statfs `f_type`).
fn is_slow_filesystem(root: &Path) -> bool {
    const SLOW: [u64; 10] = [
        0x6969,      // NFS
        0x517b,      // SMB
        0xff53_4d42, // CIFS
        0xfe53_4d42, // SMB2
        0x6573_5546, // FUSE (sshfs, rclone mount, …)
        0x00c3_6400, // Ceph
        0x0102_1997, // 9p
        0x5346_414f, // AFS
        0x0bd0_0bd0, // Lustre
        0x4750_4653, // GPFS
    ];
    match rustix::fs::statfs(root) {
        Ok(s) => SLOW.contains(&(s.f_type as u64)),
        Err(_) => false,
    }
}

/// A folder to list, and where the walk will know it from.
struct Job {
    key: FolderKey,
    path: PathBuf,
    rel: String,
}

#[derive(Default)]
struct State {
    /// Folders to list, the next on top (depth-first, as the walk goes).
    todo: Vec<Job>,
    /// Every folder ever queued (listed once however many paths lead to it).
    queued: HashSet<FolderKey>,
    /// Folders the walk listed itself: a thread that pops one passes it over.
    claimed: HashSet<FolderKey>,
    running: HashSet<FolderKey>,
    done: HashMap<FolderKey, std::io::Result<Vec<Entry>>>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    /// A listing is done (the walk may be waiting for it).
    listed: Condvar,
    /// Work is queued or room is made (threads may be waiting).
    work: Condvar,
    /// Folders an interrupted scan finished: the walk does not enter them, so they are not
    /// listed.
    walked: HashSet<String>,
    list: ListFn,
}

/// Threads listing the folders under a root ahead of the walk. Dropping it stops them; a
/// thread in the middle of a listing ends on its own when the listing does.
pub struct ListingPool {
    shared: Arc<Shared>,
}

impl ListingPool {
    /// Start `threads` threads listing, with `list`, `root` (key `root_key`) and every folder
    /// under it but those in `walked`.
    pub fn start(
        root: &Path,
        root_key: FolderKey,
        walked: HashSet<String>,
        threads: usize,
        list: ListFn,
    ) -> std::io::Result<ListingPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            listed: Condvar::new(),
            work: Condvar::new(),
            walked,
            list,
        });
        {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.queued.insert(root_key);
            state.todo.push(Job {
                key: root_key,
                path: root.to_path_buf(),
                rel: String::new(),
            });
        }
        let pool = ListingPool { shared };
        for i in 0..threads {
            let shared = Arc::clone(&pool.shared);
            std::thread::Builder::new()
                .name(format!("list-{i}"))
                .spawn(move || list_ahead(&shared))?;
        }
        Ok(pool)
    }

    /// The listing of the folder `key` at `path`: the one a thread made, waiting for it if a
    /// thread is making it, else made here (the folder's subfolders are then queued all the
    /// same).
    pub fn take(&self, key: FolderKey, path: &Path, rel: &str) -> std::io::Result<Vec<Entry>> {
        let shared = &self.shared;
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(listing) = state.done.remove(&key) {
                shared.work.notify_one();
                return listing;
            }
            if !state.running.contains(&key) {
                break;
            }
            state = shared.listed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.claimed.insert(key);
        state.queued.insert(key);
        drop(state);
        let job = Job {
            key,
            path: path.to_path_buf(),
            rel: rel.to_string(),
        };
        let listing = (shared.list)(&job.path);
        queue_subfolders(shared, &job, &listing);
        listing
    }
}

impl Drop for ListingPool {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.stop = true;
        state.todo.clear();
        state.done.clear();
        self.shared.work.notify_all();
    }
}

/// A pool thread: list queued folders until the pool is dropped.
fn list_ahead(shared: &Shared) {
    loop {
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if state.stop {
                    return;
                }
                if state.done.len() < AHEAD {
                    if let Some(job) = state.todo.pop() {
                        if state.claimed.contains(&job.key) {
                            continue;
                        }
                        state.running.insert(job.key);
                        break job;
                    }
                }
                state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        let listing = (shared.list)(&job.path);
        queue_subfolders(shared, &job, &listing);
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running.remove(&job.key);
        if !state.stop {
            state.done.insert(job.key, listing);
        }
        shared.listed.notify_all();
    }
}

/// Queue the subfolders of a listed folder, the first on top.
fn queue_subfolders(shared: &Shared, job: &Job, listing: &std::io::Result<Vec<Entry>>) {
    let Ok(entries) = listing else { return };
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    if state.stop {
        return;
    }
    let mut added = false;
    for entry in entries.iter().rev() {
        let Ok(meta) = &entry.meta else { continue };
        if !meta.is_dir() {
            continue;
        }
        let name = name_for_ref(&entry.name);
        let rel = if job.rel.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", job.rel)
        };
        let key = (meta.dev(), meta.ino());
        if shared.walked.contains(&rel) || !state.queued.insert(key) {
            continue;
        }
        state.todo.push(Job {
            key,
            path: job.path.join(&entry.name),
            rel,
        });
        added = true;
    }
    if added {
        shared.work.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    static NOW: AtomicUsize = AtomicUsize::new(0);
    static MOST: AtomicUsize = AtomicUsize::new(0);

    /// `list_folder` on a filesystem where every listing takes 20 ms, counting how many run at
    /// once.
    fn slow_list(abs: &Path) -> std::io::Result<Vec<Entry>> {
        let now = NOW.fetch_add(1, Ordering::SeqCst) + 1;
        MOST.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        let listing = list_folder(abs);
        NOW.fetch_sub(1, Ordering::SeqCst);
        listing
    }

    fn key(path: &Path) -> FolderKey {
        let meta = fs::metadata(path).unwrap();
        (meta.dev(), meta.ino())
    }

    fn names(listing: &[Entry]) -> Vec<String> {
        listing
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    /// The walk's order of taking listings (depth-first, sorted), through a pool of `threads`.
    /// Returns every folder's names in that order.
    fn walk_through_pool(root: &Path, threads: usize) -> Vec<(String, Vec<String>)> {
        let pool = ListingPool::start(root, key(root), HashSet::new(), threads, slow_list).unwrap();
        let mut out = Vec::new();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((path, rel)) = stack.pop() {
            let listing = pool.take(key(&path), &path, &rel).unwrap();
            for e in listing.iter().rev() {
                if e.meta.as_ref().is_ok_and(|m| m.is_dir()) {
                    let name = e.name.to_string_lossy();
                    stack.push((path.join(&e.name), format!("{rel}/{name}")));
                }
            }
            out.push((rel, names(&listing)));
        }
        out
    }

    /// On a filesystem where each listing waits (a network one), the pool lists several folders
    /// at once, and the walk gets the same listings in the same order as without it.
    #[test]
    fn on_a_slow_filesystem_folders_are_listed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        for a in 0..4 {
            for b in 0..5 {
                let d = dir.path().join(format!("a{a}/b{b}"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("book.epub"), b"x").unwrap();
                fs::write(d.join(".hidden"), b"x").unwrap();
            }
        }
        let alone = walk_through_pool(dir.path(), 0);
        assert_eq!(MOST.swap(0, Ordering::SeqCst), 1);
        let pooled = walk_through_pool(dir.path(), 4);
        let most = MOST.load(Ordering::SeqCst);
        assert!(most >= 3, "at most {most} folders listed at once");
        assert_eq!(pooled, alone);
        assert_eq!(alone.len(), 25);
        assert_eq!(
            alone[2],
            ("/a0/b0".to_string(), vec!["book.epub".to_string()])
        );
    }
}
