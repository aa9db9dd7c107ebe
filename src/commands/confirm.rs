//! Asking the user before a step that changes what the state DB says: on a terminal a
//! `[y/N]` question; elsewhere the command needs its `--yes` flag.

use super::UsageError;
use std::io::{BufRead, IsTerminal, Write};

/// `Ok(true)` when the user answers yes on a terminal. Not on a terminal: a usage error naming
/// `flag`, the one that says yes in advance.
pub fn ask(question: &str, flag: &'static str) -> Result<bool, UsageError> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError::NeedsYes { flag });
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).ok();
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}
