//! The folder target: books placed under a root folder by the layout template, by copy (temp
//! name, then an atomic no-replace link), hardlink, symlink or reflink. Never overwrites a file it
//! did not place, never writes outside the root (not even through a symlink planted in it), and
//! makes its writes durable in batches (`syncfs`) rather than per file. Names follow the
//! target filesystem's rules (`target::name_rules`, probed at open): on vfat, exFAT or an SMB
//! share they are fitted to its characters and compared without case.

use super::flusher::{syncfs, Flusher};
use super::held_files::{HeldFiles, HeldFilesBuilder};
use super::made_names::MadeNames;
use super::name_rules::{NameRules, Placing};
use super::sidecar_state::{self, Cover, Finding, Strays};
use super::sidecars::{stem_of, Put, Sidecars};
use super::staged::{own_temp_prefix, temp_name, Staging};
use super::{ContentQuery, NameQuery, Payload, Placed, PlacementOptions, Unusable};
use crate::failure::{Failure, FailureKind};
use crate::hash::{self, Digests, Hasher};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Prefix of bookferry's temporary files; a run removes any it finds left by a killed one.
pub const TEMP_PREFIX: &str = ".bookferry-tmp-";

/// How a file gets into the target folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    Copy,
    Hardlink,
    Symlink,
    Reflink,
}

/// A `--link` value that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--link {0:?}: expected copy, hardlink, symlink or reflink")]
pub struct UnknownLinkMode(pub String);

impl LinkMode {
    pub fn parse(s: &str) -> Result<LinkMode, UnknownLinkMode> {
        match s {
            "copy" => Ok(LinkMode::Copy),
            "hardlink" => Ok(LinkMode::Hardlink),
            "symlink" => Ok(LinkMode::Symlink),
            "reflink" => Ok(LinkMode::Reflink),
            _ => Err(UnknownLinkMode(s.into())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LinkMode::Copy => "copy",
            LinkMode::Hardlink => "hardlink",
            LinkMode::Symlink => "symlink",
            LinkMode::Reflink => "reflink",
        }
    }
}

pub struct FolderTarget {
    root: PathBuf,
    opts: PlacementOptions,
    /// What the target held when the run opened it: read the first time a row asks (see
    /// [`FolderTarget::held`]), so a run with nothing to check never walks the tree.
    held: OnceLock<Held>,
    /// The names this run made before `held` was read, which that read leaves out (see
    /// `target::made_names`).
    made: MadeNames,
    /// A dry run writes nothing, and its read of `held` removes no temp file.
    dry_run: bool,
    root_dir: Option<File>,
    /// Writes back what the run writes while it runs, and makes it durable for the state
    /// writer (see `target::flusher`); not in a dry run.
    flusher: Option<Flusher>,
    /// Where the hash task stages copies (copy mode, not a dry run): see `target::staged`.
    staging: Option<Staging>,
    /// Folders already checked or created by this run (by key, see `NameRules::key`), with
    /// their names as the filesystem spells them: not checked again per file. A cache of the
    /// last [`KNOWN_DIRS`] at most (a layout of a folder per book makes one per file): a
    /// folder it forgot is checked again.
    known_dirs: Mutex<HashMap<String, String>>,
    /// What names the target's filesystem takes (POSIX in a dry run: nothing is probed).
    names: NameRules,
    /// Destination names being placed now: two transfers never take one name at once.
    placing: Placing,
}

impl FolderTarget {
    pub fn open(
        root: &Path,
        source_root: &Path,
        opts: PlacementOptions,
        dry_run: bool,
    ) -> Result<FolderTarget, Unusable> {
        let unusable = |what: &'static str, source: io::Error| Unusable::FolderIo {
            root: root.to_path_buf(),
            what,
            source,
        };
        if root.exists() && !root.is_dir() {
            return Err(Unusable::NotAFolder(root.to_path_buf()));
        }
        if !dry_run {
            fs::create_dir_all(root).map_err(|e| unusable("cannot create it", e))?;
        }
        let meta = match fs::metadata(root) {
            Ok(m) => Some(m),
            Err(e) if dry_run && e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(unusable("cannot read it", e)),
        };
        if meta.as_ref().is_some_and(|m| !m.is_dir()) {
            return Err(Unusable::NotAFolder(root.to_path_buf()));
        }
        let mut target = FolderTarget {
            root: root.to_path_buf(),
            opts,
            held: OnceLock::new(),
            made: MadeNames::new(),
            dry_run,
            root_dir: None,
            flusher: None,
            staging: None,
            known_dirs: Mutex::new(HashMap::new()),
            names: NameRules::POSIX,
            placing: Placing::default(),
        };
        if dry_run {
            // What the real run's probes refuse, found without writing anything.
            target.dry_run_preflight(source_root)?;
        }
        let Some(meta) = meta else {
            return Ok(target);
        };
        if !dry_run {
            let probe = root.join(temp_name("probe"));
            File::create(&probe)
                .and_then(|mut f| f.write_all(b"probe"))
                .map_err(|e| unusable("not writable", e))?;
            let linked = target.probe_link_mode(&probe, source_root, &meta);
            let _ = fs::remove_file(&probe);
            linked?;
            target.names = NameRules::probe(root, temp_name)
                .map_err(|e| unusable("cannot probe its file names", e))?;
            if !target.names.is_posix() {
                tracing::info!(
                    "target folder {}: its filesystem {}: names are fitted to it",
                    root.display(),
                    target.names.describe()
                );
            }
            let dir = File::open(root).map_err(|e| unusable("cannot open", e))?;
            // Without its thread, each flush is a syncfs of its own (as the flusher's is).
            target.flusher = dir.try_clone().and_then(Flusher::start).ok();
            target.root_dir = Some(dir);
            if target.opts.link == LinkMode::Copy {
                let mut staging = Staging::probe(root);
                if let Some(f) = &target.flusher {
                    staging = staging.counting(f.writes().clone());
                }
                target.staging = Some(staging);
            }
        }
        Ok(target)
    }

