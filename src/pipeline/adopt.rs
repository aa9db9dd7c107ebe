//! After a crash: what a dead run placed or sent without living to record it. Before any row is
//! claimed, each placement a dead run claimed (`state::placement`) is looked for: a folder
//! target's at the planned name (and the ` (N)` names the transfer tries after it); an HTTP
//! target's by asking the server for the SHA-1 that was being sent (the protocol's existence
//! check; it gives no id, so the row's `target_ref` stays empty). Found with the row's content,
//! it is this migration's own and is recorded as the row's move to `uploaded` (counted in this
//! run's totals). So neither that row nor another with the same content takes it for a file the
//! target already had, and a later change to the source replaces it in place. With `--sidecars`
//! the adopted books' sidecars are put right first, and those a dead run wrote for a book it
//! never placed are removed (`settle_sidecars`).

use super::Ctx;
use crate::failure::{Failure, FailureKind};
use crate::hash::{self, Digests};
use crate::state::placement::{self, Adoption, Claimed};
use crate::state::rows::FileRow;
use crate::state::{placed_contents, sidecar_rows, Db, StateError};
use crate::target::folder::FolderTarget;
use crate::target::Payload;
use crate::target::{ContentQuery, Target};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

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
            let keep_duplicates = ctx.cfg.keep_duplicates;
            blocking(move || {
                let left = left(&db, keep_duplicates)?;
                // Each file is one row's: rows of one content may share a planned name.
                let mut taken = HashSet::new();
                let found: Vec<Adoption> = left
                    .into_iter()
                    .filter_map(|c| {
                        let (at, content) = folder.find_placed(
                            &c.planned_ref,
                            &c.path,
                            c.size,
                            c.digests.as_ref(),
                        )?;
                        taken
                            .insert(at.clone())
                            .then(|| adoption(c, Some(at), content))
                    })
                    .collect();
                if folder.sidecars_on() {
                    settle_sidecars(&db, &folder, &found)?;
                }
                Ok(found)
            })
            .await
        }
        Target::Http(_) => {
            // Rows whose content is the one that was being sent (hashed here if the hashing
            // was not recorded), then the server asked whether it holds it.
            let keep_duplicates = ctx.cfg.keep_duplicates;
            let sent: Vec<(Claimed, Digests)> = blocking(move || {
                let left = left(&db, keep_duplicates)?;
                // One row per content sent: rows of one content may all carry a claim.
                let mut taken = HashSet::new();
                Ok(left
                    .into_iter()
                    .filter(|c| taken.insert(c.planned_ref.clone()))
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

/// With `--sidecars`, before anything is recorded: each book found placed gets its sidecars
/// where they are missing or torn (a power loss can keep the book's rename and lose theirs),
/// made durable before the book is recorded; a book a dead run claimed and did not place
/// leaves no sidecars behind where no book owns them (the next step may skip the row: a
/// duplicate of a file placed first, a filter). See `target::sidecar_state`.
fn settle_sidecars(db: &Db, folder: &FolderTarget, found: &[Adoption]) -> Result<(), StateError> {
    let conn = db.conn()?;
    let adopted: HashMap<i64, &str> = found
        .iter()
        .filter_map(|a| Some((a.id, a.target_ref.as_deref()?)))
        .collect();
    let mut wrote = false;
    for (row, planned) in sidecar_rows::left_claims(&conn)? {
        // Adopted or not, the source holds the bytes it had (adoption checks its size and mtime).
        let p = payload_of_row(&row, &row.path);
        match adopted.get(&row.id) {
            Some(at) => match folder.mend_sidecars(&p, at) {
                Ok(mended) => {
                    for f in &mended {
                        tracing::info!("{at}: {f}: written again");
                    }
                    wrote |= !mended.is_empty();
                }
                Err(e) => tracing::warn!("{at}: cannot write its sidecars: {e}"),
            },
            None => match folder.remove_stray_sidecars(&p, &planned) {
                Ok(removed) => {
                    for path in removed {
                        tracing::info!(
                            "removed {}: a sidecar a stopped run wrote for {}, which it did not place",
                            path.display(),
                            row.source_ref
                        );
                    }
                }
                Err(e) => tracing::warn!("{planned}: cannot look at its sidecars: {e}"),
            },
        }
    }
    sidecar_rows::clear_settled(&conn)?;
    if wrote {
        if let Err(e) = folder.flush() {
            tracing::warn!("cannot make the sidecars written durable: {e}");
        }
    }
    Ok(())
}

/// The rows among `left` whose content another row placed: that row's duplicates (the content
/// check makes them so), not the owners of what their planned name holds, which may be the
/// other row's file (the same book's copy from another folder has the same name). Claims are
/// recorded with the move to `metadata_cached`, before the transfer decides duplicates.
fn placed_by_others(db: &Db, left: &[Claimed]) -> Result<HashSet<i64>, StateError> {
    let conn = db.conn()?;
    let blake3s: Vec<String> = left
        .iter()
        .filter_map(|c| Some(c.digests.as_ref()?.blake3.clone()))
        .collect();
    let placed = placed_contents::uploaded_with(&conn, &blake3s, false)?;
    Ok(left
        .iter()
        .filter(|c| {
            let Some(d) = &c.digests else { return false };
            placed.get(&d.blake3).is_some_and(|rows| {
                rows.iter()
                    .any(|(other, id, _)| *id != c.id && other.same_content(d))
            })
        })
        .map(|c| c.id)
        .collect())
}

/// The claims dead runs left, but those of rows whose content another row placed (unless
/// duplicates are kept): see [`placed_by_others`].
fn left(db: &Db, keep_duplicates: bool) -> Result<Vec<Claimed>, StateError> {
    let left = placement::left_by_dead_runs(&*db.conn()?)?;
    if keep_duplicates {
        return Ok(left);
    }
    let twins = placed_by_others(db, &left)?;
    Ok(left
        .into_iter()
        .filter(|c| !twins.contains(&c.id))
        .collect())
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

/// The payload of a recorded row: what its sidecars are made from — its recorded metadata, or
/// where none was recorded (a run killed before recording it, a rescan that found the file
/// changed) the metadata extracted, as the metadata stage does, from the file at `content_at`
/// (its source, or the placed copy that holds the same bytes).
pub fn payload_of_row(row: &FileRow, content_at: &Path) -> Payload {
    let (metadata, origin) = match (&row.metadata, row.metadata_origin) {
        (Some(md), origin) => (Some(md.clone()), origin),
        (None, _) => {
            let got = crate::metadata::extract_from_file(
                &row.format,
                content_at,
                row.size,
                &row.source_ref,
            );
            (Some(got.metadata), Some(got.origin))
        }
    };
    Payload {
        row_id: row.id,
        source_path: row.path.clone(),
        source_rel: row.source_ref.clone(),
        file_name: row.file_name(),
        size: row.size,
        format: row.format.clone(),
        digests: Digests {
            sha1: row.sha1.clone(),
            blake3: row.blake3.clone().unwrap_or_default(),
        },
        metadata,
        origin,
        data: None,
        staged: None,
        previous_ref: None,
    }
}
