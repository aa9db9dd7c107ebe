//! What a user sees on a terminal, through a real pseudo-terminal (`script`): the progress bars
//! never count above their totals and the run's own lines never tear them.

use crate::util::*;
use std::process::Command;

/// The text a terminal would show, escapes dropped.
fn without_escapes(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Every `N/M files` a bar showed.
fn counts(text: &str) -> Vec<(u64, u64)> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices(" files") {
        let head = &text[..i];
        let start = head
            .rfind(|c: char| !(c.is_ascii_digit() || c == '/'))
            .map_or(0, |p| p + 1);
        if let Some((n, m)) = head[start..].split_once('/') {
            if let (Ok(n), Ok(m)) = (n.parse(), m.parse()) {
                found.push((n, m));
            }
        }
    }
    found
}

/// Before, the check bar added the content check's skips to the rows it had checked: a library
/// with duplicates ended at `42/40` (the issue saw `5252/5000`).
#[test]
fn progress_bars_never_count_above_their_totals() {
    let ws = Workspace::with_corpus(40, 242);
    assert!(
        ws.unique_sha1s().len() < ws.manifest.len(),
        "the corpus has duplicates"
    );
    let cmd = format!(
        "{} --state {} run --from {} --to {}",
        bin().display(),
        ws.state().display(),
        ws.lib().display(),
        ws.out().display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("COLUMNS", "100")
        .current_dir(ws.path())
        .output()
        .expect("script (util-linux) runs");
    let text = without_escapes(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{text}");
    let seen = counts(&text);
    assert!(!seen.is_empty(), "no bar was drawn:\n{text}");
    for (n, m) in &seen {
        assert!(n <= m, "a bar showed {n}/{m}:\n{text}");
    }
    assert!(text.contains(" copied ("), "{text}");
}
