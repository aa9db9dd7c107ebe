//! Which names a target folder's filesystem takes, probed once when the target opens: whether
//! it folds case (vfat, exFAT, SMB shares: `Dune.epub` and `dune.epub` are one file there) and
//! whether it refuses Windows' characters (`:*?"<>|\` and controls; trailing dots and spaces
//! are dropped or refused there too, and a name is at most 255 UTF-16 units rather than 255
//! bytes), and whether it takes names beyond ASCII at all (a vfat mounted with an ASCII
//! charset does not). The folder target fits every name it builds to these rules and compares
//! names the way the filesystem does; on a Linux filesystem both are the identity, so names
//! stay exactly as the layout made them. [`Placing`] keeps two transfers of one run off the
//! same name at once (where the filesystem has no `RENAME_NOREPLACE` nor hard links, the name is
//! looked at and then taken in two steps).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};

/// The naming rules of one target folder's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NameRules {
    /// Names that differ only in case are one file.
    pub case_insensitive: bool,
    /// `:*?"<>|\` and control characters are refused; trailing dots and spaces are not kept.
    pub windows_chars: bool,
    /// Only ASCII names are taken (a vfat mounted with `iocharset=ascii`, some FUSE drivers).
    pub ascii_only: bool,
}

/// Longest name on vfat and exFAT, in UTF-16 units (Linux filesystems count 255 bytes).
const MAX_UTF16_UNITS: usize = 255;

impl NameRules {
    /// What a Linux filesystem takes: any name (the layout keeps it to 255 bytes and no `/`),
    /// compared byte for byte.
    pub const POSIX: NameRules = NameRules {
        case_insensitive: false,
        windows_chars: false,
        ascii_only: false,
    };

    /// Probe the filesystem of `dir` (an existing, writable folder) with files of temporary
    /// names `probe_name` gives (a fresh lowercase name per call), removing each again.
    pub fn probe(dir: &Path, probe_name: impl Fn(&str) -> String) -> io::Result<NameRules> {
        let lower = probe_name("case");
        let path = dir.join(&lower);
        File::create(&path)?;
        let upper = dir.join(lower.to_uppercase());
        let case_insensitive = fs::symlink_metadata(&upper).is_ok();
        let _ = fs::remove_file(&path);

        // Any refusal counts (vfat says EINVAL, FUSE drivers EPERM or ENOENT, SMB EINVAL or
        // EACCES): such a name is never tried for a book there.
        let refused = |tag: &str| {
            let path = dir.join(probe_name(tag));
            match File::create(&path) {
                Ok(_) => {
                    let _ = fs::remove_file(&path);
                    false
                }
                Err(_) => true,
            }
        };
        Ok(NameRules {
            case_insensitive,
            windows_chars: refused("colon:"),
            ascii_only: refused("\u{e9}\u{1f4da}"),
        })
    }

    /// True when names need fitting or comparing other than byte for byte.
    pub fn is_posix(&self) -> bool {
        *self == NameRules::POSIX
    }

    /// One file or folder name as this filesystem takes it: on a Windows-charset filesystem the
    /// refused characters become `_`, trailing dots and spaces go, and a name longer than 255
    /// UTF-16 units is cut (its extension kept); where only ASCII is taken, any other
    /// character becomes `_`. Unchanged on a Linux filesystem.
    pub fn fit(&self, component: &str) -> String {
        if !self.windows_chars && !self.ascii_only {
            return component.to_string();
        }
        let replaced: String = component
            .chars()
            .map(|c| match c {
                ':' | '*' | '?' | '"' | '<' | '>' | '|' | '\\' | '/' if self.windows_chars => '_',
                c if c.is_control() => '_',
                c if self.ascii_only && !c.is_ascii() => '_',
                c => c,
            })
            .collect();
        if !self.windows_chars {
            return replaced;
        }
        let mut out = cut_utf16(&replaced, MAX_UTF16_UNITS);
        let kept = out.trim_end_matches(['.', ' ']).len();
        out.truncate(kept);
        if out.is_empty() {
            out.push('_');
        }
        out
    }

    /// What the filesystem does unlike Linux's, for the log: e.g. "folds case, refuses
    /// `:*?"<>|`".
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if self.case_insensitive {
            what.push("folds case");
        }
        if self.windows_chars {
            what.push(r#"refuses `:*?"<>|` and trailing dots and spaces"#);
        }
        if self.ascii_only {
            what.push("takes only ASCII names");
        }
        what.join(", ")
    }

    /// What two names are compared by: equal keys are one file on this filesystem.
    pub fn key(&self, name: &str) -> String {
        if self.case_insensitive {
            name.to_lowercase()
        } else {
            name.to_string()
        }
    }
}

/// The names (by [`NameRules::key`]) that transfers of this run are placing right now.
#[derive(Debug, Default)]
pub struct Placing {
    /// Each held name, and whether another transfer waits for it (only then is a wake-up sent:
    /// one system call saved per file).
    names: Mutex<HashMap<String, bool>>,
    freed: Condvar,
}