    /// The files the target held when the run opened it, read (and the temp files a killed
    /// run left removed) the first time this is asked: by the first name check or content
    /// check. Files this run placed meanwhile are left out by name (see `made`), and the temp
    /// files it is writing by their prefix, which holds this process's id. Blocking: walks
    /// the whole tree once (a folder of 1,000,000 books in their own folders: ~1 M
    /// directories), which a run that checks nothing (nothing to do, or only rows to place
    /// again) never does.
    pub fn held(&self) -> &Held {
        self.held.get_or_init(|| {
            let started = std::time::Instant::now();
            let sweep = !self.dry_run;
            // Each file goes straight into the held files' compact form (no list of the tree
            // in between: at 300,000 files that list was ~90 MB, the run's peak); the names
            // this run made are settled after the walk (a file placed during it is the run's
            // own) and taken out then.
            let mut files = HeldFilesBuilder::new(self.root.clone());
            index_tree(&self.root, sweep, |name, size, rel| {
                files.add(rel, size, &self.names.key(name));
            });
            let made = self.made.settle();
            let files = if made.is_empty() {
                files.build()
            } else {
                files.build_without(|rel| made.contains(&self.names.key(rel)))
            };
            tracing::info!(
                "target folder {}: read what it held at the open: {} files in {:.1?}",
                self.root.display(),
                files.len(),
                started.elapsed()
            );
            Held { files }
        })
    }

    /// Whether [`Self::held`] has been read.
    pub fn has_read_held(&self) -> bool {
        self.held.get().is_some()
    }

    /// A dry run's stand-in for the probes: the folder (or, when it does not exist yet, the
    /// nearest folder above it, where it would be made) must be writable by this process, and
    /// `--link hardlink|reflink` needs it on the source's filesystem.
    fn dry_run_preflight(&self, source_root: &Path) -> Result<(), Unusable> {
        let existing = self
            .root
            .ancestors()
            .find(|p| p.is_dir())
            .unwrap_or(Path::new("/"));
        use rustix::fs::{access, Access};
        access(existing, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| Unusable::FolderIo {
            root: self.root.clone(),
            what: "not writable",
            source: e.into(),
        })?;
        let meta = fs::metadata(existing).map_err(|source| Unusable::FolderIo {
            root: self.root.clone(),
            what: "cannot read it",
            source,
        })?;
        if matches!(self.opts.link, LinkMode::Hardlink | LinkMode::Reflink) {
            let src = fs::metadata(source_root).map_err(|source| Unusable::SourceUnreadable {
                root: source_root.to_path_buf(),
                source,
            })?;
            if src.dev() != meta.dev() {
                return Err(Unusable::LinkAcrossFilesystems {
                    mode: self.opts.link,
                    source_root: source_root.to_path_buf(),
                    what: "target",
                    target: self.root.clone(),
                });
            }
        }
        Ok(())
    }

