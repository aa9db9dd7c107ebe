//! calibre → calibre carries what the user made beyond the books' own fields, judged by calibre
//! itself on a source library calibre made:
//!
//! - custom columns of every datatype (text, text with several values, comments, series,
//!   enumeration, int, float, bool, datetime, rating, and a composite): `calibredb
//!   custom_columns -d` and each book's `*label` values in `calibredb list` are the source's;
//! - annotations (a highlight and a bookmark) read by calibre's own API, and found by its
//!   full-text annotation search;
//! - a book's `data/` files, byte for byte;
//! - the library's settings (a saved search) in a library the run created;
//! - a target whose column of a label is another column (another type, other enumeration
//!   values): none of its values is written, and the run warns once per such column.
//!
//! Every test holds the calibre test lock (calibre's writer lock is machine-wide).

use crate::calibre_target::{calibredb, check_library_problems, have_calibre, serial, to_calibre};
use crate::util::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A source library made by calibre's own API (what `calibredb add_custom_column`, `add`,
/// `set_custom` and `saved_searches add` run, in one process): a column of every datatype
/// calibre has, three books (ids 1–3) with values, two annotations (a highlight and a bookmark)
/// on Book One, a saved search. Its first column is deleted: the others' numbers start at 2.
const SOURCE_SCRIPT: &str = r#"
from calibre.db.cli import cmd_set_custom
from calibre.ebooks.metadata.book.base import Metadata
import os
columns = [
    ('mygone', 'Gone', 'int', False, {}),
    ('mytext', 'My Text', 'text', False, {}),
    ('mytags', 'My Tags', 'text', True, {}),
    ('mycomm', 'Comm', 'comments', False, {}),
    ('myseries', 'Ser', 'series', False, {}),
    ('myenum', 'Enum', 'enumeration', False, {'enum_values': ['a', 'b', 'c']}),
    ('myint', 'Int', 'int', False, {}),
    ('myfloat', 'Float', 'float', False, {}),
    ('mybool', 'Bool', 'bool', False, {}),
    ('mydate', 'Date', 'datetime', False, {}),
    ('myrating', 'Rating', 'rating', False, {}),
    ('mycomp', 'Comp', 'composite', False, {'composite_template': '{title} by {authors}'}),
]
d = db(LIB)
for label, name, datatype, multiple, display in columns:
    d.create_custom_column(label, name, datatype, multiple, display=display)
d.close()
d = db(LIB)
d.delete_custom_column(label='mygone')
d.close()
d = db(LIB)
d.new_api.set_pref('field_metadata', d.field_metadata.all_metadata())
api = d.new_api
books = [('Book One', 'Ann Author'), ('Book Two', 'Bob Writer'), ('Book Three', 'Cy Third')]
for title, author in books:
    path = os.path.join(os.path.dirname(LIB), title + '.txt')
    with open(path, 'w') as f:
        f.write('the text of ' + title + '\n')
    api.add_books([(Metadata(title, [author]), {'TXT': path})])
values = [
    (1, 'mytext', 'Hello, world'), (1, 'mytags', 'x,y,z'), (2, 'mytags', 'y,w'),
    (1, 'mycomm', '<p>Long comment</p>'), (1, 'myseries', 'Saga [2.5]'), (2, 'myseries', 'Saga'),
    (1, 'myenum', 'b'), (2, 'myenum', 'c'), (1, 'myint', '42'), (3, 'myint', '-7'),
    (1, 'myfloat', '3.25'), (1, 'mybool', 'true'), (2, 'mybool', 'false'),
    (1, 'mydate', '2001-02-03T04:05:06+00:00'), (1, 'myrating', '8'), (2, 'myrating', '3'),
]
for book, label, value in values:
    ok = cmd_set_custom.implementation(api, None, label, book, value, False)
    assert ok[0], ok
api.saved_search_add('mysearch', '#myint:>10')
api.merge_annotations_for_book(1, 'TXT', [
  {'type': 'highlight', 'uuid': 'h-1', 'highlighted_text': 'hello book', 'notes': 'a note',
   'timestamp': '2021-05-06T07:08:09.000Z', 'start_cfi': '/2/4', 'end_cfi': '/2/6',
   'spine_index': 0, 'spine_name': 'index.html',
   'style': {'kind': 'color', 'type': 'builtin', 'which': 'yellow'}},
  {'type': 'bookmark', 'title': 'Mark one', 'pos': 'epubcfi(/2/4)', 'pos_type': 'epubcfi',
   'timestamp': '2021-05-06T07:08:10.000Z'},
], user_type='local', user='viewer')
d.close()
"#;

/// How many custom columns [`SOURCE_SCRIPT`] leaves (one per datatype, text twice).
const COLUMNS: usize = 11;

fn calibre_config(ws: &Workspace) -> PathBuf {
    ws.path().join("calibre-config")
}

