//! Durable state of a tug server: the job queue (deploy requests split into one task per repository
//! branch), their progress events, and the leases that pick exactly one writer per branch.
//!
//! The git repository stays the source of truth for what runs where; this crate holds what git
//! cannot: requests that are accepted but not yet pushed, and their audit trail.
//!
//! Architecture invariant: a job returned by [`Store::enqueue`] is committed to the database; callers
//! acknowledge a request only after that call returns. The same holds for every write: `Ok` means
//! committed. The SQLite store keeps it under load with group commit: concurrent writes share one
//! transaction and one fsync, and each caller hears back only after that commit (see
//! [`SqliteStore`]'s module documentation). Batch methods ([`Store::append_events`],
//! [`Store::finish_tasks`], [`Store::postpone_tasks`]) do the same for the writes of one caller.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod audit;
mod postgres;
mod postgres_release;
mod release;
mod rows;
mod sqlite;
pub use audit::{AuditId, AuditLog, AuditQuery, AuditRecord, AuditResult, NewAuditRecord};
pub use postgres::{PgConfig, PgStore};
pub use release::{
    ArtifactWrite, BranchIndexUpdate, IndexedRelease, IndexedUnpin, NewArtifact, ReleaseQuery,
    ReleaseStore, RolloutState, StoredArtifact,
};
pub use sqlite::SqliteStore;

/// Identifier of a job (a UUIDv7 string, so ids sort by creation time).
pub type JobId = String;

/// Identifier of a task inside the store.
pub type TaskId = i64;

/// The unit of serialisation: one writer at a time per repository branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BranchKey {
    pub repository: String,
    pub branch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, no task claimed or finished yet.
    Queued,
    /// At least one task is claimed by a writer, or some tasks finished while others still wait
    /// for their writer.
    Running,
    /// Waiting for a retry after a transient error (remote unreachable…); `last_error` says why.
    Pending,
    /// Every task succeeded (landed or already up to date).
    Succeeded,
    /// At least one task failed and none is left to run.
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Pending,
        JobState::Succeeded,
        JobState::Failed,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Pending => "pending",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    /// The inverse of [`JobState::as_str`].
    pub fn parse(name: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// The state of a job whose tasks are in `tasks`. Every store derives a job's state with this
    /// function, in the same transaction as the task change, so all implementations agree.
    ///
    /// Running wins over pending (a writer is at work), pending over queued (the job already hit a
    /// transient error); a job ends only when none of its tasks can run any more. A job without
    /// tasks has nothing left to do and counts as succeeded (stores refuse to enqueue one).
    pub fn from_tasks(tasks: impl IntoIterator<Item = TaskState>) -> JobState {
        let (mut queued, mut running, mut pending, mut finished, mut failed) = (0, 0, 0, 0, 0);
        for state in tasks {
            match state {
                TaskState::Queued => queued += 1,
                TaskState::Running => running += 1,
                TaskState::Pending => pending += 1,
                TaskState::Succeeded => finished += 1,
                TaskState::Failed => {
                    finished += 1;
                    failed += 1;
                }
            }
        }
        if running > 0 {
            JobState::Running
        } else if pending > 0 {
            JobState::Pending
        } else if queued > 0 && finished > 0 {
            JobState::Running
        } else if queued > 0 {
            JobState::Queued
        } else if failed > 0 {
            JobState::Failed
        } else {
            JobState::Succeeded
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its first writer.
    Queued,
    /// Claimed by the writer named in [`Task::claimed_by`].
    Running,
    /// Waiting until [`Task::retry_at`] after a transient error.
    Pending,
    Succeeded,
    Failed,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::Pending,
        TaskState::Succeeded,
        TaskState::Failed,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Pending => "pending",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
        }
    }

    /// The inverse of [`TaskState::as_str`].
    pub fn parse(name: &str) -> Option<TaskState> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

/// A request to store. `tasks` holds one entry per (repository, branch) the request writes to: at
/// least one, and no branch twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    /// Client-chosen key: enqueuing the same key again returns the existing job.
    pub idempotency_key: Option<String>,
    /// What kind of request this is (`deploy`, `release`, …).
    pub kind: String,
    /// Who asked (token name, user).
    pub requested_by: String,
    /// The validated request, as the API received it (kept for audit).
    pub request: serde_json::Value,
    pub tasks: Vec<NewTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTask {
    pub branch: BranchKey,
    /// Everything the writer needs to apply this task again after a crash.
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub idempotency_key: Option<String>,
    pub kind: String,
    pub requested_by: String,
    pub state: JobState,
    pub request: serde_json::Value,
    pub created_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub job_id: JobId,
    pub branch: BranchKey,
    pub state: TaskState,
    pub payload: serde_json::Value,
    /// How many times a writer claimed it.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Outcome once finished: e.g. `{"commit": "<sha>"}` or `{"up_to_date": true}`, or
    /// `{"error": "<message>"}`.
    pub result: Option<serde_json::Value>,
    /// The lease owner that claimed it last (kept after it finishes, for the audit trail).
    #[serde(default)]
    pub claimed_by: Option<String>,
    /// While pending: when it becomes runnable again.
    #[serde(default)]
    pub retry_at: Option<jiff::Timestamp>,
    pub created_at: jiff::Timestamp,
    pub updated_at: jiff::Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enqueued {
    pub job: Job,
    /// False when the idempotency key matched an existing job.
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Info, Level::Warn, Level::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// The inverse of [`Level::as_str`].
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.as_str() == name)
    }
}

