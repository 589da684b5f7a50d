//! Following a job until it ends: its stored events in order, then the finished job. REST turns
//! this into NDJSON lines, gRPC into `DeployEvent`s. Reading from the store (not only from the
//! in-process signal) means a reconnecting client, or one whose job runs on another replica, sees
//! the same history.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::Stream;
use tug_store::{Event, Job};

use crate::app::{App, HeadStart};
use crate::shutdown::Shutdown;
use crate::signals::JobWatch;
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

/// The updates of `job_id`, ending after `Finished`. The stream is polled by the caller's own
/// connection (no task, no channel of its own: a server holds hundreds of waiting streams) and
/// dropping it ends the following (the job is not affected) and frees its slot at once.
pub fn follow(
    app: Arc<App>,
    job_id: String,
    created: bool,
    slot: StreamSlot,
    head_start: Option<HeadStart>,
) -> impl Stream<Item = Update> + Send + 'static {
    let (watch, known) = match head_start {
        Some(HeadStart { watch }) => (watch, true),
        None => (app.signal.watch(&job_id), false),
    };
    let shutdown = app.shutdown.clone();
    let following = Following {
        pending: VecDeque::from([Update::Accepted {
            job_id: job_id.clone(),
            created,
        }]),
        app,
        job_id,
        _slot: slot,
        watch,
        known,
        shutdown,
        seen: 0,
        ended: false,
    };
    futures::stream::unfold(following, |mut f| async move {
        loop {
            if let Some(update) = f.pending.pop_front() {
                return Some((update, f));
            }
            if f.ended {
                return None;
            }
            f.step().await;
        }
    })
}

struct Following {
    app: Arc<App>,
    job_id: String,
    // Held until the stream ends, whichever way.
    _slot: StreamSlot,
    watch: JobWatch,
    /// Stored just now and not signalled since: queued, without events.
    known: bool,
    shutdown: Shutdown,
    seen: i64,
    pending: VecDeque<Update>,
    ended: bool,
}

impl Following {
    /// Waits for news, or reads the job and queues what is new.
    async fn step(&mut self) {
        if std::mem::take(&mut self.known) {
            // Nothing to read before news comes.
            self.wait().await;
            return;
        }
        // The events are read with (or after) the state: whatever finished the job wrote
        // its events first, so an ended job comes with all of them.
        // Woken with the job as the writer read it back: no read of our own.
        let read = match self.watch.take_snapshot() {
            Some(snapshot) => {
                // A job has one follower as a rule, and the writer let go of its copy: take
                // the job rather than copy its request and payloads.
                let (job, events) =
                    Arc::try_unwrap(snapshot).unwrap_or_else(|shared| (*shared).clone());
                let new = events.into_iter().filter(|e| e.seq > self.seen).collect();
                Ok(Some((job, new)))
            }
            None => Box::pin(self.app.store.job_with_events(&self.job_id, self.seen)).await,
        };
        let (job, events) = match read {
            Ok(Some(read)) => read,
            Ok(None) => {
                self.end(Update::Broken(format!("job {} disappeared", self.job_id)));
                return;
            }
            Err(e) => {
                self.end(Update::Broken(format!("the job store failed: {e}")));
                return;
            }
        };
        for e in events {
            self.seen = self.seen.max(e.seq);
            self.pending.push_back(Update::Progress(e));
        }
        if job.state.is_terminal() {
            self.end(Update::Finished(job));
            return;
        }
        self.wait().await;
    }

    /// Wakes on this job's signal; the timeout covers a writer on another replica whose
    /// notification was lost.
    async fn wait(&mut self) {
        tokio::select! {
            _ = tokio::time::timeout(self.app.follow_poll, self.watch.changed()) => {}
            () = self.shutdown.wait() => self.end(Update::ShuttingDown),
        }
    }

    fn end(&mut self, last: Update) {
        self.pending.push_back(last);
        self.ended = true;
    }
}
