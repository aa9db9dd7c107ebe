//! The pipeline's own tasks: every task a stage spawns is joined, and one that did not return
//! (it panicked) stops the run through `Ctx::abort` instead of vanishing with the rows it held
//! and leaving its stage waiting forever. Blocking work goes through [`blocking`], whose panic
//! stops the run the same way and is never read as an answer (no duplicates, nothing on the
//! target, an unreadable file).

use super::fault::{Fault, Stage};
use super::Ctx;
use std::future::Future;
use tokio::task::JoinSet;

/// A stage's spawned tasks.
pub struct Tasks<T> {
    set: JoinSet<T>,
    stage: Stage,
}

impl<T: Send + 'static> Tasks<T> {
    pub fn new(stage: Stage) -> Tasks<T> {
        Tasks {
            set: JoinSet::new(),
            stage,
        }
    }

    pub fn spawn(&mut self, task: impl Future<Output = T> + Send + 'static) {
        self.set.spawn(task);
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next task to end: `Some(Some(value))`, `Some(None)` when it did not return (the
    /// run is stopped for it), `None` when no task is left.
    pub async fn next(&mut self, ctx: &Ctx) -> Option<Option<T>> {
        let res = self.set.join_next().await?;
        Some(self.judge(ctx, res))
    }

    /// Take what the tasks already over left, without waiting (so a long stage does not
    /// keep them all).
    pub fn reap(&mut self, ctx: &Ctx) {
        while let Some(res) = self.set.try_join_next() {
            self.judge(ctx, res);
        }
    }

    /// Wait for every task.
    pub async fn join_all(&mut self, ctx: &Ctx) {
        while self.next(ctx).await.is_some() {}
    }

    fn judge(&self, ctx: &Ctx, res: Result<T, tokio::task::JoinError>) -> Option<T> {
        match res {
            Ok(v) => Some(v),
            Err(e) => {
                ctx.abort(Fault::joined(self.stage, e));
                None
            }
        }
    }
}

/// Run `work` on a blocking thread; `None` when it panicked (the run is stopped for it).
pub async fn blocking<T: Send + 'static>(
    ctx: &Ctx,
    stage: Stage,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.abort(Fault::joined(stage, e));
            None
        }
    }
}