/// One line of a job's progress, streamed to clients and kept for `GET /jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub job_id: JobId,
    /// Dense per job, starting at 1: clients resume a stream with `after_seq`.
    pub seq: i64,
    pub at: jiff::Timestamp,
    pub level: Level,
    pub task_id: Option<TaskId>,
    pub message: String,
}

/// An event to append with [`Store::append_events`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub job_id: JobId,
    /// The task of `job_id` the event is about, if any.
    pub task_id: Option<TaskId>,
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobFilter {
    /// Jobs with at least one task writing to this repository.
    pub repository: Option<String>,
    pub state: Option<JobState>,
    /// At most this many jobs; [`JobFilter::DEFAULT_LIMIT`] when unset.
    pub limit: Option<u32>,
}

impl JobFilter {
    pub const DEFAULT_LIMIT: u32 = 100;
}

/// How a claimed task ended.
#[derive(Debug, Clone)]
pub enum TaskOutcome {
    Succeeded(serde_json::Value),
    Failed(String),
}

/// News from another replica sharing the database (see [`Store::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A branch got new tasks, or its lease was given up: a writer should look at it.
    Branch(BranchKey),
    /// A job has new events or changed state.
    Job(JobId),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the connection; `target` never holds a
    /// password.
    #[error("cannot connect to the database {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot open the database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The request cannot be stored as given (no tasks, a branch listed twice, an event naming a
    /// task of another job…).
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("job {0} does not exist")]
    UnknownJob(JobId),
    #[error("task {0} does not exist")]
    UnknownTask(TaskId),
    /// The task is no longer running under the lease that claimed it: another writer took the
    /// branch over (it runs the task again) or the task already ended.
    #[error("task {0} is not leased by this writer")]
    LeaseLost(TaskId),
    #[error("{owner} does not hold the lease of branch {} of {}", branch.branch, branch.repository)]
    BranchNotLeased { branch: BranchKey, owner: String },
    /// The transaction that carried this write together with others could not be committed (disk
    /// full, I/O error, the database closed…): none of its writes is stored.
    #[error("the group commit carrying this write failed, nothing of it is stored: {0}")]
    GroupCommit(#[source] Arc<sqlx::Error>),
    /// The store's writer thread is gone: nothing more can be written.
    #[error("the store's writer has stopped; the write was not stored")]
    WriterStopped,
    #[error("cannot start the store's writer thread: {source}")]
    WriterThread {
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub use tug_clock::{Clock, ManualClock, SystemClock};

/// Everything a tug server persists. Implementations must be safe to share between tasks and, for
/// the networked ones, between replicas: claims and branch leases are atomic in the database.
///
/// The life of a task: a writer takes the branch with [`Store::lock_branch`], [`Store::claim`]s
/// its runnable tasks, pushes, then ends each with [`Store::finish_task`] or
/// [`Store::postpone_task`] *before* [`Store::unlock_branch`], renewing the lease meanwhile. If
/// the writer dies, its lease expires and its running tasks are claimed again by the next owner.
///
/// Tasks of one branch run in insertion order. A pending task holds back the tasks queued behind
/// it on its branch until its retry time: a later deploy must never land before an earlier one
/// to the same branch, or the older image would win.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a job and its tasks in one transaction. With an idempotency key already known, returns
    /// the existing job and `created: false` (the new request is not stored, even if it differs).
    /// Fails with [`StoreError::Invalid`] for a job without tasks or with a branch listed twice.
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued>;

    async fn job(&self, id: &str) -> Result<Option<Job>>;

    /// One task, with its job id (none for an unknown id).
    async fn task(&self, id: TaskId) -> Result<Option<Task>>;

    /// Newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;

    /// Appends the next event of a job. Fails with [`StoreError::UnknownJob`], or
    /// [`StoreError::Invalid`] when `task_id` is not a task of this job.
    async fn append_event(
        &self,
        job_id: &str,
        task_id: Option<TaskId>,
        level: Level,
        message: &str,
    ) -> Result<Event>;

    /// Appends several events, in order, all or none: fails like [`Store::append_event`] for the
    /// first event that cannot be stored, and then stores none of them. Returns them numbered.
    ///
    /// The default appends one by one (an implementation without transactions keeps the events
    /// before the failing one); the SQLite store writes them in one transaction.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        let mut appended = Vec::with_capacity(events.len());
        for event in events {
            appended.push(
                self.append_event(&event.job_id, event.task_id, event.level, &event.message)
                    .await?,
            );
        }
        Ok(appended)
    }

    /// Events of a job with `seq > after_seq`, in order (none for an unknown job).
    async fn events(&self, job_id: &str, after_seq: i64) -> Result<Vec<Event>>;

    /// [`Store::job`] and then [`Store::events`] of the same job: the events are at least as new
    /// as the job, so a job read as ended comes with every event written before it ended. What a
    /// follower reads each time its job changes; a store may answer both in one read.
    async fn job_with_events(&self, id: &str, after_seq: i64) -> Result<Option<(Job, Vec<Event>)>> {
        let Some(job) = self.job(id).await? else {
            return Ok(None);
        };
        let events = self.events(id, after_seq).await?;
        Ok(Some((job, events)))
    }

    /// [`Store::job_with_events`] with every event, for each job of `ids` that exists, in no
    /// particular order: what the followers of a batch's jobs need once it is recorded.
    async fn jobs_with_events(&self, ids: &[JobId]) -> Result<Vec<(Job, Vec<Event>)>> {
        let mut read = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.job_with_events(id, 0).await? {
                read.push(job);
            }
        }
        Ok(read)
    }

    /// Branches with at least one task that can run now: queued, pending whose retry time has come,
    /// or running under an expired lease (its writer died) — unless a pending task that is not due
    /// yet comes before it on its branch.
    async fn runnable_branches(&self) -> Result<Vec<BranchKey>>;

    /// Takes (or renews) the writer lease of a branch until now + `ttl`. False when another owner
    /// holds a lease that has not expired. `owner` must be unique per process run: a restarted
    /// process must not inherit the running tasks of its previous life.
    async fn lock_branch(&self, branch: &BranchKey, owner: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease up (only if `owner` holds it).
    async fn unlock_branch(&self, branch: &BranchKey, owner: &str) -> Result<()>;

    /// Claims up to `max` runnable tasks of a branch, oldest first, marking them running and
    /// incrementing their attempts. Tasks this owner already runs are not claimed again; running
    /// tasks of a previous owner are. Fails with [`StoreError::BranchNotLeased`] unless `owner`
    /// holds a live lease on the branch.
    async fn claim(&self, branch: &BranchKey, owner: &str, max: usize) -> Result<Vec<Task>>;

    /// Records the end of a claimed task and recomputes its job's state. Fails with
    /// [`StoreError::LeaseLost`] when the task is not running or the branch lease no longer names
    /// the owner that claimed it (another writer took over and will run the task again).
    async fn finish_task(&self, task_id: TaskId, outcome: TaskOutcome) -> Result<()>;

    /// Finishes several claimed tasks (typically all the tasks of one push), each like
    /// [`Store::finish_task`], and appends each task's events to its job, naming the task. Each
    /// task succeeds or fails alone: the inner results, in the order of `outcomes`, say which (a
    /// refused task stores neither its outcome nor its events). The outer error means the store
    /// itself failed; the SQLite store then stored none of the batch.
    ///
    /// The SQLite store does all of it in one transaction and derives each job's state once.
    async fn finish_tasks(
        &self,
        outcomes: Vec<(TaskId, TaskOutcome, Vec<(Level, String)>)>,
    ) -> Result<Vec<Result<()>>> {
        let mut results = Vec::with_capacity(outcomes.len());
        for (task_id, outcome, events) in outcomes {
            let job_id = match self.task(task_id).await? {
                Some(task) => task.job_id,
                None => {
                    results.push(Err(StoreError::UnknownTask(task_id)));
                    continue;
                }
            };
            if let Err(refused) = self.finish_task(task_id, outcome).await {
                results.push(Err(refused));
                continue;
            }
            let events = events
                .into_iter()
                .map(|(level, message)| NewEvent {
                    job_id: job_id.clone(),
                    task_id: Some(task_id),
                    level,
                    message,
                })
                .collect();
            self.append_events(events).await?;
            results.push(Ok(()));
        }
        Ok(results)
    }

    /// Puts a claimed task back to `pending` with the error that stopped it; it becomes runnable
    /// again after `retry_in`. Fails like [`Store::finish_task`] when the lease was lost.
    async fn postpone_task(&self, task_id: TaskId, error: &str, retry_in: Duration) -> Result<()>;

    /// Postpones several claimed tasks, each with its error, all until `retry_in` from now. Each
    /// task succeeds or fails alone, like in [`Store::finish_tasks`].
    async fn postpone_tasks(
        &self,
        tasks: Vec<(TaskId, String)>,
        retry_in: Duration,
    ) -> Result<Vec<Result<()>>> {
        let mut results = Vec::with_capacity(tasks.len());
        for (task_id, error) in tasks {
            results.push(self.postpone_task(task_id, &error, retry_in).await);
        }
        Ok(results)
    }

    /// Number of unfinished (queued, running, pending) tasks per branch, for metrics; branches
    /// with none are left out.
    async fn queue_depths(&self) -> Result<Vec<(BranchKey, u64)>>;

    /// How many tasks of `branch` are waiting to be claimed: queued, or pending with their retry
    /// time come. A read that locks and writes nothing (on PostgreSQL no commit to flush), for
    /// a writer deciding how many to wait for; [`Store::claim`] decides what it gets.
    async fn waiting(&self, branch: &BranchKey) -> Result<u64>;

    /// Marks the notifications of a finished job on `channel` (`job`, `release`, …) as sent.
    /// True for exactly one caller, however many replicas ask: the one that sends them. False
    /// for a job that is unknown, not finished, or already claimed on that channel.
    async fn claim_notification(&self, job_id: &str, channel: &str) -> Result<bool>;

    /// Succeeds when the database answers (health checks).
    async fn ping(&self) -> Result<()>;

    /// Changes made by other processes sharing the database, as they commit. `None` for a
    /// store only one process uses (SQLite): in-process signals tell everything then.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>> {
        None
    }
}

