//! `bookferry report --format html`, loaded in a real headless Chromium: after the page's
//! script ran, the rendered DOM shows the numbers of a known migration, the browser logged no
//! console message, and hostile file names stay text (no script of theirs runs).
//!
//! Needs `/usr/bin/chromium` (or `$BOOKFERRY_CHROMIUM`); without it the tests say SKIPPED,
//! unless `BOOKFERRY_REQUIRE_CHROMIUM` is set (CI), where a missing browser is a failure.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("BOOKFERRY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("BOOKFERRY_REQUIRE_CHROMIUM").is_none(),
        "{} is missing but BOOKFERRY_REQUIRE_CHROMIUM is set",
        path.display()
    );
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("SKIPPED: {test}: no headless browser at {}", path.display());
    None
}

/// What the browser made of a page: the DOM after its scripts ran, and the console lines it
/// logged (the page logs none: any is an error or a warning).
struct Rendered {
    dom: String,
    console: Vec<String>,
}

/// Loads `page` (with `#fragment`, when not empty) in headless Chromium with a fresh profile,
/// no network and no sandbox (the tests run as root), and dumps the DOM once it has loaded.
fn render(browser: &Path, page: &Path, fragment: &str) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("dom.html"), dir.path().join("stderr"));
    let url = format!("file://{}{fragment}", page.display());
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("chromium starts");
    // Generous: a page that never finishes loading is a failure, not a hung test.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("chromium did not finish loading {url} in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    Rendered {
        dom: std::fs::read_to_string(&out).unwrap(),
        console: stderr
            .lines()
            .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
            // Chromium's own pages log too (under load: "Slow network is detected", from
            // chrome://resources/…): not the report's.
            .filter(|l| !l.contains("source: chrome://"))
            .map(str::to_string)
            .collect(),
    }
}

impl Rendered {
    /// The page drew itself: its script ran to the end, no error on the way, nothing logged.
    fn assert_clean(&self) {
        assert!(
            self.console.is_empty(),
            "console messages: {:#?}",
            self.console
        );
        assert!(
            self.dom.contains("data-rendered=\"yes\""),
            "the page's script did not finish: {}",
            self.dom
        );
        assert!(!self.dom.contains("data-error="), "{}", self.dom);
    }

    /// The text of the element whose start tag holds `attr` (e.g. `data-count="failed"`).
    fn text_of(&self, attr: &str) -> &str {
        let at = self
            .dom
            .find(attr)
            .unwrap_or_else(|| panic!("no element with {attr} in {}", self.dom));
        let start = at + self.dom[at..].find('>').unwrap() + 1;
        let end = start + self.dom[start..].find('<').unwrap();
        &self.dom[start..end]
    }

    /// The value of attribute `name` on the element whose start tag holds `attr`.
    fn attr_of(&self, attr: &str, name: &str) -> &str {
        let at = self
            .dom
            .find(attr)
            .unwrap_or_else(|| panic!("no element with {attr} in {}", self.dom));
        let tag_start = self.dom[..at].rfind('<').unwrap();
        let tag = &self.dom[tag_start..at + self.dom[at..].find('>').unwrap()];
        let key = format!(" {name}=\"");
        let v = tag
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in {tag}"))
            + key.len();
        &tag[v..v + tag[v..].find('"').unwrap()]
    }

    /// The markup of the element `<table data-list="NAME" …>…</table>`.
    fn table(&self, name: &str) -> &str {
        let at = self
            .dom
            .find(&format!("data-list=\"{name}\""))
            .unwrap_or_else(|| panic!("no {name} table in {}", self.dom));
        let start = self.dom[..at].rfind('<').unwrap();
        &self.dom[start..start + self.dom[start..].find("</table>").unwrap()]
    }
}

/// Two runs over a library with one file of each outcome (as tests/it/report.rs): run 1
/// migrates `good.txt` and `broken.epub` (with warnings: not a ZIP) and fails `empty.epub`;
/// run 2 skips `copy.txt` (a duplicate of good.txt) and `there.txt` (the target has a file of
/// its name and size, put there by hand).
fn migrated() -> Workspace {
    let ws = Workspace::empty();
    let lib = ws.lib();
    std::fs::write(lib.join("good.txt"), "the same bytes\n").unwrap();
    std::fs::write(lib.join("empty.epub"), "").unwrap();
    std::fs::write(lib.join("broken.epub"), "not a zip\n").unwrap();
    let layout = ["--layout", "{source_path}.{ext}"];
    let first = ws.migrate(&layout);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    std::fs::write(lib.join("copy.txt"), "the same bytes\n").unwrap();
    std::fs::write(lib.join("there.txt"), "twelve bytes").unwrap();
    std::fs::create_dir_all(ws.out()).unwrap();
    std::fs::write(ws.out().join("there.txt"), "12 bytes, eh").unwrap();
    let second = ws.migrate(&layout);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    ws
}

