//! `bookferry status`: the migration (source → target), counts and bytes per state, skips by
//! reason, failures by kind with the next step for each, files with warnings, the current or
//! last run's rate and ETA, and the command that continues the migration. Opens the state DB
//! read-only, so it works from another terminal during a run.

use super::stdout::outln;
use super::CmdResult;
use crate::cli::{GlobalArgs, StatusArgs};
use crate::exit;
use crate::failure::FailureKind;
use crate::pipeline::progress::human_bytes;
use crate::state::migration_record;
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
    let warned = report::files_with_warnings(&conn)?;
    let migration = migration_record::load(&conn)?;
    let me = super::command_prefix(global);
    let next_steps: Vec<(String, u64, String)> = failures
        .iter()
        .map(|(kind, n)| (kind.clone(), *n, advice(kind, &me)))
        .collect();
    let running = last.as_ref().is_some_and(|r| r.running);
    let remaining: u64 = FileState::ACTIVE.iter().map(|s| counts.files_in(*s)).sum();
    let continue_with = (!running && remaining > 0).then(|| match &migration {
        Some(m) if m.target.is_some() => format!("{me} run"),
        _ => format!("{me} run --to TARGET"),
    });
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
            "migration": migration.as_ref().map(|m| json!({"source": m.source, "target": m.target})),
            "files_with_warnings": warned,
            "next_steps": next_steps.iter().map(|(kind, n, advice)| json!({
                "kind": kind, "files": n, "advice": advice,
            })).collect::<Vec<_>>(),
            "continue": continue_with,
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
        outln!("{out}");
        return Ok(exit::OK);
    }
    outln!("state DB {}", state.display());
    if let Some(m) = &migration {
        outln!(
            "migration: {} → {}",
            m.source,
            m.target.as_deref().unwrap_or("(no target yet)")
        );
    }
    outln!("{:>16}  {:>9}  {:>10}", "state", "files", "bytes");
    for (k, (n, b)) in &counts.by_state {
        outln!("{k:>16}  {n:>9}  {:>10}", human_bytes(*b));
    }
    outln!(
        "{:>16}  {:>9}  {:>10}  ({} done)",
        "total",
        counts.total,
        human_bytes(counts.bytes_total),
        human_bytes(counts.bytes_done)
    );
    if !skips.is_empty() {
        outln!("skipped by reason:");
        for (k, n) in &skips {
            outln!("  {k}: {n}");
        }
    }
    if !failures.is_empty() {
        outln!("failures by kind, and what to do:");
        for (kind, n, advice) in &next_steps {
            outln!("  {kind}: {n} — {advice}");
        }
        outln!("  (each file and its error: {me} report --failed)");
    }
    if warned > 0 {
        outln!("files with warnings: {warned} (which and why: {me} report --warnings)");
    }
    if let Some(r) = last {
        let what = if r.running {
            "running"
        } else {
            r.outcome.as_deref().unwrap_or("ended")
        };
        outln!(
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
            outln!("eta: {:.0}s for {remaining} remaining files", eta);
        }
    }
    if let Some(cmd) = &continue_with {
        outln!("{remaining} files still to migrate; to continue: {cmd}");
    }
    Ok(exit::OK)
}

/// The advice for rows failed with `kind` (a kind this binary does not know is listed with
/// the generic way to look at them).
pub(crate) fn advice(kind: &str, me: &str) -> String {
    match FailureKind::parse(kind) {
        Some(k) => {
            let step = k.next_step();
            if step.retry {
                format!("{} {me} retry-failed --kind {k}", step.fix)
            } else {
                step.fix.to_string()
            }
        }
        None => format!("see {me} report --reason {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_has_advice_and_retryable_ones_name_the_command() {
        for k in FailureKind::ALL {
            let a = advice(k.as_str(), "bookferry");
            assert!(!a.is_empty());
            assert_eq!(
                a.contains(&format!("bookferry retry-failed --kind {k}")),
                k.next_step().retry,
                "{a}"
            );
        }
    }
}