    fn probe_link_mode(
        &self,
        probe: &Path,
        source_root: &Path,
        target_meta: &fs::Metadata,
    ) -> Result<(), Unusable> {
        let mode = self.opts.link;
        if matches!(mode, LinkMode::Hardlink | LinkMode::Reflink) {
            let src = fs::metadata(source_root).map_err(|source| Unusable::SourceUnreadable {
                root: source_root.to_path_buf(),
                source,
            })?;
            if src.dev() != target_meta.dev() {
                return Err(Unusable::LinkAcrossFilesystems {
                    mode,
                    source_root: source_root.to_path_buf(),
                    what: "target",
                    target: self.root.clone(),
                });
            }
        }
        if mode == LinkMode::Reflink {
            let clone = probe.with_extension("clone");
            let res = File::open(probe)
                .and_then(|src| Ok((src, File::create(&clone)?)))
                .and_then(|(src, dst)| reflink(&src, &dst));
            let _ = fs::remove_file(&clone);
            res.map_err(|source| Unusable::NoReflink {
                target: self.root.clone(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn check_names(&self, q: &[NameQuery]) -> std::collections::HashSet<i64> {
        q.iter()
            .filter(|n| {
                let key = self.names.key(&n.file_name);
                self.held().files.has_name(&key, n.size)
            })
            .map(|n| n.key)
            .collect()
    }

    /// Which queried contents already sit in the target (a file of the same size and BLAKE3 that
    /// was there when the run started), and where. Blocking: reads those files once each.
    pub fn check_content(&self, q: &[ContentQuery]) -> HashMap<i64, Option<String>> {
        self.held().files.find(q)
    }

    /// The relative destination of a payload (before any ` (2)` suffix).
    pub fn destination_of(&self, p: &Payload) -> String {
        if let Some(prev) = &p.previous_ref {
            if self.root.join(prev).is_file() {
                return prev.clone();
            }
        }
        let rel = self
            .opts
            .layout
            .render(p.metadata.as_ref(), &p.source_rel, &p.format);
        if self.names.is_posix() {
            return rel;
        }
        let fitted: Vec<String> = rel.split('/').map(|c| self.names.fit(c)).collect();
        fitted.join("/")
    }

    /// Where a placement this migration claimed at `planned` (a [`Self::destination_of`]
    /// result recorded before placing, see `state::placement`) ended, if it was made: the first
    /// of `planned`, `planned (2)`, … (the names `place` tries, in order, up to the first free
    /// one) that holds the row's content — `known` digests, or else those of the source file,
    /// hashed here. Returns where, with the content. Blocking: reads the candidates.
    pub fn find_placed(
        &self,
        planned: &str,
        source: &Path,
        size: u64,
        known: Option<&Digests>,
    ) -> Option<(String, Digests)> {
        let inside = Path::new(planned)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || planned.is_empty() {
            return None;
        }
        let (parent_rel, name) = planned.rsplit_once('/').unwrap_or(("", planned));
        let hashed = |p: &Path| {
            File::open(p)
                .and_then(hash::hash_reader)
                .ok()
                .map(|(d, _)| d)
        };
        let mut content = known.cloned();
        for n in 1..=1000u32 {
            let candidate_name = match n {
                1 => name.to_string(),
                _ => with_suffix(name, n),
            };
            let rel = match parent_rel {
                "" => candidate_name,
                dir => format!("{dir}/{candidate_name}"),
            };
            let path = self.root.join(&rel);
            // The transfer took the first free name: nothing of ours after one.
            let meta = fs::symlink_metadata(&path).ok()?;
            let ours = if self.opts.link == LinkMode::Symlink {
                meta.file_type().is_symlink() && fs::read_link(&path).is_ok_and(|t| t == source)
            } else if meta.is_file() && meta.len() == size {
                if content.is_none() {
                    content = hashed(source);
                }
                let there = hashed(&path);
                content
                    .as_ref()
                    .zip(there)
                    .is_some_and(|(c, t)| t.same_content(c))
            } else {
                false
            };
            if ours {
                return content.or_else(|| hashed(source)).map(|c| (rel, c));
            }
        }
        None
    }

    /// Whether books get their sidecars here (`run --sidecars`).
    pub fn sidecars_on(&self) -> bool {
        self.opts.sidecars
    }

    /// Give the book at `target_ref` (a book a dead run placed, adopted now) the sidecars that
    /// are missing or torn there (see `target::sidecar_state`). Not synced: call
    /// [`Self::flush`] before recording the book. Returns what was put right.
    pub fn mend_sidecars(&self, p: &Payload, target_ref: &str) -> io::Result<Vec<Finding>> {
        let (dir_rel, name) = target_ref.rsplit_once('/').unwrap_or(("", target_ref));
        let sidecars = Sidecars::of(p, &self.opts.migration_key, self.opts.covers);
        let dir = self.root.join(dir_rel);
        // A whole `.jpg` is not compared: covers are not made again for every adopted book.
        let mended = sidecar_state::mend(&sidecars, &dir, name, Cover::WholeIsEnough)?;
        if let (false, Some(f)) = (mended.is_empty(), &self.flusher) {
            f.writes().wrote();
        }
        Ok(mended)
    }

    /// Remove the sidecars a dead run wrote for `p` at `planned` (its claimed destination, see
    /// `state::placement`) or the ` (N)` name it went on to, when it did not place the book
    /// there and no file owns them: the names `place` tries, in order, up to the one whose
    /// book name is free and where it would have put the sidecars. Returns what was removed.
    pub fn remove_stray_sidecars(&self, p: &Payload, planned: &str) -> io::Result<Vec<PathBuf>> {
        let inside = Path::new(planned)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || planned.is_empty() {
            return Ok(Vec::new());
        }
        let (dir_rel, name) = planned.rsplit_once('/').unwrap_or(("", planned));
        let dir = self.root.join(dir_rel);
        let sidecars = Sidecars::of(p, &self.opts.migration_key, self.opts.covers);
        for n in 1..=1000u32 {
            let candidate = match n {
                1 => name.to_string(),
                _ => with_suffix(name, n),
            };
            match fs::symlink_metadata(dir.join(&candidate)) {
                // Another file at the book's name: the transfer went on.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let owned = |stem: &str| self.stem_owned(&dir, stem);
            match sidecar_state::remove_strays(&sidecars, &dir, &candidate, owned)? {
                Strays::Passed => continue,
                Strays::Here(removed) => return Ok(removed),
            }
        }
        Ok(Vec::new())
    }

    /// Whether a file in `dir` other than the sidecars themselves has the stem `stem` (names
    /// compared as the filesystem does): a book, which owns the sidecars of that stem.
    fn stem_owned(&self, dir: &Path, stem: &str) -> bool {
        let key = self.names.key(stem);
        let sidecar_keys = [
            self.names.key(&format!("{stem}.opf")),
            self.names.key(&format!("{stem}.jpg")),
        ];
        let Ok(entries) = fs::read_dir(dir) else {
            return false;
        };
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with(TEMP_PREFIX)
                && !sidecar_keys.contains(&self.names.key(&name))
                && self.names.key(stem_of(&name)) == key
        })
    }

    /// Place one file. Blocking: called on a blocking thread.
    pub fn place(&self, p: &Payload) -> Result<Placed, Failure> {
        let placed = self.place_file(p);
        if let (Ok(_), Some(f)) = (&placed, &self.flusher) {
            f.writes().wrote();
        }
        if placed.is_ok() {
            crate::fault_hook::kill_if_injected("book-placed", &p.source_rel);
        }
        if self.made.full() {
            // Placing without checking (rows resumed past the checks): read the target now
            // rather than record every name.
            self.held();
        }
        placed
    }

    fn place_file(&self, p: &Payload) -> Result<Placed, Failure> {
        let rel = self.destination_of(p);
        let replacing = p.previous_ref.as_deref() == Some(rel.as_str());
        let write_err = |what: &str, path: &Path, e: io::Error| {
            Failure::new(
                FailureKind::of_target_io(&e),
                format!("{}: {what} {}: {e}", p.source_rel, path.display()),
            )
        };
        let parent_rel = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        // The folders as the filesystem spells them (on a case-insensitive one, an existing
        // `Dune/` takes `dune/x.epub`): what the row records is what is there.
        let (parent, parent_rel) = self
            .ensure_dir_inside(parent_rel)
            .map_err(|(path, e)| write_err("cannot create target folder", &path, e))?;
        let parent_rel = parent_rel.as_str();
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        let sidecars = self
            .opts
            .sidecars
            .then(|| Sidecars::of(p, &self.opts.migration_key, self.opts.covers));
        // A staged copy is linked into place by one call that fails if the name is taken, so
        // what stands there is looked at only then (a `stat` per file saved). Anything else
        // (and a staged copy that cannot be moved, see `put`) is written only once the name is
        // known to be free; so is every file with sidecars, which go there first.
        let look_first = p.staged.is_none() || sidecars.is_some();
        let look = |candidate: &Path| {
            self.look_at(candidate, p)
                .map_err(|e| write_err("cannot inspect", candidate, e))
        };
        for n in 1..=1000u32 {
            let candidate_name = if n == 1 {
                name.clone()
            } else {
                with_suffix(&name, n)
            };
            let candidate = parent.join(&candidate_name);
            let candidate_rel = if parent_rel.is_empty() {
                candidate_name.clone()
            } else {
                format!("{parent_rel}/{candidate_name}")
            };
            let replace = replacing && n == 1;
            let _held = self.placing.hold(self.names.key(&candidate_rel));
            // The sidecars go first, named after the book's stem, which is held until the book
            // is placed too: two formats of one book share their sidecars. (Held after the
            // book's name, never before: no two transfers wait for each other.)
            let _stem = sidecars.as_ref().map(|_| {
                let folder = &candidate_rel[..candidate_rel.len() - candidate_name.len()];
                let stem_rel = format!("{folder}{}", stem_of(&candidate_name));
                self.placing
                    .hold(format!("\0sidecars\0{}", self.names.key(&stem_rel)))
            });
            // From before any file is made until its name is recorded (see `made`).
            let making = self.made.making();
            let record = |rel: &str| self.made.record(&making, self.names.key(rel));
            let put_sidecars = |sidecars: &Sidecars| -> Result<Put, Failure> {
                let put = sidecars
                    .put(&parent, &candidate_name, replace)
                    .map_err(|e| write_err("cannot write the sidecars of", &candidate, e))?;
                if let Put::Written(made) = &put {
                    for path in made {
                        if let Ok(rel) = path.strip_prefix(&self.root) {
                            record(&rel.to_string_lossy());
                        }
                    }
                }
                Ok(put)
            };
            if !replace && look_first {
                match look(&candidate)? {
                    AtName::Free => {}
                    AtName::Identical(len) => {
                        // Ours beside it are kept, missing ones written; another's left alone.
                        if let Some(s) = &sidecars {
                            put_sidecars(s)?;
                        }
                        return Ok(identical(self.spelled(parent_rel, candidate_rel), len));
                    }
                    AtName::Taken => continue,
                }
            }
            let sidecars_put = match &sidecars {
                Some(s) => match put_sidecars(s)? {
                    Put::Taken => continue,
                    put => Some(put),
                },
                None => None,
            };
            if sidecars_put.is_some() {
                crate::fault_hook::kill_if_injected("sidecars-written", &p.source_rel);
            }
            let undo_sidecars = || {
                if let Some(put) = &sidecars_put {
                    put.undo();
                }
            };
            match self.put(p, &parent, &candidate, replace) {
                Ok(mut placed) => {
                    record(&candidate_rel);
                    placed.target_ref = candidate_rel;
                    return Ok(placed);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    undo_sidecars();
                    if !look_first {
                        if let AtName::Identical(len) = look(&candidate)? {
                            return Ok(identical(self.spelled(parent_rel, candidate_rel), len));
                        }
                    }
                }
                Err(e) => {
                    undo_sidecars();
                    return Err(write_err("cannot write", &candidate, e));
                }
            }
        }
        Err(Failure::new(
            FailureKind::TargetWrite,
            format!(
                "{}: 1000 files already named {rel} in the target",
                p.source_rel
            ),
        ))
    }

    /// What stands at `candidate`: nothing, a file with exactly the payload's bytes, or
    /// something else.
    fn look_at(&self, candidate: &Path, p: &Payload) -> io::Result<AtName> {
        match fs::symlink_metadata(candidate) {
            Ok(m) if m.is_file() && m.len() == p.size && self.same_content(candidate, p) => {
                Ok(AtName::Identical(m.len()))
            }
            Ok(_) => Ok(AtName::Taken),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(AtName::Free),
            Err(e) => Err(e),
        }
    }

    /// Create the folders of `rel` under the root, refusing to pass through a symlink (a link
    /// planted in the target must not lead a write outside it). Returns the folder and its
    /// relative path as the filesystem spells it (on a case-insensitive target, a folder
    /// already there may carry another case than `rel`).
    fn ensure_dir_inside(&self, rel: &str) -> Result<(PathBuf, String), (PathBuf, io::Error)> {
        let known = |asked: &str| {
            let key = self.names.key(asked);
            self.known_dirs
                .lock()
                .ok()
                .and_then(|k| k.get(&key).cloned())
        };
        if let Some(spelled) = known(rel) {
            return Ok((self.root.join(&spelled), spelled));
        }
        let mut dir = self.root.clone();
        let mut asked = String::new();
        let mut spelled = String::new();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            if !asked.is_empty() {
                asked.push('/');
            }
            asked.push_str(comp);
            if let Some(known) = known(&asked) {
                dir = self.root.join(&known);
                spelled = known;
                continue;
            }
            let parent = dir.clone();
            dir.push(comp);
            let mut name = comp.to_string();
            // Most folders of a migration are new: make it first, and look at what is there
            // only when that fails (a FUSE vfat says EPERM, not EEXIST, for a folder that is
            // there in another case).
            if let Err(e) = fs::create_dir(&dir) {
                match fs::symlink_metadata(&dir) {
                    Ok(m) if m.is_dir() => {
                        if self.names.case_insensitive {
                            if let Some(real) = spelled_in(&parent, comp, &self.names) {
                                dir = parent.join(&real);
                                name = real;
                            }
                        }
                    }
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err((
                            dir,
                            io::Error::other(
                                "is a symlink; bookferry does not write through links",
                            ),
                        ));
                    }
                    Ok(_) => {
                        return Err((
                            dir,
                            io::Error::other("a file stands where a folder must go"),
                        ));
                    }
                    Err(_) => return Err((dir, e)),
                }
            }
            if !spelled.is_empty() {
                spelled.push('/');
            }
            spelled.push_str(&name);
            if let Ok(mut k) = self.known_dirs.lock() {
                if k.len() >= KNOWN_DIRS {
                    k.clear();
                }
                k.insert(self.names.key(&asked), spelled.clone());
            }
        }
        Ok((dir, spelled))
    }

    /// `rel`, a file in the folder `parent_rel`, with its name as the filesystem spells it: on
    /// a case-insensitive target the file found at a name may carry another case.
    fn spelled(&self, parent_rel: &str, rel: String) -> String {
        if !self.names.case_insensitive {
            return rel;
        }
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        match spelled_in(&self.root.join(parent_rel), name, &self.names) {
            Some(real) if parent_rel.is_empty() => real,
            Some(real) => format!("{parent_rel}/{real}"),
            None => rel,
        }
    }

    fn same_content(&self, existing: &Path, p: &Payload) -> bool {
        File::open(existing)
            .and_then(hash::hash_reader)
            .map(|(d, _)| d.same_content(&p.digests))
            .unwrap_or(false)
    }

    /// Put the file at `dest`, failing with `AlreadyExists` if something appeared there (unless
    /// `replace`, for a file this migration placed itself).
    fn put(&self, p: &Payload, parent: &Path, dest: &Path, replace: bool) -> io::Result<Placed> {
        match self.opts.link {
            LinkMode::Hardlink => {
                if replace {
                    fs::remove_file(dest)?;
                }
                fs::hard_link(&p.source_path, dest)?;
                Ok(Placed::default())
            }
            LinkMode::Symlink => {
                if replace {
                    fs::remove_file(dest)?;
                }
                std::os::unix::fs::symlink(&p.source_path, dest)?;
                Ok(Placed::default())
            }
            LinkMode::Copy | LinkMode::Reflink => {
                if let Some(placed) = move_staged(p, dest, replace) {
                    return placed;
                }
                // A staged copy that could not be moved: the file is written here instead, but
                // only once the name is known to be free (`place_file` did not look first).
                if !replace && p.staged.is_some() && fs::symlink_metadata(dest).is_ok() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                let temp = parent.join(temp_name(&format!("r{}", p.row_id)));
                let res = self.write_temp(p, &temp).and_then(|placed| {
                    commit_temp(&temp, dest, replace)?;
                    Ok(placed)
                });
                if res.is_err() {
                    let _ = fs::remove_file(&temp);
                }
                res
            }
        }
    }

    fn write_temp(&self, p: &Payload, temp: &Path) -> io::Result<Placed> {
        write_new_file(p, temp, self.opts.link == LinkMode::Reflink)
    }

    /// Where the hash task may stage a file of `size` bytes in copy mode (see
    /// `target::staged`): the target's root, unless a file of that size was in the target when
    /// the run started (the content check may find the file there, and a staged copy would be
    /// written for nothing). Blocking: may read what the target held (see [`Self::held`]).
    pub fn staging(&self, size: u64) -> Option<&Staging> {
        self.staging
            .as_ref()
            .filter(|_| !self.held().files.has_size(size))
    }

    /// Make everything written so far durable: a `syncfs` of the target's filesystem that
    /// starts after this call (the flusher's, else one of its own).
    pub fn flush(&self) -> io::Result<()> {
        if let Some(f) = &self.flusher {
            return f.flush();
        }
        match &self.root_dir {
            Some(dir) => syncfs(dir),
            None => Ok(()),
        }
    }
}

/// Folders a target keeps as checked before it starts that cache again (a few MB).
const KNOWN_DIRS: usize = if cfg!(test) { 2 } else { 20_000 };

/// What a folder target held before the run placed anything (see [`FolderTarget::held`]).
#[derive(Debug)]
pub struct Held {
    /// Every file, by (base name's key, size) for the name check and by content for the
    /// content check.
    files: HeldFiles,
}

/// What a destination name holds (see `FolderTarget::look_at`).
enum AtName {
    Free,
    /// A file of this length with exactly the payload's bytes.
    Identical(u64),
    Taken,
}

/// The payload is already at `target_ref`: nothing is written.
fn identical(target_ref: String, len: u64) -> Placed {
    Placed {
        target_ref,
        already_present: true,
        bytes_read: len,
        detail: Some("identical file already at the destination".into()),
        ..Default::default()
    }
}

/// Write a payload to a new file `dest` (never replacing one): its kept bytes, a clone of the
/// source (`reflink_it`), or a streamed copy hashed on the way (recording new digests when the
/// source changed since it was hashed).
pub(crate) fn write_new_file(p: &Payload, dest: &Path, reflink_it: bool) -> io::Result<Placed> {
    if let Some(placed) = move_staged(p, dest, false) {
        return placed;
    }
    let mut placed = Placed::default();
    let mut out = OpenOptions::new().write(true).create_new(true).open(dest)?;
    if reflink_it {
        let src = File::open(&p.source_path)?;
        reflink(&src, &out)?;
        placed.bytes_sent = p.size;
        return Ok(placed);
    }
    if let Some(data) = &p.data {
        out.write_all(data)?;
        placed.bytes_sent = data.len() as u64;
        return Ok(placed);
    }
    // Large file: stream it, hashing what is actually written.
    let mut src = File::open(&p.source_path)?;
    let mut h = Hasher::new(p.digests.set());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    placed.bytes_read = h.len();
    placed.bytes_sent = h.len();
    let actual = h.finish();
    if !actual.same_content(&p.digests) {
        placed.detail =
            Some("source changed since hashing; recorded the hashes of the bytes copied".into());
        placed.new_digests = Some(actual);
    }
    Ok(placed)
}

/// Move the payload's staged copy (`target::staged`) to `dest` (never over another file unless
/// `replace`). `None` when there is none to move (not staged, or gone): the caller writes the
/// file itself.
fn move_staged(p: &Payload, dest: &Path, replace: bool) -> Option<io::Result<Placed>> {
    match p.staged.as_ref()?.move_to(dest, replace) {
        Ok(()) => Some(Ok(Placed {
            bytes_sent: p.size,
            ..Default::default()
        })),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Some(Err(e)),
        Err(e) => {
            // The file is copied from the source instead (read again).
            tracing::debug!("{}: staged copy not placed: {e}", p.source_rel);
            None
        }
    }
}

/// Move a finished temp file to its final name without replacing anything (a hard link fails
/// if the name exists), or over our own earlier copy when `replace`.
pub(crate) fn commit_temp(temp: &Path, dest: &Path, replace: bool) -> io::Result<()> {
    if replace {
        return fs::rename(temp, dest);
    }
    match rename_noreplace(temp, dest) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        // Not supported by this filesystem (or kernel): link and unlink instead.
        Err(_) => {}
    }
    match fs::hard_link(temp, dest) {
        Ok(()) => fs::remove_file(temp),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            // Filesystems without hard links: rename, after checking the name is free.
            if fs::symlink_metadata(dest).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(temp, dest)
        }
    }
}