fn write_page(ws: &Workspace) -> PathBuf {
    let page = ws.path().join("report.html");
    let o = ws.run(&[
        "report",
        "--format",
        "html",
        "--output",
        page.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    page
}

#[test]
fn html_report_shows_the_migrations_numbers_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let ws = migrated();
    let page = write_page(&ws);
    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["http://", "https://", "src=\"//"] {
        // The SVG namespace is a name, not a fetch.
        let fetches = html
            .matches(external)
            .count()
            .saturating_sub(html.matches("http://www.w3.org/2000/svg").count());
        assert_eq!(fetches, 0, "{external} in the page");
    }

    let r = render(&browser, &page, "");
    r.assert_clean();
    let lib = ws.lib().display().to_string();
    assert_eq!(r.text_of("id=\"migration-source\""), format!("dir:{lib}"));
    for (what, n) in [
        ("total", 5),
        ("uploaded", 2),
        ("skipped", 2),
        ("failed", 1),
        ("duplicates", 1),
        ("warnings", 1),
    ] {
        assert_eq!(
            r.text_of(&format!("data-count=\"{what}\"")),
            n.to_string(),
            "{what}"
        );
    }
    // The charts: a bar per failure kind and per skip reason, with its count.
    assert_eq!(r.attr_of("data-bar=\"empty_file\"", "data-n"), "1");
    assert_eq!(r.attr_of("data-bar=\"duplicate\"", "data-n"), "1");
    assert_eq!(
        r.attr_of("data-bar=\"target_has_name_size\"", "data-n"),
        "1"
    );
    // With no bar picked, each list holds all its files.
    let failed = r.table("failed");
    assert!(failed.contains("data-matching=\"1\""), "{failed}");
    assert!(
        failed.contains("<td>empty.epub</td><td>the file is empty (0 bytes)</td>"),
        "{failed}"
    );
    let skipped = r.table("skipped");
    assert!(skipped.contains("data-matching=\"2\""), "{skipped}");
    // Duplicates grouped under the file kept; warnings with their text.
    let dups = r.table("duplicates");
    assert!(dups.contains("data-dups=\"1\""), "{dups}");
    assert!(
        dups.contains("good.txt") && dups.contains("copy.txt"),
        "{dups}"
    );
    let warned = r.table("warnings");
    assert!(
        warned.contains("broken.epub") && warned.contains("unreadable ZIP container"),
        "{warned}"
    );
    // Runs with their exit codes; throughput from the events: run 1 finished 3 files (2
    // uploaded, 1 failed), run 2 two (both skipped).
    assert_eq!(r.attr_of("data-run=\"1\"", "data-exit"), "1");
    assert_eq!(r.attr_of("data-run=\"2\"", "data-exit"), "1");
    assert_eq!(r.attr_of("data-throughput-run=\"1\"", "data-files"), "3");
    assert_eq!(r.attr_of("data-throughput-run=\"2\"", "data-files"), "2");
    let uploaded_bytes = "the same bytes\n".len() + "not a zip\n".len();
    assert_eq!(
        r.attr_of("data-throughput-run=\"1\"", "data-bytes"),
        uploaded_bytes.to_string()
    );

    // A bar picked (as a click does; here by the page's address): its files only.
    let r = render(&browser, &page, "#skipped=target_has_name_size");
    r.assert_clean();
    assert_eq!(
        r.attr_of("data-picked-skipped=", "data-picked-skipped"),
        "target_has_name_size"
    );
    let skipped = r.table("skipped");
    assert!(skipped.contains("data-matching=\"1\""), "{skipped}");
    assert!(
        skipped.contains("there.txt") && !skipped.contains("copy.txt"),
        "{skipped}"
    );
}

/// File names that are markup: the page shows them as text, and none of their script runs
/// (each would mark the document with `data-pwned`). A name that is not UTF-8 shows as the
/// state DB spells it (`\xFF`).
#[test]
fn html_report_shows_hostile_names_as_text_and_runs_none_of_them() {
    let Some(browser) = chromium() else { return };
    let ws = Workspace::empty();
    // `/` cannot be in a file name, so the `</script>`s come from folder names: the source
    // path `x</script><script>…</script><img …>.epub` is three levels deep.
    let hostile = "x</script><script>document.documentElement.setAttribute('data-pwned','script')</script>\
                   <img src=x onerror=\"document.documentElement.setAttribute('data-pwned','img')\"> &amp; 'q'.epub";
    let file = ws.lib().join(hostile);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // Not a ZIP: migrated with a warning, so the name is listed on the page.
    std::fs::write(&file, "not a zip, hostile\n").unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"bad\xFFname.epub");
        std::fs::write(ws.lib().join(name), "not a zip, not UTF-8\n").unwrap();
    }
    let o = ws.migrate(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = write_page(&ws);
    let html = std::fs::read_to_string(&page).unwrap();
    // The data block and the script: the only two `</script>`s in the page.
    assert_eq!(html.matches("</script>").count(), 2, "{html}");

    let r = render(&browser, &page, "");
    r.assert_clean();
    // The names are on the page as text (`data-pwned','img'`); set by a script that ran, the
    // attribute would be serialized `data-pwned="…"` on the `<html>` element.
    let html_tag = &r.dom[r.dom.find("<html").unwrap()..];
    let html_tag = &html_tag[..html_tag.find('>').unwrap()];
    assert!(
        !html_tag.contains("data-pwned"),
        "injected code ran: {html_tag}"
    );
    assert!(
        !r.dom.contains("data-pwned=\""),
        "injected code ran: {}",
        r.dom
    );
    let warned = r.table("warnings");
    assert!(
        warned.contains("x&lt;/script&gt;&lt;script&gt;document.documentElement"),
        "{warned}"
    );
    assert!(warned.contains("&lt;img src=x onerror="), "{warned}");
    assert!(warned.contains("bad\\xFFname.epub"), "{warned}");
    assert_eq!(r.text_of("data-count=\"warnings\""), "2");
}

/// The page goes to `--output`, or to standard output when that is a pipe; it takes no
/// selection (it has every kind of file, and a filter).
#[test]
fn html_report_refuses_a_selection_and_writes_to_a_pipe() {
    let ws = migrated();
    let o = ws.run(&["report", "--format", "html", "--failed", "-o", "x.html"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--format html makes one page about the whole migration"),
        "{}",
        stderr(&o)
    );
    assert!(!ws.path().join("x.html").exists());
    // `ws.run` captures standard output: a pipe.
    let o = ws.run(&["report", "--format", "html"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("<!DOCTYPE html>"), "{text}");
    assert!(text.trim_end().ends_with("</html>"), "{text}");
}
