//! After a crash: files a dead run placed in a folder target without living to record them.
//! Before any row is claimed, each placement a dead run claimed (`state::placement`) is looked
//! for where it was planned; a file found there with the row's content is this migration's own
//! placement and is recorded as the row's move to `uploaded`, with its `target_ref` (counted in
//! this run's totals). So neither that row nor another with the same content takes it for a
//! file the target already had, and a later change to the source replaces it in place.

use super::Ctx;
use crate::failure::{Failure, FailureKind};
use crate::state::placement::{self, Adoption};
use crate::target::Target;

/// Adopt what dead runs placed; a state DB error stops the run (rows stay where they were).
pub async fn placements(ctx: &Ctx) {
    if ctx.cfg.dry_run {
        return;
    }
    let Target::Folder(folder, _) = &*ctx.target else {
        return;
    };
    let (db, folder, run) = (ctx.db.clone(), folder.clone(), ctx.writer.run());
    let found = tokio::task::spawn_blocking(move || {
        let mut conn = db.conn()?;
        let claimed = placement::left_by_dead_runs(&conn)?;
        let found: Vec<Adoption> = claimed
            .into_iter()
            .filter_map(|c| {
                let (target_ref, digests) =
                    folder.find_placed(&c.planned_ref, &c.path, c.size, c.digests.as_ref())?;
                let a = Adoption {
                    id: c.id,
                    from: c.state,
                    planned_ref: c.planned_ref,
                    size: c.size,
                    mtime_ns: c.mtime_ns,
                    target_ref,
                    digests,
                };
                Some(a)
            })
            .collect();
        let n = placement::adopt(&mut conn, run, &found)?;
        Ok::<_, crate::state::StateError>((n, found.iter().map(|a| a.size).sum::<u64>()))
    })
    .await;
    let stop = |why: String| {
        ctx.stop_run(Failure::new(
            FailureKind::StateDb,
            format!("adopting the files a stopped run placed: {why}"),
        ))
    };
    match found {
        Ok(Ok((0, _))) => {}
        Ok(Ok((n, bytes))) => {
            tracing::info!("{n} file(s) placed by a run that stopped before recording them: recorded as uploaded where they are");
            ctx.progress.uploaded.add(n as u64);
            ctx.progress.uploaded_bytes.add(bytes);
        }
        Ok(Err(e)) => stop(e.to_string()),
        Err(e) => stop(format!("internal: {e}")),
    }
}