/// `renameat2(RENAME_NOREPLACE)`: one call that fails with `AlreadyExists` if `dest` exists
/// (a hard link and an unlink did the same in two, and cost a measurable share of a copy).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    Ok(renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE)?)
}

/// `Title - Author.epub` → `Title - Author (2).epub`.
pub(super) fn with_suffix(name: &str, n: u32) -> String {
    let lower = name.to_ascii_lowercase();
    let split = if lower.ends_with(".fb2.zip") {
        Some(name.len() - ".fb2.zip".len())
    } else {
        name.rfind('.').filter(|&i| i > 0)
    };
    match split {
        Some(i) => format!("{} ({n}){}", &name[..i], &name[i..]),
        None => format!("{name} ({n})"),
    }
}

/// Clone `src`'s extents into `dst` (FICLONE): a copy that shares blocks until written.
fn reflink(src: &File, dst: &File) -> io::Result<()> {
    Ok(rustix::fs::ioctl_ficlone(dst, src)?)
}

/// The name of the entry of `dir` that is `name` by `names` (itself when it is there as
/// spelled): how the filesystem spells a name it folds case in.
fn spelled_in(dir: &Path, name: &str, names: &NameRules) -> Option<String> {
    let key = names.key(name);
    let mut found = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let Some(entry_name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if entry_name == name {
            return Some(entry_name);
        }
        if found.is_none() && names.key(&entry_name) == key {
            found = Some(entry_name);
        }
    }
    found
}