/// Run `script` (Python, `LIB` bound to the library's path) with calibre's own API.
fn calibre_python(ws: &Workspace, lib: &Path, script: &str) -> String {
    let code = format!(
        "import json\nfrom calibre.library import db\nLIB = {}\n{script}",
        serde_json::to_string(lib.to_str().unwrap()).unwrap()
    );
    let out = Command::new("calibre-debug")
        .arg("-c")
        .arg(format!(
            "exec({}, {{}})",
            serde_json::to_string(&code).unwrap()
        ))
        .env("CALIBRE_CONFIG_DIRECTORY", calibre_config(ws))
        .output()
        .expect("calibre-debug runs");
    assert!(
        out.status.success(),
        "calibre-debug failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The source library of [`SOURCE_SCRIPT`], with `data/` files in Book One's folder.
pub(crate) fn source_library(ws: &Workspace) -> PathBuf {
    let lib = ws.path().join("source-lib");
    fs::create_dir_all(&lib).unwrap();
    calibre_python(ws, &lib, SOURCE_SCRIPT);
    let data = book_dir(&lib, "Book One").join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("notes.txt"), b"extra notes\n").unwrap();
    fs::write(data.join("sub").join("scan.bin"), [0u8, 1, 2, 255]).unwrap();
    lib
}

/// The folder of the book titled `title` (calibre's `Author/Title (id)`).
fn book_dir(lib: &Path, title: &str) -> PathBuf {
    for author in fs::read_dir(lib).unwrap() {
        let author = author.unwrap().path();
        if !author.is_dir() {
            continue;
        }
        for book in fs::read_dir(&author).unwrap() {
            let book = book.unwrap().path();
            let name = book.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(&format!("{title} (")) {
                return book;
            }
        }
    }
    panic!("{}: no folder for {title:?}", lib.display());
}

/// Each book's custom column values (`*label` fields), by title.
pub(crate) fn custom_values(
    ws: &Workspace,
    lib: &Path,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    let raw = calibredb(ws, lib, &["list", "--for-machine", "--fields", "all"]);
    let books: Vec<Value> = serde_json::from_str(&raw).expect("calibredb list prints JSON");
    books
        .iter()
        .map(|b| {
            let values = b
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with('*'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (b["title"].as_str().unwrap().to_string(), values)
        })
        .collect()
}

/// Each book's annotations as calibre's API gives them, by title; and the titles of the books
/// calibre's annotation search finds for "hello".
fn annotations(ws: &Workspace, lib: &Path) -> String {
    calibre_python(
        ws,
        lib,
        r#"
d = db(LIB).new_api
out = {}
for bid in sorted(d.all_book_ids()):
    out[d.field_for('title', bid)] = sorted(json.dumps(a, sort_keys=True)
                                           for a in d.all_annotations_for_book(bid))
found = sorted(d.field_for('title', r['book_id']) for r in d.search_annotations('hello'))
print(json.dumps({'annotations': out, 'search hello': found}, sort_keys=True, indent=1))
"#,
    )
}

/// What `check_library` finds in `lib`, but for the `data/` folders calibre 6 does not know
/// yet (calibre 7 made them its "data files"; calibre 6.13 lists them as unknown files, in the
/// source library as well).
fn assert_check_library_clean(ws: &Workspace, lib: &Path, when: &str) {
    let problems: Vec<String> = check_library_problems(ws, lib)
        .into_iter()
        .filter(|l| !l.trim_end().ends_with("/data"))
        .collect();
    assert!(problems.is_empty(), "check_library {when}: {problems:#?}");
}

/// Every file under `dir`, relative path → bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The source library migrated into a new one: (source, target).
fn migrated_into_a_new_library(ws: &Workspace) -> (PathBuf, PathBuf) {
    let src = source_library(ws);
    let dst = ws.path().join("new-lib");
    let out = to_calibre(ws, &ws.state(), &src, &dst, &[]);
    assert!(
        out.status.success(),
        "the run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (src, dst)
}

#[test]
fn custom_columns_of_every_type_come_into_a_new_library_with_every_value() {
    if !have_calibre("custom_columns_of_every_type_come_into_a_new_library_with_every_value") {
        return;
    }
    let _serial = serial();
    let ws = Workspace::empty();
    let (src, dst) = migrated_into_a_new_library(&ws);
    let defs = calibredb(&ws, &src, &["custom_columns", "-d"]);
    assert!(
        defs.contains("'num': 2}") && !defs.contains("'num': 1}"),
        "the source's columns start at 2: {defs}"
    );
    assert_eq!(
        calibredb(&ws, &dst, &["custom_columns", "-d"]),
        defs,
        "the target's custom column definitions are the source's, numbers too"
    );
    let want = custom_values(&ws, &src);
    assert_eq!(want.len(), 3);
    assert!(
        want["Book One"].len() >= COLUMNS,
        "the source has a value in every column: {want:#?}"
    );
    assert_eq!(
        custom_values(&ws, &dst),
        want,
        "every book's custom column values"
    );
    assert_check_library_clean(&ws, &dst, "after the migration");
    // The whole listing, custom columns (`*label`) and ids included, once the paths of
    // `formats` and `cover` are made relative: the new library is the source library.
    let listed = crate::calibre_fidelity::listing(&ws, &src);
    assert!(
        listed
            .values()
            .all(|b| b.as_object().unwrap().keys().any(|k| k.starts_with('*'))),
        "calibredb list --fields all shows the custom columns: {listed:#?}"
    );
    assert_eq!(
        crate::calibre_fidelity::listing(&ws, &dst),
        listed,
        "calibredb list --fields all --for-machine of the source and of the new library"
    );

    // A second migration (a new state DB) into that library: its columns are the source's,
    // nothing is created, warned or written twice.
    let annots = annotations(&ws, &dst);
    let out = to_calibre(&ws, &ws.path().join("second.db"), &src, &dst, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the second run failed: {stderr}");
    assert!(!stderr.contains("custom column"), "{stderr}");
    assert_eq!(calibredb(&ws, &dst, &["custom_columns", "-d"]), defs);
    assert_eq!(custom_values(&ws, &dst), want, "after a second migration");
    assert_eq!(annotations(&ws, &dst), annots, "after a second migration");
}

#[test]
fn annotations_come_along_and_calibre_reads_and_searches_them() {
    if !have_calibre("annotations_come_along_and_calibre_reads_and_searches_them") {
        return;
    }
    let _serial = serial();
    let ws = Workspace::empty();
    let (src, dst) = migrated_into_a_new_library(&ws);
    let annots = annotations(&ws, &src);
    assert!(
        annots.contains("Mark one") && annots.contains("h-1") && annots.contains("\"Book One\""),
        "{annots}"
    );
    assert_eq!(
        annotations(&ws, &dst),
        annots,
        "the annotations, as calibre reads them"
    );
}

#[test]
fn a_books_data_files_come_into_its_new_folder() {
    if !have_calibre("a_books_data_files_come_into_its_new_folder") {
        return;
    }
    let _serial = serial();
    let ws = Workspace::empty();
    let (src, dst) = migrated_into_a_new_library(&ws);
    let data = files_under(&book_dir(&src, "Book One").join("data"));
    assert_eq!(data.len(), 2);
    assert_eq!(
        files_under(&book_dir(&dst, "Book One").join("data")),
        data,
        "Book One's data/ files"
    );
    assert!(!book_dir(&dst, "Book Two").join("data").exists());
    assert_check_library_clean(&ws, &dst, "after the migration");
}

#[test]
fn a_new_library_gets_the_source_librarys_settings() {
    if !have_calibre("a_new_library_gets_the_source_librarys_settings") {
        return;
    }
    let _serial = serial();
    let ws = Workspace::empty();
    let (src, dst) = migrated_into_a_new_library(&ws);
    let searches = calibredb(&ws, &src, &["saved_searches", "list"]);
    assert!(searches.contains("mysearch"), "{searches}");
    assert_eq!(
        calibredb(&ws, &dst, &["saved_searches", "list"]),
        searches,
        "the new library has the source's saved search"
    );
}

#[test]
fn a_target_column_of_the_same_label_that_differs_gets_no_values_and_one_warning() {
    if !have_calibre(
        "a_target_column_of_the_same_label_that_differs_gets_no_values_and_one_warning",
    ) {
        return;
    }
    let _serial = serial();
    let ws = Workspace::empty();
    let src = source_library(&ws);
    let dst = ws.path().join("their-lib");
    fs::create_dir_all(&dst).unwrap();
    // Another type under `mytext`, other enumeration values under `myenum`; `myint` the same.
    calibredb(&ws, &dst, &["add_custom_column", "mytext", "Theirs", "int"]);
    calibredb(
        &ws,
        &dst,
        &[
            "add_custom_column",
            "myenum",
            "Their enum",
            "enumeration",
            "--display",
            r#"{"enum_values": ["b", "x"]}"#,
        ],
    );
    calibredb(&ws, &dst, &["add_custom_column", "myint", "Int", "int"]);
    let before = calibredb(&ws, &dst, &["saved_searches", "list"]);

    let out = to_calibre(&ws, &ws.state(), &src, &dst, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the run failed: {stderr}");
    for label in ["#mytext", "#myenum"] {
        let warnings = stderr
            .lines()
            .filter(|l| l.contains(&format!("custom column {label} ")))
            .count();
        assert_eq!(warnings, 1, "one warning for {label}:\n{stderr}");
    }
    assert!(
        !stderr.contains("custom column #myint "),
        "no warning for a column that is the same: {stderr}"
    );

    let got = custom_values(&ws, &dst);
    let want = custom_values(&ws, &src);
    assert_eq!(got.len(), 3, "{got:#?}");
    let value = |book: &BTreeMap<String, Value>, key: &str| book.get(key).cloned();
    for (title, values) in &got {
        assert_eq!(value(values, "*mytext"), None, "{title}: no #mytext value");
        assert_eq!(value(values, "*myenum"), None, "{title}: no #myenum value");
        for same in ["*myint", "*mytags"] {
            assert_eq!(
                value(values, same),
                value(&want[title], same),
                "{title}: {same}"
            );
        }
    }
    assert_eq!(
        calibredb(&ws, &dst, &["saved_searches", "list"]),
        before,
        "an existing library's settings are its own"
    );
    assert_check_library_clean(&ws, &dst, "after the migration");
}
