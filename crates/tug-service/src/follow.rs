//! Following a job until it ends: its stored events in order, then the finished job. REST turns
//! this into NDJSON lines, gRPC into `DeployEvent`s. Reading from the store (not only from the
//! in-process signal) means a reconnecting client, or one whose job runs on another replica, sees
//! the same history.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tug_store::{Event, Job};

use crate::app::App;
use crate::error::{ErrorKind, ServiceError};

/// How many callers wait on a stream for their job, bounded by `limits.max_waiting_streams`:
/// each costs a task, a channel and a watch for as long as its job runs, so an unbounded number
/// is unbounded memory under overload.
#[derive(Debug)]
pub struct WaitingStreams {
    count: AtomicUsize,
    max: usize,
}

/// One caller's place among the waiting streams; freed when dropped.
#[derive(Debug)]
pub struct StreamSlot(Arc<WaitingStreams>);

impl WaitingStreams {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(WaitingStreams {
            count: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for `n` more streams (a release may follow one job per environment), or a
    /// refusal that tells the caller when to come back.
    pub fn reserve(self: &Arc<Self>, n: usize) -> Result<Vec<StreamSlot>, ServiceError> {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c + n <= self.max).then_some(c + n)
            });
        match taken {
            Ok(_) => Ok((0..n).map(|_| StreamSlot(self.clone())).collect()),
            Err(_) => Err(ServiceError::new(
                ErrorKind::Busy {
                    retry_after_secs: 1,
                },
                format!(
                    "the server is following {} waiting streams, its limit (limits.max_waiting_streams); nothing was stored: retry after 1 s, or send wait=false to be answered as soon as the job is stored",
                    self.max
                ),
            )),
        }
    }

    /// Streams waiting now.
    pub fn waiting(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

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
) -> mpsc::Receiver<Update> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        // Held until the stream ends, whichever way.
        let _slot = slot;
        let watch = app.signal.watch(&job_id);
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
            let job = match app.store.job(&job_id).await {
                Ok(Some(job)) => job,
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
            // Read events after the state: whatever finished the job wrote its events first.
            match app.store.events(&job_id, seen).await {
                Ok(events) => {
                    for e in events {
                        seen = seen.max(e.seq);
                        if tx.send(Update::Progress(e)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx
                        .send(Update::Broken(format!("the job store failed: {e}")))
                        .await;
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