/// A name held by one transfer until dropped.
pub struct Held<'a> {
    placing: &'a Placing,
    key: String,
}

impl Placing {
    /// Hold `key`, first waiting while another transfer holds it. Blocking: transfers run on
    /// blocking threads, and each holds one name at a time (no deadlock).
    pub fn hold(&self, key: String) -> Held<'_> {
        let mut names = self.lock();
        while let Some(waited) = names.get_mut(&key) {
            *waited = true;
            names = self.freed.wait(names).unwrap_or_else(|e| e.into_inner());
        }
        names.insert(key.clone(), false);
        Held { placing: self, key }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, bool>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let waited = self.placing.lock().remove(&self.key);
        if waited == Some(true) {
            self.placing.freed.notify_all();
        }
    }
}

/// `name` cut to at most `max` UTF-16 units on a character boundary, a short extension kept.
fn cut_utf16(name: &str, max: usize) -> String {
    let units = |s: &str| s.encode_utf16().count();
    if units(name) <= max {
        return name.to_string();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 12 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let room = max.saturating_sub(units(ext));
    let mut used = 0;
    let mut end = 0;
    for (i, c) in stem.char_indices() {
        if used + c.len_utf16() > room {
            break;
        }
        used += c.len_utf16();
        end = i + c.len_utf8();
    }
    format!("{}{ext}", stem[..end].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOWS: NameRules = NameRules {
        case_insensitive: true,
        windows_chars: true,
        ascii_only: false,
    };

    /// On a Linux filesystem nothing changes: every name the layout could make stays as it is.
    #[test]
    fn posix_rules_change_no_name() {
        for name in [
            "a:b?.epub",
            "Dune. ",
            "trail.",
            "é".repeat(120).as_str(),
            "x\u{1}y",
        ] {
            assert_eq!(NameRules::POSIX.fit(name), name);
            assert_eq!(NameRules::POSIX.key(name), name);
        }
    }

    #[test]
    fn windows_rules_replace_refused_characters_and_trailing_dots_and_spaces() {
        assert_eq!(
            WINDOWS.fit(r#"Why: a <b> "c" |d|*?\e.epub"#),
            "Why_ a _b_ _c_ _d____e.epub"
        );
        assert_eq!(WINDOWS.fit("The End. . "), "The End");
        assert_eq!(WINDOWS.fit("..."), "_");
        assert_eq!(WINDOWS.fit("ok.epub"), "ok.epub");
    }

    /// vfat and exFAT count 255 UTF-16 units: 4-byte characters are two units, `é` one.
    #[test]
    fn windows_names_are_cut_at_255_utf16_units_keeping_the_extension() {
        let long = format!("{}.epub", "😀".repeat(200));
        let fit = WINDOWS.fit(&long);
        assert!(fit.encode_utf16().count() <= 255, "{}", fit.len());
        assert!(fit.ends_with("😀.epub"));
        let ok = format!("{}.epub", "é".repeat(250));
        assert_eq!(WINDOWS.fit(&ok), ok, "250 units + 5 fit");
    }

    #[test]
    fn case_insensitive_keys_fold_case_beyond_ascii() {
        assert_eq!(WINDOWS.key("Dune.EPUB"), WINDOWS.key("dune.epub"));
        assert_eq!(WINDOWS.key("Élan"), WINDOWS.key("élan"));
        assert_ne!(NameRules::POSIX.key("Dune"), NameRules::POSIX.key("dune"));
    }

    #[test]
    fn ascii_only_rules_replace_every_other_character() {
        let ascii = NameRules {
            ascii_only: true,
            ..NameRules::POSIX
        };
        assert_eq!(ascii.fit("Élan: 📚.epub"), "_lan: _.epub");
        let both = NameRules {
            ascii_only: true,
            ..WINDOWS
        };
        assert_eq!(both.fit("Élan: 📚.epub"), "_lan_ _.epub");
    }

    /// A second transfer at a held name waits until the first lets it go.
    #[test]
    fn a_held_name_is_held_by_one_transfer_at_a_time() {
        let placing = std::sync::Arc::new(Placing::default());
        let first = placing.hold("dune.epub".into());
        let (tx, rx) = std::sync::mpsc::channel();
        let p = placing.clone();
        let t = std::thread::spawn(move || {
            let _held = p.hold("dune.epub".into());
            tx.send(()).unwrap();
        });
        // Another name is free meanwhile.
        drop(placing.hold("other.epub".into()));
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
        t.join().unwrap();
    }

    /// On the test machine's temp folder (a Linux filesystem): the probe finds POSIX rules and
    /// leaves nothing behind.
    #[test]
    fn a_linux_folder_probes_as_posix_and_keeps_no_probe() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::cell::Cell::new(0);
        let rules = NameRules::probe(dir.path(), |tag| {
            n.set(n.get() + 1);
            format!(".probe-{tag}-{}", n.get())
        })
        .unwrap();
        assert_eq!(rules, NameRules::POSIX);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
