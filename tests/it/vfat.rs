//! Folder targets on filesystems that are not Linux's: vfat and exFAT images made and mounted
//! by the test (where self-hosters keep libraries: USB disks, SD cards; SMB shares follow the
//! same rules). Names that differ only in case are one file there, and `:*?"<>|`, trailing dots
//! and spaces are refused. Every book must still land, in a file of its own, under the name its
//! row records.
//!
//! Mounting needs root (as in CI, which installs dosfstools and exfatprogs); elsewhere the tests
//! skip, saying so, unless `BOOKFERRY_REQUIRE_ROOT` is set. The kernel's own vfat and exfat are
//! used when it has them; otherwise the FUSE drivers (`fusefat`, `exfat-fuse`), which keep the
//! same name rules (and, for `fusefat`, take only ASCII names).

use crate::util::{blake3_file, have_root, tree_sha1, tree_snapshot, Workspace};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy)]
enum Fat {
    Vfat,
    Exfat,
}

/// A FAT image mounted on a folder for the length of a test; unmounted (and its loop device
/// freed) on drop, also when the test panics.
struct FatMount {
    dir: PathBuf,
    loop_dev: Option<String>,
}

impl FatMount {
    /// Make a 64 MiB `fs` image at `image` and mount it on `dir`. `None` (a skip) when not root.
    fn mount(fs: Fat, image: &Path, dir: &Path) -> Option<FatMount> {
        std::fs::create_dir_all(dir).unwrap();
        if !have_root(&format!("mounting a {fs:?} image on {}", dir.display())) {
            return None;
        }
        let f = std::fs::File::create(image).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let mkfs = match fs {
            Fat::Vfat => "mkfs.vfat",
            Fat::Exfat => "mkfs.exfat",
        };
        run(Command::new(mkfs).arg(image));
        // The kernel's driver first (it loads its module on demand); a kernel without it (a
        // container's) gets the FUSE driver.
        let kernel = match fs {
            Fat::Vfat => Command::new("mount")
                .args(["-t", "vfat", "-o", "loop,utf8"])
                .arg(image)
                .arg(dir)
                .output(),
            Fat::Exfat => Command::new("mount")
                .args(["-t", "exfat", "-o", "loop"])
                .arg(image)
                .arg(dir)
                .output(),
        };
        if kernel.is_ok_and(|o| o.status.success()) {
            return Some(FatMount {
                dir: dir.to_path_buf(),
                loop_dev: None,
            });
        }
        let mut mounted = FatMount {
            dir: dir.to_path_buf(),
            loop_dev: None,
        };
        match fs {
            Fat::Vfat => run(Command::new("fusefat")
                .args(["-o", "rw+"])
                .arg(image)
                .arg(dir)),
            Fat::Exfat => {
                // exfat-fuse wants a block device.
                let out = Command::new("losetup")
                    .args(["-f", "--show"])
                    .arg(image)
                    .output()
                    .expect("losetup runs");
                assert!(out.status.success(), "losetup: {out:?}");
                let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
                mounted.loop_dev = Some(dev.clone());
                run(Command::new("mount.exfat-fuse").arg(&dev).arg(dir));
            }
        }
        Some(mounted)
    }
}

