//! Durable state of a tug server: the job queue (deploy requests split into one task per repository
//! branch), their progress events, and the leases that pick exactly one writer per branch.
//!
//! The git repository stays the source of truth for what runs where; this crate holds what git
//! cannot: requests that are accepted but not yet pushed, and their audit trail.
//!
//! Architecture invariant: a job returned by [`Store::enqueue`] is committed to the database; callers
//! acknowledge a request only after that call returns.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod sqlite;
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
    /// Accepted, no task finished yet.
    Queued,
    /// At least one task is claimed by a writer.
    Running,
    /// Waiting for a retry after a transient error (remote unreachable…); `last_error` says why.
    Pending,
    /// Every task succeeded (landed or already up to date).
    Succeeded,
    /// At least one task failed and none is left to run.
    Failed,
}

impl JobState {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    Pending,
    Succeeded,
    Failed,
}

/// A request to store. `tasks` holds one entry per (repository, branch) the request writes to.
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub job_id: JobId,
    pub branch: BranchKey,
    pub state: TaskState,
    pub payload: serde_json::Value,
    /// How many times a writer claimed it.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Outcome once finished: e.g. `{"commit": "<sha>"}` or `{"up_to_date": true}`, or the error.
    pub result: Option<serde_json::Value>,
    pub created_at: jiff::Timestamp,
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

/// One line of a job's progress, streamed to clients and kept for `GET /jobs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub job_id: JobId,
    /// Dense per job, starting at 1: clients resume a stream with `after_seq`.
    pub seq: i64,
    pub at: jiff::Timestamp,
    pub level: Level,
    pub task_id: Option<TaskId>,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobFilter {
    pub repository: Option<String>,
    pub state: Option<JobState>,
    pub limit: Option<u32>,
}

/// How a claimed task ended.
#[derive(Debug, Clone)]
pub enum TaskOutcome {
    Succeeded(serde_json::Value),
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("task {0} is not leased by this writer")]
    LeaseLost(TaskId),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything a tug server persists. Implementations must be safe to share between tasks and, for
/// the networked ones, between replicas: claims and branch leases are atomic in the database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a job and its tasks in one transaction. With an idempotency key already known, returns
    /// the existing job and `created: false` (the new request is not stored).
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued>;

    async fn job(&self, id: &str) -> Result<Option<Job>>;

    /// Newest first.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;

    async fn append_event(
        &self,
        job_id: &str,
        task_id: Option<TaskId>,
        level: Level,
        message: &str,
    ) -> Result<Event>;

    /// Events of a job with `seq > after_seq`, in order.
    async fn events(&self, job_id: &str, after_seq: i64) -> Result<Vec<Event>>;

    /// Branches with at least one task that can run now: queued, pending whose retry time has come,
    /// or running under an expired lease (its writer died).
    async fn runnable_branches(&self) -> Result<Vec<BranchKey>>;

    /// Takes (or renews) the writer lease of a branch. False when another live owner holds it.
    async fn lock_branch(&self, branch: &BranchKey, owner: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease up (only if `owner` holds it).
    async fn unlock_branch(&self, branch: &BranchKey, owner: &str) -> Result<()>;

    /// Claims up to `max` runnable tasks of a branch, oldest first, marking them running and
    /// incrementing their attempts. The caller must hold the branch lease.
    async fn claim(&self, branch: &BranchKey, owner: &str, max: usize) -> Result<Vec<Task>>;

    /// Records the end of a claimed task and recomputes its job's state.
    async fn finish_task(&self, task_id: TaskId, outcome: TaskOutcome) -> Result<()>;

    /// Puts a claimed task back to `pending` with the error that stopped it; it becomes runnable
    /// again after `retry_in`.
    async fn postpone_task(&self, task_id: TaskId, error: &str, retry_in: Duration) -> Result<()>;

    /// Number of unfinished tasks per branch (for metrics).
    async fn queue_depths(&self) -> Result<Vec<(BranchKey, u64)>>;
}
