//! The forms `--from` and `--to` accept: exactly those documented, prefixes case-insensitive;
//! any other `scheme://` or `name:` is a usage error that creates nothing.

use crate::util::*;

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn unknown_schemes_and_remote_names_are_refused_and_create_nothing() {
    let ws = Workspace::with_corpus(3, 211);
    let before = listing(ws.path());
    for (from, to, says) in [
        ("lib", "ftp://x/y", "`ftp://` is not a form"),
        ("lib", "nas:books", "dir:nas:books"),
        ("lib", "s3://bucket/books", "calibre:PATH"),
        ("nas:lib", "out", "looks like a remote name"),
        ("http://127.0.0.1:9/lib", "out", "not a URL"),
    ] {
        let out = ws.run(&["run", "--from", from, "--to", to]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "--from {from} --to {to}: {err}");
        assert!(err.contains(says), "--from {from} --to {to}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert_eq!(
            listing(ws.path()),
            before,
            "--from {from} --to {to} created something"
        );
    }
}

#[test]
fn prefixes_are_case_insensitive_and_dir_takes_a_name_with_a_colon() {
    // A calibre target: calibre's writer lock is one per machine (see calibre_target::serial).
    let _serial = crate::calibre_target::serial();
    let ws = Workspace::with_corpus(3, 212);
    let out = ws.run(&["run", "--from", "DIR:lib", "--to", "Dir:nas:books"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(tree_sha1(&ws.path().join("nas:books")).len(), 3);

    let ws = Workspace::with_corpus(3, 213);
    let out = ws.run(&["run", "--from", "lib", "--to", "Calibre:books"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ws.path().join("books/metadata.db").is_file());
}

/// Before, hints said `bookferry run`, which fails where the binary is not on the PATH, or
/// without the `--state` that was given ("no migration recorded").
#[test]
fn the_command_a_hint_gives_can_be_pasted_as_it_is() {
    let ws = Workspace::with_corpus(4, 214);
    let scan = ws
        .cmd_with_state(
            std::path::Path::new("my state.db"),
            &["scan", "--from", "lib"],
        )
        .output()
        .unwrap();
    assert_eq!(scan.status.code(), Some(0), "{}", stderr(&scan));
    let status = ws
        .cmd_with_state(std::path::Path::new("my state.db"), &["status", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let hint = json["continue"]
        .as_str()
        .expect("a command to continue")
        .to_string();
    assert!(
        hint.starts_with(&format!("{} --state 'my state.db' run", bin().display())),
        "{hint}"
    );
    let pasted = hint.replace("TARGET", "out");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&pasted)
        .current_dir(ws.path())
        .env("PATH", "/usr/bin:/bin")
        .env_remove("BOOKFERRY_STATE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{pasted}: {}", stderr(&out));
    assert_eq!(tree_sha1(&ws.out()).len(), 4);
}

/// A run starts with one line saying what goes where and how, and its summary names what it
/// did as a user says it: copied or linked into a folder, added to a calibre library.
#[test]
fn a_run_says_where_it_goes_and_what_it_did_in_the_targets_words() {
    // A calibre target: calibre's writer lock is one per machine (see calibre_target::serial).
    let _serial = crate::calibre_target::serial();
    let ws = Workspace::with_corpus(3, 215);
    let out = ws.migrate(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let first = err.lines().next().unwrap_or("");
    let (lib, to) = (ws.lib(), ws.out());
    assert!(
        first.contains(&format!(
            "dir:{} → dir:{} (copy, layout {{author}}",
            lib.display(),
            to.display()
        )),
        "{err}"
    );
    assert!(err.contains(": 3 copied ("), "{err}");
    assert!(!err.contains("uploaded"), "{err}");

    let ws = Workspace::with_corpus(3, 216);
    let out = ws.migrate(&["--link", "symlink", "--dry-run"]);
    let err = stderr(&out);
    assert!(
        err.lines()
            .next()
            .unwrap_or("")
            .starts_with(" INFO dry run: dir:"),
        "{err}"
    );
    assert!(err.contains("would link 3 file(s)"), "{err}");
}

/// A dry run checks at pre-flight what the real run checks: before, a dry run into a folder
/// that holds files but is no calibre library said it would add every file (exit 0), and the
/// real run refused.
#[test]
fn a_dry_run_refuses_what_the_real_run_refuses() {
    // A calibre target: calibre's writer lock is one per machine (see calibre_target::serial).
    let _serial = crate::calibre_target::serial();
    let ws = Workspace::with_corpus(3, 217);
    let not_a_library = ws.path().join("papers");
    std::fs::create_dir_all(&not_a_library).unwrap();
    std::fs::write(not_a_library.join("tax.pdf"), b"mine").unwrap();
    let to = format!("calibre:{}", not_a_library.display());
    let lib = ws.lib();
    let real = ws.run(&["run", "--from", lib.to_str().unwrap(), "--to", &to]);
    assert_eq!(real.status.code(), Some(2), "{}", stderr(&real));
    let other_state = ws.path().join("dry.db");
    let dry = ws
        .cmd_with_state(
            &other_state,
            &[
                "run",
                "--dry-run",
                "--from",
                lib.to_str().unwrap(),
                "--to",
                &to,
            ],
        )
        .output()
        .unwrap();
    assert_eq!(dry.status.code(), Some(2), "{}", stderr(&dry));
    assert!(stderr(&dry).contains("tax.pdf"), "{}", stderr(&dry));
    assert_eq!(
        std::fs::read_dir(&not_a_library).unwrap().count(),
        1,
        "the folder was touched"
    );
}

/// A state DB is bound to its target only once something was written there. Before, a first
/// run refused at pre-flight (a typo in `--to`) bound it, and the corrected command was
/// refused as another migration; a dry run to one target kept another from being used.
#[test]
fn a_target_that_received_nothing_can_be_corrected() {
    // A calibre target: calibre's writer lock is one per machine (see calibre_target::serial).
    let _serial = crate::calibre_target::serial();
    let ws = Workspace::with_corpus(8, 218);
    let papers = ws.path().join("papers");
    std::fs::create_dir_all(&papers).unwrap();
    std::fs::write(papers.join("tax.pdf"), b"mine").unwrap();
    let lib = ws.lib();
    let typo = ws.run(&[
        "run",
        "--from",
        lib.to_str().unwrap(),
        "--to",
        &format!("calibre:{}", papers.display()),
    ]);
    assert_eq!(typo.status.code(), Some(2), "{}", stderr(&typo));

    // A dry run to a third place, then the real target: every file is sent there.
    let dry = ws.path().join("elsewhere");
    let o = ws.run(&["run", "--dry-run", "--to", dry.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let judged = ws.count("SELECT COUNT(*) FROM files WHERE state <> 'pending'");
    assert!(judged > 0);
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was written to"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree_sha1(&ws.out()).len(), ws.unique_sha1s().len());
    assert!(!dry.exists() && std::fs::read_dir(&papers).unwrap().count() == 1);
    assert_event_histories_valid(&ws);

    // Now bound: another target is refused.
    let again = ws.run(&["run", "--to", dry.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
}

/// A folder dry run finds what the real run's probes would: here `--link hardlink` into a
/// folder on another filesystem (/dev/shm). Before, the dry run said it would link every file.
#[test]
fn a_folder_dry_run_refuses_links_across_filesystems() {
    let ws = Workspace::with_corpus(3, 219);
    let shm = tempfile::Builder::new()
        .prefix("bookferry-it-shm-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let to = shm.path().join("out");
    let lib = ws.lib();
    for dry in [true, false] {
        let mut args = vec![
            "run",
            "--from",
            lib.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ];
        args.extend(["--link", "hardlink"]);
        if dry {
            args.push("--dry-run");
        }
        let state = ws.path().join(format!("dry-{dry}.db"));
        let out = ws.cmd_with_state(&state, &args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "dry {dry}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("filesystem"),
            "dry {dry}: {}",
            stderr(&out)
        );
    }
    assert!(!to.join("lib").exists());
}
