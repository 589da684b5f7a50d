//! Telling the streams that follow a job that it has news. Each stream watches its own job, so
//! recording a batch of N jobs wakes N streams, not every waiting stream N times: with thousands
//! of callers waiting under load, a broadcast to all would cost work (and wake-ups) quadratic in
//! the queue. Listeners that want every job (release notifications) subscribe to `all`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, broadcast};
use tug_store::{Event, Job};

/// A job and all its events as read right after a change was committed: a follower woken by
/// the change can use it instead of reading the store again.
pub type Snapshot = Arc<(Job, Vec<Event>)>;

/// How many job ids a listener of every job may fall behind before it misses some.
const ALL_CAPACITY: usize = 1024;

pub struct JobSignals {
    watchers: Mutex<HashMap<String, Vec<Arc<Slot>>>>,
    all: broadcast::Sender<String>,
}

impl JobSignals {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            watchers: Mutex::new(HashMap::new()),
            all: broadcast::channel(ALL_CAPACITY).0,
        })
    }

    /// Watches `job_id` until the returned watch is dropped.
    pub fn watch(self: &Arc<Self>, job_id: &str) -> JobWatch {
        let slot = Arc::new(Slot::default());
        self.lock()
            .entry(job_id.to_owned())
            .or_default()
            .push(slot.clone());
        JobWatch {
            signals: self.clone(),
            job_id: job_id.to_owned(),
            slot,
        }
    }

    /// Every job id sent from now on.
    pub fn subscribe_all(&self) -> broadcast::Receiver<String> {
        self.all.subscribe()
    }

    /// `job_id` has new events or ended. A watcher that is not waiting right now keeps the
    /// signal for its next wait, so nothing sent between two reads is lost.
    pub fn send(&self, job_id: &str) {
        self.send_with(job_id, None);
    }

    /// [`JobSignals::send`] with the job as read after the change. A later signal without a
    /// snapshot takes it back, so a watcher never uses one older than its news.
    pub fn send_read(&self, snapshot: Snapshot) {
        let job_id = snapshot.0.id.clone();
        self.send_with(&job_id, Some(snapshot));
    }

    fn send_with(&self, job_id: &str, snapshot: Option<Snapshot>) {
        if let Some(watchers) = self.lock().get(job_id) {
            for slot in watchers {
                *slot.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot.clone();
                slot.notify.notify_one();
            }
        }
        // Nobody listening to every job is fine.
        let _ = self.all.send(job_id.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<Slot>>>> {
        // Each critical section is a single insert, lookup or removal: a panic elsewhere cannot
        // leave the map half-updated.
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn watched(&self) -> usize {
        self.lock().len()
    }
}

/// What one watcher was told: woken, and maybe the job as read after the change.
#[derive(Default)]
struct Slot {
    notify: Notify,
    snapshot: Mutex<Option<Snapshot>>,
}

/// One stream's interest in one job.
pub struct JobWatch {
    signals: Arc<JobSignals>,
    job_id: String,
    slot: Arc<Slot>,
}

impl JobWatch {
    /// Resolves at the next signal for the job (at once if one came since the last wait).
    pub async fn changed(&self) {
        self.slot.notify.notified().await;
    }

    /// The job as read after the last signal, when that signal came with it (taken once).
    pub fn take_snapshot(&self) -> Option<Snapshot> {
        self.slot
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut watchers = self.signals.lock();
        if let Some(list) = watchers.get_mut(&self.job_id) {
            list.retain(|n| !Arc::ptr_eq(n, &self.slot));
            if list.is_empty() {
                watchers.remove(&self.job_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_watch_hears_its_own_job_only_and_keeps_a_signal_sent_between_waits() {
        let signals = JobSignals::new();
        let a = signals.watch("job-a");
        let b = signals.watch("job-b");
        signals.send("job-a");
        // Sent before anyone waited: the next wait returns at once.
        tokio::time::timeout(Duration::from_secs(5), a.changed())
            .await
            .expect("job-a's watch was signalled");
        let b_heard = tokio::time::timeout(Duration::from_millis(50), b.changed()).await;
        assert!(b_heard.is_err(), "job-b's watch woke for job-a");
    }

    #[tokio::test]
    async fn every_watcher_of_a_job_hears_it_and_listeners_of_all_hear_everything() {
        let signals = JobSignals::new();
        let mut all = signals.subscribe_all();
        let first = signals.watch("job");
        let second = signals.watch("job");
        signals.send("job");
        for watch in [&first, &second] {
            tokio::time::timeout(Duration::from_secs(5), watch.changed())
                .await
                .expect("both watchers were signalled");
        }
        assert_eq!(all.recv().await.unwrap(), "job");
    }

    fn snapshot(id: &str, state: tug_store::JobState) -> Snapshot {
        let at = jiff::Timestamp::UNIX_EPOCH;
        Arc::new((
            Job {
                id: id.to_owned(),
                idempotency_key: None,
                kind: "deploy".to_owned(),
                requested_by: "ci".to_owned(),
                state,
                request: serde_json::Value::Null,
                created_at: at,
                updated_at: at,
                tasks: Vec::new(),
            },
            Vec::new(),
        ))
    }

    #[tokio::test]
    async fn a_snapshot_comes_with_its_signal_once_and_a_later_plain_signal_takes_it_back() {
        use tug_store::JobState;
        let signals = JobSignals::new();
        let watch = signals.watch("job");
        let other = signals.watch("other");
        signals.send_read(snapshot("job", JobState::Succeeded));
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("signalled");
        let taken = watch.take_snapshot().expect("the snapshot");
        assert_eq!(taken.0.state, JobState::Succeeded);
        assert!(watch.take_snapshot().is_none(), "taken once");
        assert!(other.take_snapshot().is_none(), "only for its own job");

        // News after the snapshot was read: the watcher must read the store itself.
        signals.send_read(snapshot("job", JobState::Running));
        signals.send("job");
        assert!(watch.take_snapshot().is_none());
    }

    #[test]
    fn dropping_the_last_watch_forgets_the_job() {
        let signals = JobSignals::new();
        let first = signals.watch("job");
        let second = signals.watch("job");
        drop(first);
        assert_eq!(signals.watched(), 1);
        drop(second);
        assert_eq!(signals.watched(), 0);
        signals.send("job");
    }
}