impl Drop for FatMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? .ci/run installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A source library of `.txt` books (title and author from the name, so the default layout
/// makes `Author/Title/Title - Author.txt`), each with bytes of its own: titles that differ
/// only in case (`case_variants` of one, placed at once by the parallel transfers), titles
/// with `:?*"<>|`, ending in a dot, very long and not ASCII.
fn library(ws: &Workspace, case_variants: usize) -> usize {
    let mut names: Vec<String> = [
        "Dune - Frank Herbert.txt",
        "dune - frank herbert.txt",
        "DUNE - FRANK HERBERT.txt",
        "Élan - Ann.txt",
        "élan - ann.txt",
        r#"Why: a <b> "c" |d|*? - Xavier.txt"#,
        "Ends with a dot. - Yves.txt",
        "Ends with a dot... - Yves.txt",
        "Trailing space  - Zoe.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push(format!("{} - Автор.txt", "Книга".repeat(20)));
    names.push(format!("{} - Emoji.txt", "📚".repeat(50)));
    for i in 0..case_variants {
        let v: String = "abcdefghij"
            .chars()
            .enumerate()
            .map(|(j, c)| {
                if i >> j & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        names.push(format!("{v} - Someone.txt"));
    }
    for (i, name) in names.iter().enumerate() {
        std::fs::write(ws.lib().join(name), format!("book {i}: {name}")).unwrap();
    }
    names.len()
}

/// A row: source_ref, state, target_ref, blake3, error.
type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Every row `uploaded`; the target holds exactly one file per row, at the row's `target_ref`
/// (its names as the filesystem spells them), with the row's bytes.
fn assert_each_row_is_its_own_file(ws: &Workspace, rows: usize) {
    let db = ws.db();
    let mut st = db
        .prepare("SELECT source_ref, state, target_ref, blake3, error FROM files")
        .unwrap();
    let got: Vec<Row> = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), rows);
    let not_uploaded: Vec<_> = got.iter().filter(|r| r.1 != "uploaded").collect();
    assert!(not_uploaded.is_empty(), "not uploaded: {not_uploaded:#?}");
    let on_disk = tree_sha1(&ws.out());
    let mut wrong = Vec::new();
    for (source, _, target_ref, blake3, _) in &got {
        let at = target_ref
            .as_deref()
            .filter(|t| on_disk.contains_key(*t))
            .map(|t| blake3_file(&ws.out().join(t)));
        if at.is_none() || at.as_ref() != blake3.as_ref() {
            wrong.push((source, target_ref, at));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows whose target_ref is not a file of their bytes (name as on disk): {wrong:#?}",
        wrong.len()
    );
    assert_eq!(
        on_disk.len(),
        rows,
        "one file per row in the target: {:#?}",
        on_disk.keys().collect::<Vec<_>>()
    );
}

/// The whole check on one filesystem: a run places every book in a file of its own, and a
/// rerun places, changes and fails nothing.
fn every_book_lands_once(fs: Fat, case_variants: usize) {
    let ws = Workspace::empty();
    let Some(_mount) = FatMount::mount(fs, &ws.path().join("fat.img"), &ws.out()) else {
        return;
    };
    let rows = library(&ws, case_variants);
    let out = ws.migrate(&[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_each_row_is_its_own_file(&ws, rows);

    let before = tree_snapshot(&ws.out());
    let again = ws.migrate(&[]);
    let err = String::from_utf8_lossy(&again.stderr).into_owned();
    assert_eq!(again.status.code(), Some(0), "{err}");
    assert_eq!(ws.run_bytes().1, 0, "the rerun sent nothing: {err}");
    assert_eq!(
        tree_snapshot(&ws.out()),
        before,
        "the rerun changed the target"
    );
    assert_each_row_is_its_own_file(&ws, rows);
}

#[test]
fn vfat_books_differing_only_in_case_or_with_windows_characters_all_land_once() {
    // fusefat (where the kernel has no vfat) fails past ~90 long names sharing one 8.3 stem.
    every_book_lands_once(Fat::Vfat, 60);
}

#[test]
fn exfat_books_differing_only_in_case_or_with_windows_characters_all_land_once() {
    every_book_lands_once(Fat::Exfat, 200);
}

/// On a Linux filesystem the names stay exactly the layout's: three folders for the three
/// cases of `Dune`, no suffix anywhere.
#[test]
fn a_linux_target_keeps_the_layouts_names() {
    let ws = Workspace::empty();
    let rows = library(&ws, 200);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{:?}", out);
    assert_each_row_is_its_own_file(&ws, rows);
    let names: BTreeMap<String, String> = tree_sha1(&ws.out());
    for want in [
        "Frank Herbert/Dune/Dune - Frank Herbert.txt",
        "frank herbert/dune/dune - frank herbert.txt",
        "FRANK HERBERT/DUNE/DUNE - FRANK HERBERT.txt",
        "Someone/abcdefghij/abcdefghij - Someone.txt",
        "Someone/ABCdefGHij/ABCdefGHij - Someone.txt",
        "Xavier/Why_ a _b_ _c_ _d___/Why_ a _b_ _c_ _d___ - Xavier.txt",
        "Yves/Ends with a dot/Ends with a dot. - Yves.txt",
    ] {
        assert!(names.contains_key(want), "{want} missing: {names:#?}");
    }
    assert!(!names.keys().any(|n| n.contains(" (2)")), "{names:#?}");
}

/// The name check (a file of the same name and size in the target: skipped without hashing)
/// compares names as the filesystem does: on exFAT, `DUNE - FRANK HERBERT.TXT` there is the
/// source's `dune - frank herbert.txt`. A file of another size is not.
#[test]
fn exfat_the_name_check_finds_a_file_there_in_another_case() {
    let ws = Workspace::empty();
    let Some(_mount) = FatMount::mount(Fat::Exfat, &ws.path().join("fat.img"), &ws.out()) else {
        return;
    };
    std::fs::write(ws.lib().join("dune - frank herbert.txt"), "the same size").unwrap();
    std::fs::write(ws.lib().join("emma - jane austen.txt"), "another size").unwrap();
    std::fs::create_dir_all(ws.out().join("Old")).unwrap();
    std::fs::write(
        ws.out().join("Old/DUNE - FRANK HERBERT.TXT"),
        "THE SAME SIZE",
    )
    .unwrap();
    std::fs::write(
        ws.out().join("Old/EMMA - JANE AUSTEN.TXT"),
        "not the same size",
    )
    .unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reason = |source: &str| -> (String, Option<String>) {
        ws.db()
            .query_row(
                "SELECT state, skip_reason FROM files WHERE source_ref = ?1",
                [source],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(
        reason("dune - frank herbert.txt"),
        ("skipped".into(), Some("target_has_name_size".into()))
    );
    assert_eq!(reason("emma - jane austen.txt"), ("uploaded".into(), None));
}
