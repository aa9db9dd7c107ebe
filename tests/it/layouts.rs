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

/// Migrates the library with `--layout layout`; the placed paths, after checking that the book
/// in a series and the one without are where `in_series` and `alone` say (each a path up to its
/// extension).
fn migrate_with(ws: &Workspace, layout: &str, in_series: &str, alone: &str) -> BTreeSet<String> {
    let out = ws.migrate(&["--layout", layout]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let placed: BTreeSet<String> = tree_sha1(&ws.out()).into_keys().collect();
    for want in [in_series, alone] {
        let prefix = format!("{want}.");
        assert!(
            placed.iter().any(|p| p.starts_with(&prefix)),
            "{want}: {placed:?}"
        );
    }
    placed
}

#[test]
fn a_fallback_and_an_optional_part_keep_books_without_a_series_out_of_the_root() {
    let ws = calibre_workspace();
    let placed = migrate_with(
        &ws,
        "{series|Standalone}/{?{series_index:02} - }{title}.{ext}",
        "Garden Cycle/07 - Empire Silence Paper 3",
        "Standalone/Tide 11",
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
    migrate_with(
        &ws,
        "komga",
        "Garden Cycle/07 - Empire Silence Paper 3",
        "Tide 11/Tide 11",
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

/// Each preset through the binary, on books with and without a series.
#[test]
fn every_preset_places_the_series_book_and_the_standalone_one() {
    for (preset, in_series, alone) in [
        (
            "kavita",
            "Garden Cycle/Garden Cycle Vol. 07 - Empire Silence Paper 3",
            "Tide 11/Tide 11",
        ),
        (
            "komga",
            "Garden Cycle/07 - Empire Silence Paper 3",
            "Tide 11/Tide 11",
        ),
    ] {
        let ws = calibre_workspace();
        migrate_with(&ws, preset, in_series, alone);
    }
    let ws = calibre_workspace();
    migrate_with(
        &ws,
        "audiobookshelf",
        "Tomás Murakami/Garden Cycle/Vol 7 - Empire Silence Paper 3/Empire Silence Paper 3",
        "Haruki Segura/Tide 11/Tide 11",
    );
}
