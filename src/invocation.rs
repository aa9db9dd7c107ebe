//! How the user invoked bookferry — the program as typed (`./target/release/bookferry`, or
//! `bookferry` from the PATH) and `--state` when one was given — so that every hint that tells
//! the user to run something gives a command that can be pasted as it is.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::OnceLock;

static INVOKED_AS: OnceLock<String> = OnceLock::new();

/// Records the invocation once, at start (`main`).
pub fn remember(program: Option<&OsStr>, state: Option<&Path>) {
    let _ = INVOKED_AS.set(prefix(program, state));
}

/// The command to paste before a subcommand: `bookferry`, `./bookferry --state my.db`, …
/// (`bookferry` when nothing was recorded: the library used on its own).
pub fn me() -> &'static str {
    INVOKED_AS.get().map(String::as_str).unwrap_or("bookferry")
}

/// The program as typed when it was named by a path (not found on the PATH by name), then
/// `--state` when given; every word quoted for a POSIX shell.
pub fn prefix(program: Option<&OsStr>, state: Option<&Path>) -> String {
    let program = program
        .filter(|p| p.as_encoded_bytes().contains(&b'/'))
        .map(|p| shell_quote(&crate::path_text::escape(p)))
        .unwrap_or_else(|| "bookferry".into());
    match state {
        Some(s) => format!(
            "{program} --state {}",
            shell_quote(&crate::path_text::escape(s.as_os_str()))
        ),
        None => program,
    }
}

/// A word as a POSIX shell reads it back: as is when plain, else in single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_as_typed_and_the_state_db_are_kept_quoted() {
        let p =
            |prog: &str, state: Option<&str>| prefix(Some(OsStr::new(prog)), state.map(Path::new));
        assert_eq!(p("bookferry", None), "bookferry");
        assert_eq!(
            p("./target/release/bookferry", None),
            "./target/release/bookferry"
        );
        assert_eq!(
            p("/opt/my tools/bookferry", Some("lib state.db")),
            "'/opt/my tools/bookferry' --state 'lib state.db'"
        );
        assert_eq!(prefix(None, None), "bookferry");
        assert_eq!(shell_quote("/it's/s.db"), "'/it'\\''s/s.db'");
    }
}