/// Every file of the target tree, to `visit` (base name, size, path under the root), as it is
/// read: one open folder per level (`walkdir`), nothing kept. With `sweep`, the temp files a
/// killed run left are removed; this process's own are left alone, and neither is visited.
fn index_tree(root: &Path, sweep: bool, mut visit: impl FnMut(&str, u64, &str)) {
    let entries = walkdir::WalkDir::new(root).min_depth(1).follow_links(false);
    for entry in entries.into_iter().flatten() {
        let ft = entry.file_type();
        if !(ft.is_file() || ft.is_symlink()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if name.starts_with(TEMP_PREFIX) {
            if sweep && !name.starts_with(own_temp_prefix()) {
                let _ = fs::remove_file(entry.path());
            }
            continue;
        }
        // The entry itself (a symlink's own size is not the book's).
        let len = if ft.is_symlink() {
            match fs::metadata(entry.path()) {
                Ok(m) => m.len(),
                Err(_) => continue,
            }
        } else {
            match entry.metadata() {
                Ok(m) => m.len(),
                Err(_) => continue,
            }
        };
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        visit(&name, len, &rel.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::staged::Staged;
    use std::sync::Arc;

    /// A copy-mode target `out` (holding `existing` files when it opens) for a source `src`,
    /// both in a new temp dir: (temp dir, src, out, target).
    fn copy_target(
        existing: &[(&str, &[u8])],
    ) -> (tempfile::TempDir, PathBuf, PathBuf, FolderTarget) {
        let dir = tempfile::tempdir().unwrap();
        let (src, root) = (dir.path().join("src"), dir.path().join("out"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&root).unwrap();
        for (name, bytes) in existing {
            fs::write(root.join(name), bytes).unwrap();
        }
        let opts = PlacementOptions::copy_to_source_paths();
        let target = FolderTarget::open(&root, &src, opts, false).unwrap();
        (dir, src, root, target)
    }

    /// Opening a target reads nothing of its tree (a rerun with nothing to do never walks
    /// 1,000,000 placed books: 156 s of a 182 s rerun); the first name check does, once. It
    /// holds what was there at the open and not what this run placed before it, nor the temp
    /// files this run is writing, which it leaves alone; the temp files a killed run left go
    /// then. Before, the tree was read (and those temp files removed) at the open. (A rule by
    /// ctime left the killed run's temp file alone where the clock is coarse: it carried the
    /// open's time. Its fresh-clone check failed so.)
    #[test]
    fn what_the_target_held_at_the_open_is_read_at_the_first_name_check() {
        let (_dir, src, root, target) = copy_target(&[("book.epub", b"there!")]);
        // A second target, holding a killed run's temp file deep inside.
        let (_dir2, _src2, root2, target2) = {
            let dir = tempfile::tempdir().unwrap();
            let (src, root) = (dir.path().join("src"), dir.path().join("out"));
            fs::create_dir_all(&src).unwrap();
            fs::create_dir_all(root.join("deep")).unwrap();
            fs::write(root.join("deep/held.epub"), b"held!!!").unwrap();
            fs::write(root.join(format!("deep/{TEMP_PREFIX}4242-x-0")), b"killed").unwrap();
            let opts = PlacementOptions::copy_to_source_paths();
            let target = FolderTarget::open(&root, &src, opts, false).unwrap();
            (dir, src, root, target)
        };
        let killed = root2.join(format!("deep/{TEMP_PREFIX}4242-x-0"));
        assert!(killed.exists(), "the open read the tree");
        assert!(!target2.has_read_held());

        // This run places a book and is writing a temp file before any name check.
        fs::write(src.join("placed.epub"), b"ours").unwrap();
        let p = Payload {
            row_id: 2,
            source_path: src.join("placed.epub"),
            source_rel: "placed.epub".into(),
            file_name: "placed.epub".into(),
            size: 4,
            format: "epub".into(),
            digests: hash::hash_bytes(b"ours"),
            metadata: None,
            origin: None,
            data: None,
            previous_ref: None,
            staged: None,
        };
        target.place(&p).unwrap();
        let writing = root.join(format!("{TEMP_PREFIX}{}-w-1", std::process::id()));
        fs::write(&writing, b"mine").unwrap();
        assert!(!target.has_read_held());
        let q = |key, name: &str, size| NameQuery {
            key,
            file_name: name.into(),
            size,
        };
        let found = target.check_names(&[q(1, "book.epub", 6), q(2, "placed.epub", 4)]);
        assert_eq!(
            found,
            [1].into_iter().collect(),
            "this run's placement is not held"
        );
        assert!(target.has_read_held());
        assert!(writing.exists(), "this run's temp file is left alone");

        assert_eq!(
            target2.check_names(&[q(3, "held.epub", 7)]),
            [3].into_iter().collect()
        );
        assert!(!killed.exists(), "the killed run's temp file is removed");
    }

    /// A copy the hash task staged is moved into place, never over a file already there: a
    /// name taken by other bytes gets ` (2)`, and the staged file is gone either way.
    #[test]
    fn a_staged_copy_is_moved_into_place_and_never_over_another_file() {
        let (_dir, src, root, target) = copy_target(&[("book.epub", b"other!")]);
        // Files of a size the target already has are not staged (the content check may find
        // them there); others are, in the target's root.
        assert!(target.staging(6).is_none());
        let staging = target.staging(7).expect("staged");
        assert_eq!(staging.dir(), root.as_path());

        let bytes = b"ours!!";
        fs::write(src.join("book.epub"), bytes).unwrap();
        let writes = || target.flusher.as_ref().expect("a flusher").writes().count();
        let staged = Arc::new(Staged::write(staging, 1, bytes).unwrap());
        assert_eq!(writes(), 1, "the flusher is told of the staged copy");
        let staged_path = staged.path().map(Path::to_path_buf);
        let p = staged_book(&src, bytes, &staged);
        // The source is not read again: the staged copy is all the transfer needs.
        fs::remove_file(src.join("book.epub")).unwrap();
        let placed = target.place(&p).unwrap();
        assert_eq!(writes(), 2, "and of its placement");
        target.flush().unwrap();
        drop((p, staged));
        assert_eq!(placed.target_ref, "book (2).epub");
        assert_eq!(placed.bytes_sent, 6);
        assert_eq!(fs::read(root.join("book (2).epub")).unwrap(), bytes);
        assert_eq!(fs::read(root.join("book.epub")).unwrap(), b"other!");
        assert!(staged_path.is_none_or(|p| !p.exists()));
        assert_eq!(fs::read_dir(&root).unwrap().count(), 2);
    }

    /// `book.epub` of the source, holding `bytes`, staged as `staged`.
    fn staged_book(src: &Path, bytes: &[u8], staged: &Arc<Staged>) -> Payload {
        Payload {
            row_id: 1,
            source_path: src.join("book.epub"),
            source_rel: "book.epub".into(),
            file_name: "book.epub".into(),
            size: bytes.len() as u64,
            format: "epub".into(),
            digests: hash::hash_bytes(bytes),
            metadata: None,
            origin: None,
            data: None,
            previous_ref: None,
            staged: Some(staged.clone()),
        }
    }

    /// A staged copy whose name was taken after it was staged, by these very bytes: the file
    /// there is the placement (nothing written twice, no ` (2)`), and the staged copy is gone.
    #[test]
    fn a_staged_copy_whose_bytes_are_already_at_the_destination_is_not_placed_again() {
        let (_dir, src, root, target) = copy_target(&[]);
        let bytes = b"the same book";
        let staging = target.staging(bytes.len() as u64).expect("staged");
        let staged = Arc::new(Staged::write(staging, 1, bytes).unwrap());
        let staged_path = staged.path().map(Path::to_path_buf);
        // Another process puts the same bytes at the destination meanwhile.
        fs::write(root.join("book.epub"), bytes).unwrap();
        let p = staged_book(&src, bytes, &staged);
        let placed = target.place(&p).unwrap();
        drop((p, staged));
        assert_eq!(placed.target_ref, "book.epub");
        assert!(placed.already_present);
        assert_eq!(placed.bytes_sent, 0);
        assert_eq!(fs::read(root.join("book.epub")).unwrap(), bytes);
        assert!(staged_path.is_none_or(|p| !p.exists()));
        let names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["book.epub"]);
    }

    /// A placement claimed at `book.epub` is found where the transfer would have put it: at
    /// the name, or at the first ` (N)` after names taken by other files; never a file with
    /// other bytes, nor one past the first free name.
    #[test]
    fn a_claimed_placement_is_found_at_its_name_or_the_suffix_the_transfer_took() {
        let (_dir, src, root, target) = copy_target(&[]);
        let ours = b"our book";
        fs::write(src.join("book.epub"), ours).unwrap();
        let source = src.join("book.epub");
        let digests = hash::hash_bytes(ours);
        let find = |known: Option<&Digests>| target.find_placed("book.epub", &source, 8, known);
        assert!(find(Some(&digests)).is_none(), "nothing placed yet");

        fs::write(root.join("book.epub"), b"theirs!!").unwrap();
        fs::write(root.join("book (2).epub"), b"another").unwrap();
        assert!(find(None).is_none(), "other bytes are not ours");
        // Past a free name the transfer never went.
        fs::write(root.join("book (4).epub"), ours).unwrap();
        assert!(find(None).is_none(), "past the first free name");

        fs::write(root.join("book (3).epub"), ours).unwrap();
        let want = Some(("book (3).epub".to_string(), digests.clone()));
        assert_eq!(find(Some(&digests)), want);
        // Unknown digests: the source file is hashed.
        assert_eq!(find(None), want);
        // A ref leading out of the root is never looked at.
        assert!(target
            .find_placed("../src/book.epub", &source, 8, None)
            .is_none());
    }

    #[test]
    fn suffixes_keep_extension() {
        assert_eq!(with_suffix("A - B.epub", 2), "A - B (2).epub");
        assert_eq!(with_suffix("A.fb2.zip", 3), "A (3).fb2.zip");
        assert_eq!(with_suffix("noext", 2), "noext (2)");
    }
}
