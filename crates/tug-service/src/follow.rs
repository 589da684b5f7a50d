//! Following a job until it ends: its stored events in order, then the finished job. REST turns
//! this into NDJSON lines, gRPC into `DeployEvent`s. Reading from the store (not only from the
//! in-process signal) means a reconnecting client, or one whose job runs on another replica, sees
//! the same history.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tug_store::{Event, Job};

use crate::app::{App, HeadStart};
use crate::streams::StreamSlot;

pub enum Update {
    Accepted {
        job_id: String,
        created: bool,
    },
    Progress(Event),
    /// The store failed while following; the job itself goes on.
    Broken(String),
    /// The server is stopping; the job resumes after the restart.
    ShuttingDown,
    Finished(Job),
}

/// Streams the updates of `job_id` into a channel; ends after `Finished` (or when the receiver
/// is dropped: the job is not affected).
pub fn follow(
    app: Arc<App>,
    job_id: String,
    created: bool,
    slot: StreamSlot,
    head_start: Option<HeadStart>,
) -> mpsc::Receiver<Update> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        // Held until the stream ends, whichever way.
        let _slot = slot;
        let (watch, mut known) = match head_start {
            Some(HeadStart { job, watch }) => (watch, Some(job)),
            None => (app.signal.watch(&job_id), None),
        };
        let mut shutdown = app.shutdown.clone();
        if tx
            .send(Update::Accepted {
                job_id: job_id.clone(),
                created,
            })
            .await
            .is_err()
        {
            return;
        }
        let mut seen = 0i64;
        loop {
            if let Some(job) = known.take() {
                // Stored just now and not signalled since: queued, without events. Wait for
                // news before reading anything.
                debug_assert!(!job.state.is_terminal());
                tokio::select! {
                    _ = tokio::time::timeout(Duration::from_millis(500), watch.changed()) => {}
                    () = shutdown.wait() => {
                        let _ = tx.send(Update::ShuttingDown).await;
                        return;
                    }
                }
                continue;
            }
            // The events are read with (or after) the state: whatever finished the job wrote
            // its events first, so an ended job comes with all of them.
            // Woken with the job as the writer read it back: no read of our own.
            let read = match watch.take_snapshot() {
                Some(snapshot) => {
                    let (job, events) = &*snapshot;
                    let new = events.iter().filter(|e| e.seq > seen).cloned().collect();
                    Ok(Some((job.clone(), new)))
                }
                None => app.store.job_with_events(&job_id, seen).await,
            };
            let (job, events) = match read {
                Ok(Some(read)) => read,
                Ok(None) => {
                    let _ = tx
                        .send(Update::Broken(format!("job {job_id} disappeared")))
                        .await;
                    return;
                }
                Err(e) => {
                    let _ = tx
                        .send(Update::Broken(format!("the job store failed: {e}")))
                        .await;
                    return;
                }
            };
            for e in events {
                seen = seen.max(e.seq);
                if tx.send(Update::Progress(e)).await.is_err() {
                    return;
                }
            }
            if job.state.is_terminal() {
                let _ = tx.send(Update::Finished(job)).await;
                return;
            }
            // Wake on this job's signal; the timeout covers a writer on another replica.
            tokio::select! {
                _ = tokio::time::timeout(Duration::from_millis(500), watch.changed()) => {}
                () = shutdown.wait() => {
                    let _ = tx.send(Update::ShuttingDown).await;
                    return;
                }
            }
        }
    });
    rx
}
