//! Collecting items from a channel into batches: up to `max` items, waiting at most `wait`
//! after the first one arrives (the check stages send one request per batch).

use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The next batch, or `None` once the channel is closed and empty.
pub async fn next_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    wait: Duration,
) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(max.min(1024));
    batch.push(first);
    let deadline = Instant::now() + wait;
    while batch.len() < max {
        match rx.try_recv() {
            Ok(x) => batch.push(x),
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(x)) => batch.push(x),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
    Some(batch)
}
