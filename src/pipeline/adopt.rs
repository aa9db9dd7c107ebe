//! After a crash: what a dead run placed or sent without living to record it. Before any row is
//! claimed, each placement a dead run claimed (`state::placement`) is looked for: a folder
//! target's at the planned name (and the ` (N)` names the transfer tries after it); an HTTP
//! target's by asking the server for the SHA-1 that was being sent (the protocol's existence
//! check; it gives no id, so the row's `target_ref` stays empty). Found with the row's content,
//! it is this migration's own and is recorded as the row's move to `uploaded` (counted in this
//! run's totals). So neither that row nor another with the same content takes it for a file the
//! target already had, and a later change to the source replaces it in place.

use super::Ctx;
use crate::failure::{Failure, FailureKind};
use crate::hash::{self, Digests};
use crate::state::placement::{self, Adoption, Claimed};
use crate::state::{Db, StateError};
use crate::target::{ContentQuery, Target};
use std::fs::File;

/// Adopt what dead runs placed; a state DB error stops the run (rows stay where they were).
pub async fn placements(ctx: &Ctx) {
    if ctx.cfg.dry_run || matches!(&*ctx.target, Target::Calibre(..)) {
        return;
    }
    let found = match find(ctx).await {
        Ok(found) => found,
        Err(e) => return stop(ctx, e),
    };
    if found.is_empty() {
        return;
    }
    let (db, run) = (ctx.db.clone(), ctx.writer.run());
    let bytes: u64 = found.iter().map(|a| a.size).sum();
    let adopted = tokio::task::spawn_blocking(move || {
        let mut conn = db.conn()?;
        placement::adopt(&mut conn, run, &found)
    })
    .await;
    match adopted {
        Ok(Ok(n)) => {
            tracing::info!("{n} file(s) placed or sent by a run that stopped before recording them: recorded as uploaded");
            ctx.progress.uploaded.add(n as u64);
            ctx.progress.uploaded_bytes.add(bytes);
        }
        Ok(Err(e)) => stop(ctx, e.to_string()),
        Err(e) => stop(ctx, format!("internal: {e}")),
    }
}

fn stop(ctx: &Ctx, why: String) {
    ctx.stop_run(Failure::new(
        FailureKind::StateDb,
        format!("adopting the files a stopped run placed: {why}"),
    ))
}

/// The claimed placements found made, with the row's content.
async fn find(ctx: &Ctx) -> Result<Vec<Adoption>, String> {
    let db = ctx.db.clone();
    match &*ctx.target {
        Target::Folder(folder, _) => {
            let folder = folder.clone();
            blocking(move || {
                Ok(left(&db)?
                    .into_iter()
                    .filter_map(|c| {
                        let (at, content) = folder.find_placed(
                            &c.planned_ref,
                            &c.path,
                            c.size,
                            c.digests.as_ref(),
                        )?;
                        Some(adoption(c, Some(at), content))
                    })
                    .collect())
            })
            .await
        }
        Target::Http(_) => {
            // Rows whose content is the one that was being sent (hashed here if the hashing
            // was not recorded), then the server asked whether it holds it.
            let sent: Vec<(Claimed, Digests)> = blocking(move || {
                Ok(left(&db)?
                    .into_iter()
                    .filter_map(|c| {
                        let sha1 = placement::sent_sha1(&c.planned_ref)?.to_string();
                        let content =
                            c.digests.clone().filter(|d| d.sha1.is_some()).or_else(|| {
                                File::open(&c.path)
                                    .and_then(hash::hash_reader)
                                    .ok()
                                    .map(|(d, _)| d)
                            })?;
                        (content.sha1.as_deref() == Some(sha1.as_str())).then_some((c, content))
                    })
                    .collect())
            })
            .await?;
            if sent.is_empty() {
                return Ok(Vec::new());
            }
            let queries = sent
                .iter()
                .map(|(c, d)| ContentQuery {
                    key: c.id,
                    digests: d.clone(),
                    file_name: c
                        .path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    size: c.size,
                })
                .collect();
            // Not reachable: the rows go the usual way (checked again before being sent).
            let held = match ctx.target.check_content(queries).await {
                Ok(held) => held,
                Err(f) => {
                    tracing::warn!("not adopting uploads of a stopped run: {}", f.message);
                    return Ok(Vec::new());
                }
            };
            Ok(sent
                .into_iter()
                .filter(|(c, _)| held.contains_key(&c.id))
                .map(|(c, d)| adoption(c, None, d))
                .collect())
        }
        // Its books carry their mark: the target finds them itself (`target::calibre_server`).
        Target::Calibre(..) | Target::CalibreServer(_) => Ok(Vec::new()),
    }
}

fn left(db: &Db) -> Result<Vec<Claimed>, StateError> {
    let conn = db.conn()?;
    placement::left_by_dead_runs(&conn)
}

fn adoption(c: Claimed, target_ref: Option<String>, digests: Digests) -> Adoption {
    Adoption {
        id: c.id,
        from: c.state,
        planned_ref: c.planned_ref,
        size: c.size,
        mtime_ns: c.mtime_ns,
        target_ref,
        digests,
    }
}

/// `f` on a blocking thread; its state DB error (or its panic) as a message.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(res) => res.map_err(|e| e.to_string()),
        Err(e) => Err(format!("internal: {e}")),
    }
}
