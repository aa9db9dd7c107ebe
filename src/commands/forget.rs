//! `bookferry forget`: start over without losing the audit history. The state DB (with its
//! WAL checkpointed into it, and any sidecar file left) is renamed to a dated backup beside it,
//! so the next run starts fresh. The source and the target are never touched. Asks on a
//! terminal unless `--yes`; refused while another process holds the DB.

use super::stdout::outln;
use super::{confirm, recorded_migration, CmdResult, UsageError};
use crate::cli::{ForgetArgs, GlobalArgs};
use crate::exit;
use crate::state::lock::StateLock;
use crate::state::StateError;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// SQLite's files beside a DB, by suffix.
const SIDECARS: &[&str] = &["-wal", "-shm", "-journal"];

pub fn command(global: &GlobalArgs, args: &ForgetArgs) -> CmdResult {
    let state = super::state_path(global)?;
    if !state.exists() {
        return Err(UsageError::NothingToForget(state).into());
    }
    // Held until the rename is done: no run can start on the DB meanwhile.
    let lock = StateLock::acquire(&state)?;
    let what = match recorded_migration(&state)? {
        Some(rec) => format!(
            "the migration {} → {}",
            rec.source,
            rec.target.as_deref().unwrap_or("(no target yet)")
        ),
        None => "a state DB with no migration recorded".to_string(),
    };
    let backup = backup_path(&state, SystemTime::now());
    outln!(
        "forget {what}: {} becomes {} (history kept); the source and the target are not touched",
        state.display(),
        backup.display()
    );
    if !args.yes && !confirm::ask("forget it?", "--yes")? {
        outln!("nothing forgotten");
        return Ok(exit::OK);
    }
    checkpoint(&state)?;
    rename(&state, &backup)?;
    for suffix in SIDECARS {
        let side = with_suffix(&state, suffix);
        if side.exists() {
            rename(&side, &with_suffix(&backup, suffix))?;
        }
    }
    drop(lock);
    // The lock file holds only the last holder's pid; the backup does not need it.
    std::fs::remove_file(crate::state::lock::lock_path(&state)).ok();
    outln!(
        "forgotten: the next `{} run --from SOURCE --to TARGET` starts fresh",
        super::command_prefix(global)
    );
    Ok(exit::OK)
}

/// Folds the WAL into the DB file, so the backup is one self-contained file.
fn checkpoint(state: &Path) -> Result<(), StateError> {
    // A plain connection: opening through `Db` would migrate an older DB's schema.
    let conn = rusqlite::Connection::open(state)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<(), StateError> {
    std::fs::rename(from, to).map_err(|source| StateError::Io {
        path: from.to_path_buf(),
        source,
    })
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<state>.forgotten-YYYYMMDD-HHMMSS` (UTC), with `-2`, `-3`… when that name is taken.
fn backup_path(state: &Path, now: SystemTime) -> PathBuf {
    let stamp: String = crate::calibre::dates::db_timestamp(now)
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect();
    let base = with_suffix(state, &format!(".forgotten-{stamp}"));
    let taken = |p: &Path| p.exists() || SIDECARS.iter().any(|s| with_suffix(p, s).exists());
    if !taken(&base) {
        return base;
    }
    (2..)
        .map(|n| with_suffix(&base, &format!("-{n}")))
        .find(|p| !taken(p))
        .expect("a free name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn the_backup_is_dated_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_220_000);
        let first = backup_path(&state, t);
        assert_eq!(
            first.file_name().unwrap(),
            "state.db.forgotten-20261202-140000"
        );
        std::fs::write(&first, b"x").unwrap();
        let second = backup_path(&state, t);
        assert_eq!(
            second.file_name().unwrap(),
            "state.db.forgotten-20261202-140000-2"
        );
    }
}
