//! `--layout` through the real binary: fallbacks, number formats and optional parts, and the
//! presets for the servers people use, on a calibre source whose books have and lack a series.

use crate::util::*;
use std::collections::BTreeSet;

fn calibre_workspace() -> Workspace {
    let ws = Workspace::empty();
    std::fs::remove_dir_all(ws.lib()).unwrap();
    copy_tree(&repo().join("tests/data/calibre-library"), &ws.lib());
    ws
}

fn placed(ws: &Workspace) -> BTreeSet<String> {
    tree_sha1(&ws.out()).into_keys().collect()
}

#[test]
fn a_fallback_and_an_optional_part_keep_books_without_a_series_out_of_the_root() {
    let ws = calibre_workspace();
    let out = ws.migrate(&[
        "--layout",
        "{series|Standalone}/{?{series_index:02} - }{title}.{ext}",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let placed = placed(&ws);
    assert!(
        placed
            .iter()
            .any(|p| p.starts_with("Garden Cycle/07 - Empire Silence Paper 3.")),
        "{placed:?}"
    );
    assert!(
        placed.iter().any(|p| p.starts_with("Standalone/Tide 11.")),
        "{placed:?}"
    );
    assert!(
        placed.iter().all(|p| p.contains('/')),
        "a book at the root: {placed:?}"
    );
    assert!(!placed.iter().any(|p| p.contains("/- ")), "{placed:?}");
}

#[test]
fn a_preset_places_books_as_its_server_asks_and_records_its_template() {
    let ws = calibre_workspace();
    let out = ws.migrate(&["--layout", "komga"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let placed = placed(&ws);
    assert!(
        placed
            .iter()
            .any(|p| p.starts_with("Garden Cycle/07 - Empire Silence Paper 3.")),
        "{placed:?}"
    );
    assert!(
        placed.iter().any(|p| p.starts_with("Tide 11/Tide 11.")),
        "{placed:?}"
    );
    let recorded: String = ws
        .db()
        .query_row("SELECT options FROM migration", [], |r| r.get(0))
        .unwrap();
    assert!(recorded.contains("{series|{title}}"), "{recorded}");

    // Naming the same preset again is no change of layout.
    let again = ws.migrate(&["--layout", "komga"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert!(
        !stderr(&again).contains("--layout changed"),
        "{}",
        stderr(&again)
    );

    let bad = ws.migrate(&["--layout", "plex"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("kavita, komga, audiobookshelf"),
        "{}",
        stderr(&bad)
    );
}
