//! `bookferry completions` and `bookferry man`, checked by the programs that use them: bash
//! sources the script and registers the completion; `man -l` renders every page.

use crate::util::*;
use std::process::{Command, Stdio};

#[test]
fn the_bash_completion_script_registers_and_completes_subcommands() {
    let ws = Workspace::empty();
    let script = ws.path().join("bookferry.bash");
    let out = ws.run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(&script, &out.stdout).unwrap();
    // Source it, check the registration, then ask it to complete `bookferry ver`.
    let probe = format!(
        "source '{}' && complete -p bookferry && COMP_WORDS=(bookferry ver) COMP_CWORD=1 && _bookferry bookferry ver bookferry && echo \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let bash = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    let said = String::from_utf8_lossy(&bash.stdout);
    assert!(bash.status.success(), "{said} {}", stderr(&bash));
    assert!(said.contains("-F _bookferry bookferry"), "{said}");
    assert!(
        said.lines().last().unwrap_or("").contains("verify"),
        "{said}"
    );
}

fn render_with_man(page: &[u8]) -> String {
    let mut man = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("man is installed (.ci/run installs man-db)");
    use std::io::Write;
    man.stdin.take().unwrap().write_all(page).unwrap();
    let out = man.wait_with_output().unwrap();
    assert!(out.status.success(), "man -l: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_man_page_renders_with_its_options() {
    let ws = Workspace::empty();
    let main = ws.run(&["man"]);
    assert_eq!(main.status.code(), Some(0), "{}", stderr(&main));
    let text = render_with_man(&main.stdout);
    assert!(text.contains("NAME") && text.contains("verify"), "{text}");
    for (sub, option) in [
        ("run", "--layout"),
        ("verify", "--repair"),
        ("report", "--format"),
        ("forget", "--yes"),
    ] {
        let page = ws.run(&["man", sub]);
        assert_eq!(page.status.code(), Some(0), "{sub}: {}", stderr(&page));
        let text = render_with_man(&page.stdout);
        assert!(text.contains(&format!("bookferry-{sub}")), "{sub}: {text}");
        assert!(text.contains(option), "{sub} lacks {option}: {text}");
        assert!(
            text.contains("--state"),
            "{sub} lacks the global options: {text}"
        );
    }
    let none = ws.run(&["man", "nope"]);
    assert_eq!(none.status.code(), Some(2));
}

/// The README's CLI reference covers what `--help` offers: every subcommand and every long
/// option of each appears in README.md.
#[test]
fn the_readme_names_every_subcommand_and_option_help_shows() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let ws = Workspace::empty();
    let top = String::from_utf8_lossy(&ws.run(&["--help"]).stdout).into_owned();
    let subs: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|s| s != "help")
        .collect();
    assert!(subs.len() >= 9, "{top}");
    let mut missing = Vec::new();
    for sub in &subs {
        if !readme.contains(&format!("bookferry {sub}")) {
            missing.push(format!("bookferry {sub}"));
        }
        let help = String::from_utf8_lossy(&ws.run(&[sub, "--help"]).stdout).into_owned();
        for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            let is_flag = word.starts_with("--") && word.len() > 2 && word != "--help";
            if is_flag && !names_flag(&readme, word) {
                missing.push(format!("{sub} {word}"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "in --help, not in README.md: {missing:?}"
    );
}

/// Whether `text` has `flag` as a whole flag (not as the start of a longer one).
fn names_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        let next = text[i + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}