impl StoreError {
    /// Whether the database itself is unreachable (down, restarting, out of connections) rather
    /// than the request being wrong: callers answer "unavailable, retry" instead of "internal".
    pub fn is_unavailable(&self) -> bool {
        let sqlx = match self {
            StoreError::Connect { .. } | StoreError::WriterStopped => return true,
            StoreError::Database(error) => error,
            StoreError::GroupCommit(error) => error.as_ref(),
            _ => return false,
        };
        matches!(
            sqlx,
            sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
        ) || matches!(sqlx, sqlx::Error::Database(db) if db.code().is_some_and(|code| {
            // 57P01..03: admin shutdown, crash shutdown, cannot connect now; 08xxx: connection
            // exceptions; 53300: too many connections.
            code.starts_with("57P") || code.starts_with("08") || code == "53300"
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn job_state_follows_the_most_active_task() {
        let cases: &[(&[TaskState], JobState)] = &[
            (&[Queued], JobState::Queued),
            (&[Queued, Queued], JobState::Queued),
            (&[Running, Queued], JobState::Running),
            (&[Running, Pending], JobState::Running),
            (&[Running, Failed], JobState::Running),
            (&[Pending, Queued], JobState::Pending),
            (&[Pending, Succeeded], JobState::Pending),
            (&[Pending, Failed], JobState::Pending),
            (&[Succeeded, Queued], JobState::Running),
            (&[Failed, Queued], JobState::Running),
            (&[Failed, Succeeded], JobState::Failed),
            (&[Failed], JobState::Failed),
            (&[Succeeded, Succeeded], JobState::Succeeded),
        ];
        for (tasks, expected) in cases {
            assert_eq!(
                JobState::from_tasks(tasks.iter().copied()),
                *expected,
                "tasks {tasks:?}"
            );
        }
    }

    #[test]
    fn state_names_round_trip_and_match_serde() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.as_str())
            );
        }
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.as_str())
            );
        }
        for level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
            assert_eq!(
                serde_json::to_value(level).unwrap(),
                serde_json::Value::from(level.as_str())
            );
        }
        assert_eq!(JobState::parse("done"), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now().as_millisecond(), start.as_millisecond() + 1500);
        clock.set(start);
        assert_eq!(clock.now(), start);
    }
}
