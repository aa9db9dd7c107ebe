//! `bookferry status`: counts and bytes per state, skips by reason, failures by kind, the
//! current or last run's rate and ETA. Opens the state DB read-only, so it works from another
//! terminal during a run.

use super::CmdResult;
use crate::cli::{GlobalArgs, StatusArgs};
use crate::exit;
use crate::pipeline::progress::human_bytes;
use crate::state::report;
use crate::state::{Db, FileState};
use serde_json::json;

pub fn command(global: &GlobalArgs, args: &StatusArgs) -> CmdResult {
    let state = super::state_path(global)?;
    let db = Db::open_read_only(&state)?;
    let conn = db.conn()?;
    let counts = report::state_counts(&conn)?;
    let failures = report::failures_by_kind(&conn)?;
    let skips = report::skips_by_reason(&conn)?;
    let last = report::last_run(&conn)?;
    let remaining: u64 = FileState::ACTIVE.iter().map(|s| counts.files_in(*s)).sum();
    let eta_secs = last
        .as_ref()
        .filter(|r| r.running && r.files_per_sec > 0.0)
        .map(|r| remaining as f64 / r.files_per_sec);
    if args.json {
        let states: serde_json::Map<String, serde_json::Value> = counts
            .by_state
            .iter()
            .map(|(k, (n, _))| (k.to_string(), json!(n)))
            .collect();
        let bytes_by_state: serde_json::Map<String, serde_json::Value> = counts
            .by_state
            .iter()
            .map(|(k, (_, b))| (k.to_string(), json!(b)))
            .collect();
        let out = json!({
            "total": counts.total,
            "states": states,
            "bytes": {"total": counts.bytes_total, "done": counts.bytes_done},
            "bytes_by_state": bytes_by_state,
            "failures": failures,
            "skips": skips,
            "run": last.as_ref().map(|r| json!({
                "id": r.id,
                "command": r.command,
                "running": r.running,
                "pid": r.pid,
                "host": r.host,
                "seconds": r.seconds,
                "files_done": r.files_done,
                "files_per_sec": r.files_per_sec,
                "bytes_sent": r.bytes_sent,
                "outcome": r.outcome,
                "exit_code": r.exit_code,
                "eta_seconds": eta_secs,
            })),
        });
        println!("{out}");
        return Ok(exit::OK);
    }
    println!("state DB {}", state.display());
    println!("{:>16}  {:>9}  {:>10}", "state", "files", "bytes");
    for (k, (n, b)) in &counts.by_state {
        println!("{k:>16}  {n:>9}  {:>10}", human_bytes(*b));
    }
    println!(
        "{:>16}  {:>9}  {:>10}  ({} done)",
        "total",
        counts.total,
        human_bytes(counts.bytes_total),
        human_bytes(counts.bytes_done)
    );
    if !skips.is_empty() {
        println!("skipped by reason:");
        for (k, n) in &skips {
            println!("  {k}: {n}");
        }
    }
    if !failures.is_empty() {
        println!("failures by kind:");
        for (k, n) in &failures {
            println!("  {k}: {n}");
        }
        println!(
            "  (details: sqlite3 {} 'SELECT * FROM failures')",
            state.display()
        );
    }
    if let Some(r) = last {
        let what = if r.running {
            "running"
        } else {
            r.outcome.as_deref().unwrap_or("ended")
        };
        println!(
            "run #{} ({}, {what}, pid {} on {}): {} files in {:.0}s, {:.1} files/s, {} sent",
            r.id,
            r.command,
            r.pid,
            r.host,
            r.files_done,
            r.seconds,
            r.files_per_sec,
            human_bytes(r.bytes_sent)
        );
        if let Some(eta) = eta_secs {
            println!("eta: {:.0}s for {remaining} remaining files", eta);
        }
    }
    Ok(exit::OK)
}
