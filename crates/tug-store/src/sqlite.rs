//! The SQLite store: one database file under the server's data directory.
//!
//! # Group commit
//!
//! With `synchronous=FULL` every commit waits for one fsync of the WAL, which costs far more than
//! the statements of a write. So every write of the [`Store`] trait goes through one writer (a
//! task on a thread of its own): it takes every write waiting in its queue (at most
//! [`GROUP_COMMIT_MAX`]), runs them in ONE `BEGIN IMMEDIATE … COMMIT` transaction, each inside
//! its own savepoint, and answers the callers only after the COMMIT returned. Under load the
//! fsync is shared by the whole group; an idle store commits a lone write at once. Only when
//! several requests' writes were already waiting (requests arrive faster than groups commit)
//! does the writer gather for a few milliseconds more ([`GROUP_LINGER`]), so that fewer, larger
//! groups share the pages and the fsync every commit costs; what a batch waits for (claims,
//! results, leases) never waits.
//!
//! Invariant, acknowledged ⇒ committed: a write returns `Ok` only once the transaction holding it
//! is on disk. A write that fails on its own (an unknown task, a lost lease, an unknown job) is
//! rolled back to its savepoint and fails alone; the rest of its group commits. If the group as a
//! whole cannot commit, every write in it fails with [`StoreError::GroupCommit`] and none is
//! stored.
//!
//! Order: the writes of one group were all in flight at the same time, so any serial order of
//! them is one their callers could have observed. The writer runs enqueues first, then event
//! appends, then everything else, each kind in arrival order; consecutive writes of the first two
//! kinds are written together, a few statements for the whole run (if such a run fails, it is
//! rolled back and its writes run one by one, so only the faulty one fails). Two enqueues with
//! one idempotency key in one group: the later one finds the job of the earlier one. A write
//! issued after another one returned always lands in the same or a later group, after it.
//!
//! The write pool holds exactly one connection, which the writer borrows for one group at a
//! time; statements run through [`SqliteStore::pool`] queue for it between groups instead of
//! spinning in SQLite's busy handler. The busy timeout only matters when another process writes
//! to the same file. Reads use their own pool and, thanks to WAL, never wait for the writer.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::audit::{AuditRecord, NewAuditRecord, detail_text, stored};
use crate::rows::{
    LeaseCheck, check_new_job, created_job, event_from_row, job_from_row, json_text, queued_task,
    still_leased, task_from_row, timestamp,
};
use crate::{
    BranchKey, Clock, Enqueued, Event, Job, JobFilter, JobId, JobState, Level, NewEvent, NewJob,
    Result, Store, StoreError, SystemClock, Task, TaskId, TaskOutcome, TaskState,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers run concurrently under WAL; more than a handful buys nothing on a local file.
const READ_CONNECTIONS: u32 = 4;

/// Page cache of each read connection, in KiB (SQLite's default is 2,000 per connection). Reads
/// look up a job and its events by key, a few pages each, and the file's pages stay in the
/// operating system's cache; SQLite's caches were 4 MiB of the server's heap at the peak of a
/// short overload run, and they grow with the file up to 2 MB a connection.
const READ_CACHE_KIB: u32 = 512;

/// SQLite's default limit on bound parameters is 32766; stay far below it in `IN (…)` lists.
const IN_LIST_CHUNK: usize = 500;

/// Most writes committed together. Bounds how long the last write of a group waits for the
/// others' statements (a few milliseconds), while already sharing one fsync between hundreds.
const GROUP_COMMIT_MAX: usize = 256;

/// How long the writer gathers more writes into a group when several requests' writes were
/// already waiting for it, at most. Every commit writes the last pages of the tables and their
/// indexes again and syncs them: under a steady stream of requests fewer, larger groups cost
/// less per write (at 1,000 deploy requests a second, 2–15 % of the server's CPU per request
/// in alternating runs). A lone write commits at once.
const GROUP_LINGER: Duration = Duration::from_millis(6);

/// The gathering ends once no write arrived for this long: a burst of requests (the callers of
/// a batch coming back at once) is in, and waiting longer only delays it.
const GROUP_QUIET: Duration = Duration::from_millis(2);

/// A group this large shares its commit well enough: it goes without gathering more.
const GROUP_SHARED: usize = 32;

/// Writes waiting for the writer beyond this make their callers wait to queue: back
/// pressure instead of unbounded memory when requests arrive faster than the disk syncs.
const WRITE_QUEUE: usize = 4 * GROUP_COMMIT_MAX;

/// A task running under the lease that claimed it — same owner, same epoch — for an UPDATE of
/// `tasks`. An expired lease that nobody took over still counts: the writer's push happened,
/// and recording it beats running the task again.
const LEASED: &str = "state = 'running' AND (claimed_by, claim_epoch) = (SELECT l.owner, l.epoch \
                      FROM branch_leases AS l \
                      WHERE l.repository = tasks.repository AND l.branch = tasks.branch)";

/// Unfinished task states, as the partial index `tasks_unfinished_by_branch` spells them (SQLite
/// only uses a partial index when the query repeats its condition).
const UNFINISHED: &str = "state IN ('queued', 'running', 'pending')";

macro_rules! job_columns {
    () => {
        "id, idempotency_key, kind, requested_by, state, request, created_at, updated_at"
    };
}

macro_rules! task_columns {
    () => {
        "id, job_id, repository, branch, state, payload, attempts, last_error, result, \
         not_before, claimed_by, created_at, updated_at"
    };
}

/// [`Store`] on a SQLite file, in WAL mode with `synchronous=FULL`, writing through group commit
/// (see the module documentation): a job is on disk when [`Store::enqueue`] returns.
///
/// Opening a store starts its writer thread; dropping the store lets the writer finish the
/// writes already queued, then stop.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    clock: Arc<dyn Clock>,
    writes: mpsc::Sender<Write>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("writer", &self.writer)
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file at `path` and brings its schema up to
    /// date.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with_clock(path, Arc::new(SystemClock)).await
    }

    /// Like [`SqliteStore::open`], reading the time from `clock` (tests move time by hand).
    pub async fn open_with_clock(path: &Path, clock: Arc<dyn Clock>) -> Result<Self> {
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Acknowledged means on disk: every commit syncs the WAL.
            .synchronous(SqliteSynchronous::Full);
        // A group's savepoints copy every page they change into a statement journal, which
        // SQLite moves to a temporary file past 64 KiB, a size a group of a few writes reaches
        // (each write touches the last pages of three tables and their indexes). Kept in memory
        // it costs a copy instead of a file created, written and deleted for every group.
        let options = options.pragma("temp_store", "memory");
        // WAL is a property of the file; switching needs an exclusive lock, so only the writer
        // asks for it, once, before any reader connects.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // A local file does not drop connections: pinging it before every group only adds a
            // round trip to the writer's critical path.
            .test_before_acquire(false)
            .connect_with(
                options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(open_error)?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options.pragma("cache_size", format!("-{READ_CACHE_KIB}")))
            .await
            .map_err(open_error)?;
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let (pool, writer_clock) = (writer.clone(), Arc::clone(&clock));
        // The writer awaits one round trip to SQLite's thread per statement. On the server's
        // runtime each of those wake-ups would queue behind every request task; on a thread of
        // its own it resumes at once, which is what keeps groups short under load.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::WriterThread { source })?;
        std::thread::Builder::new()
            .name("tug-store-writer".to_owned())
            .spawn(move || runtime.block_on(run_writer(pool, writer_clock, queue)))
            .map_err(|source| StoreError::WriterThread { source })?;
        tracing::debug!(path = %path.display(), "job store open");
        Ok(SqliteStore {
            writer,
            reader,
            clock,
            writes,
        })
    }

    /// The pool for tables kept next to the queue (artifacts, releases). It holds the single
    /// write connection, shared with the group commit of the job queue: every write and
    /// read-modify-write goes through it, each transaction on it is committed (and synced) on its
    /// own, and one held open stalls every write of the store, so keep them short.
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// A pool for plain reads; under WAL they never wait for writers.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes every connection, checkpointing the WAL into the database file. Writes queued
    /// after this fail with [`StoreError::GroupCommit`].
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Appends an audit record in the writer's next group commit.
    pub(crate) async fn append_audit_in_group(
        &self,
        record: NewAuditRecord,
    ) -> Result<AuditRecord> {
        self.submit(|reply| Write::AppendAudit { record, reply })
            .await
    }

    /// Hands a write to the writer and waits until its group is committed.
    async fn submit<T>(&self, write: impl FnOnce(Reply<T>) -> Write) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(write(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        // Validation and serialisation happen here, on the caller's task, to keep the writer's
        // critical path down to the statements.
        let job = PreparedJob::new(job)?;
        self.submit(|reply| Write::Enqueue { job, reply }).await
    }

    async fn job(&self, id: &str) -> Result<Option<Job>> {
        // One read transaction: the job row and its tasks come from the same snapshot.
        let mut tx = self.reader.begin().await?;
        let job = load_job(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let limit = filter.limit.unwrap_or(JobFilter::DEFAULT_LIMIT);
        let mut query =
            QueryBuilder::<Sqlite>::new(concat!("SELECT ", job_columns!(), " FROM jobs WHERE 1"));
        if let Some(repository) = &filter.repository {
            query
                .push(" AND id IN (SELECT job_id FROM tasks WHERE repository = ")
                .push_bind(repository)
                .push(")");
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit));

        let mut tx = self.reader.begin().await?;
        let rows = query.build().fetch_all(&mut *tx).await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let mut tasks_by_job: std::collections::HashMap<String, Vec<Task>> =
            std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IN_LIST_CHUNK) {
            let mut query = QueryBuilder::<Sqlite>::new(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE job_id IN ("
            ));
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            query.push(") ORDER BY id");
            for row in query.build().fetch_all(&mut *tx).await? {
                let task = task_from_row(&row)?;
                tasks_by_job
                    .entry(task.job_id.clone())
                    .or_default()
                    .push(task);
            }
        }
        tx.commit().await?;

        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let tasks = tasks_by_job.remove(&id).unwrap_or_default();
                job_from_row(row, tasks)
            })
            .collect()
    }

    async fn append_event(
        &self,
        job_id: &str,
        task_id: Option<TaskId>,
        level: Level,
        message: &str,
    ) -> Result<Event> {
        let events = vec![NewEvent {
            job_id: job_id.to_owned(),
            task_id,
            level,
            message: message.to_owned(),
        }];
        let mut appended = self.append_events(events).await?;
        appended.pop().ok_or_else(|| {
            StoreError::Corrupt(format!("the event appended to job {job_id} went missing"))
        })
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(|reply| Write::AppendEvents { events, reply })
            .await
    }

    async fn events(&self, job_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT job_id, seq, at, level, task_id, message FROM events \
             WHERE job_id = ?1 AND seq > ?2 ORDER BY seq",
        )
        .bind(job_id)
        .bind(after_seq)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn jobs_with_events(&self, ids: &[JobId]) -> Result<Vec<(Job, Vec<Event>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Three statements for the whole batch in one read transaction (one snapshot), not
        // three per job.
        let ids = serde_json::Value::from(ids.to_vec()).to_string();
        let mut tx = self.reader.begin().await?;
        let jobs = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id IN (SELECT value FROM json_each(?1))"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let tasks = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE job_id IN (SELECT value FROM json_each(?1)) ORDER BY id"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let events = sqlx::query(
            "SELECT job_id, seq, at, level, task_id, message FROM events \
             WHERE job_id IN (SELECT value FROM json_each(?1)) ORDER BY job_id, seq",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut tasks_by_job: std::collections::HashMap<String, Vec<Task>> =
            std::collections::HashMap::new();
        for row in &tasks {
            let task = task_from_row(row)?;
            tasks_by_job
                .entry(task.job_id.clone())
                .or_default()
                .push(task);
        }
        let mut events_by_job: std::collections::HashMap<String, Vec<Event>> =
            std::collections::HashMap::new();
        for row in &events {
            let event = event_from_row(row)?;
            events_by_job
                .entry(event.job_id.clone())
                .or_default()
                .push(event);
        }
        jobs.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                let tasks = tasks_by_job.remove(&id).unwrap_or_default();
                let job = job_from_row(row, tasks)?;
                Ok((job, events_by_job.remove(&id).unwrap_or_default()))
            })
            .collect()
    }

    async fn runnable_branches(&self) -> Result<Vec<BranchKey>> {
        let now = self.now_ms();
        // Per branch: the oldest task someone may claim must come before the oldest pending task
        // that is not due yet (tasks of a branch run in order). A running task is claimable when
        // its claimant no longer holds a live lease.
        let rows = sqlx::query(&format!(
            "SELECT t.repository, t.branch FROM tasks AS t \
             LEFT JOIN branch_leases AS l \
               ON l.repository = t.repository AND l.branch = t.branch \
             WHERE t.{UNFINISHED} \
             GROUP BY t.repository, t.branch \
             HAVING MIN(CASE WHEN t.state = 'queued' \
                               OR (t.state = 'pending' AND t.not_before <= ?1) \
                               OR (t.state = 'running' AND (l.owner IS NULL \
                                                            OR l.expires_at <= ?1 \
                                                            OR l.owner <> t.claimed_by)) \
                             THEN t.id END) \
                  < COALESCE(MIN(CASE WHEN t.state = 'pending' AND t.not_before > ?1 \
                                      THEN t.id END), {max}) \
             ORDER BY t.repository, t.branch",
            max = i64::MAX,
        ))
        .bind(now)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(BranchKey {
                    repository: row.try_get("repository")?,
                    branch: row.try_get("branch")?,
                })
            })
            .collect()
    }

    async fn lock_branch(&self, branch: &BranchKey, owner: &str, ttl: Duration) -> Result<bool> {
        let (branch, owner) = (branch.clone(), owner.to_owned());
        self.submit(|reply| Write::LockBranch {
            branch,
            owner,
            ttl,
            reply,
        })
        .await
    }

    async fn unlock_branch(&self, branch: &BranchKey, owner: &str) -> Result<()> {
        let (branch, owner) = (branch.clone(), owner.to_owned());
        self.submit(|reply| Write::UnlockBranch {
            branch,
            owner,
            reply,
        })
        .await
    }

    async fn claim(&self, branch: &BranchKey, owner: &str, max: usize) -> Result<Vec<Task>> {
        let (branch, owner) = (branch.clone(), owner.to_owned());
        self.submit(|reply| Write::Claim {
            branch,
            owner,
            max,
            reply,
        })
        .await
    }

    async fn finish_task(&self, task_id: TaskId, outcome: TaskOutcome) -> Result<()> {
        let mut results = self
            .finish_tasks(vec![(task_id, outcome, Vec::new())])
            .await?;
        results.pop().unwrap_or(Err(StoreError::Corrupt(format!(
            "the outcome of finishing task {task_id} went missing"
        ))))
    }

    async fn finish_tasks(
        &self,
        outcomes: Vec<(TaskId, TaskOutcome, Vec<(Level, String)>)>,
    ) -> Result<Vec<Result<()>>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let tasks = outcomes
            .into_iter()
            .map(|(task_id, outcome, events)| (task_id, FinishedTask::new(outcome, events)))
            .collect();
        self.submit(|reply| Write::FinishTasks { tasks, reply })
            .await
    }

    async fn postpone_task(&self, task_id: TaskId, error: &str, retry_in: Duration) -> Result<()> {
        let mut results = self
            .postpone_tasks(vec![(task_id, error.to_owned())], retry_in)
            .await?;
        results.pop().unwrap_or(Err(StoreError::Corrupt(format!(
            "the outcome of postponing task {task_id} went missing"
        ))))
    }

    async fn postpone_tasks(
        &self,
        tasks: Vec<(TaskId, String)>,
        retry_in: Duration,
    ) -> Result<Vec<Result<()>>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(|reply| Write::PostponeTasks {
            tasks,
            retry_in,
            reply,
        })
        .await
    }

    async fn claim_notification(&self, job_id: &str, channel: &str) -> Result<bool> {
        let claimed = sqlx::query(
            "INSERT INTO notifications_sent (job_id, channel, at) \
             SELECT id, ?2, ?3 FROM jobs WHERE id = ?1 AND state IN ('succeeded', 'failed') \
             ON CONFLICT (job_id, channel) DO NOTHING",
        )
        .bind(job_id)
        .bind(channel)
        .bind(self.now_ms())
        .execute(&self.writer)
        .await?;
        Ok(claimed.rows_affected() > 0)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn waiting(&self, branch: &BranchKey) -> Result<u64> {
        // `{UNFINISHED}` lets the partial index of unfinished tasks answer.
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM tasks WHERE repository = ?1 AND branch = ?2 \
               AND {UNFINISHED} \
               AND (state = 'queued' OR (state = 'pending' AND not_before <= ?3))"
        ))
        .bind(&branch.repository)
        .bind(&branch.branch)
        .bind(self.now_ms())
        .fetch_one(&self.reader)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn queue_depths(&self) -> Result<Vec<(BranchKey, u64)>> {
        let rows = sqlx::query(&format!(
            "SELECT repository, branch, COUNT(*) AS depth FROM tasks WHERE {UNFINISHED} \
             GROUP BY repository, branch ORDER BY repository, branch"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let branch = BranchKey {
                    repository: row.try_get("repository")?,
                    branch: row.try_get("branch")?,
                };
                let depth: i64 = row.try_get("depth")?;
                let depth = u64::try_from(depth).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "negative queue depth {depth} for branch {} of {}",
                        branch.branch, branch.repository
                    ))
                })?;
                Ok((branch, depth))
            })
            .collect()
    }
}

/// Where the writer sends the outcome of one write.
type Reply<T> = oneshot::Sender<Result<T>>;

/// One write waiting for the writer, with its caller's reply channel.
enum Write {
    Enqueue {
        job: PreparedJob,
        reply: Reply<Enqueued>,
    },
    AppendEvents {
        events: Vec<NewEvent>,
        reply: Reply<Vec<Event>>,
    },
    AppendAudit {
        record: NewAuditRecord,
        reply: Reply<AuditRecord>,
    },
    LockBranch {
        branch: BranchKey,
        owner: String,
        ttl: Duration,
        reply: Reply<bool>,
    },
    UnlockBranch {
        branch: BranchKey,
        owner: String,
        reply: Reply<()>,
    },
    Claim {
        branch: BranchKey,
        owner: String,
        max: usize,
        reply: Reply<Vec<Task>>,
    },
    FinishTasks {
        tasks: Vec<(TaskId, Result<FinishedTask>)>,
        reply: Reply<Vec<Result<()>>>,
    },
    PostponeTasks {
        tasks: Vec<(TaskId, String)>,
        retry_in: Duration,
        reply: Reply<Vec<Result<()>>>,
    },
}

/// A job checked and serialised by its caller, ready for the writer.
struct PreparedJob {
    job: NewJob,
    request: String,
    payloads: Vec<String>,
}

impl PreparedJob {
    fn new(job: NewJob) -> Result<Self> {
        check_new_job(&job)?;
        let request = json_text(&job.request, "request")?;
        let payloads = job
            .tasks
            .iter()
            .map(|task| json_text(&task.payload, "task payload"))
            .collect::<Result<Vec<_>>>()?;
        Ok(PreparedJob {
            job,
            request,
            payloads,
        })
    }
}

/// The end of a claimed task, serialised by its caller, ready for the writer.
struct FinishedTask {
    state: TaskState,
    result: String,
    error: Option<String>,
    events: Vec<(Level, String)>,
}

impl FinishedTask {
    fn new(outcome: TaskOutcome, events: Vec<(Level, String)>) -> Result<Self> {
        let (state, result, error) = match outcome {
            TaskOutcome::Succeeded(result) => (TaskState::Succeeded, result, None),
            TaskOutcome::Failed(error) => (
                TaskState::Failed,
                serde_json::json!({ "error": error }),
                Some(error),
            ),
        };
        Ok(FinishedTask {
            state,
            result: json_text(&result, "task result")?,
            error,
            events,
        })
    }
}

/// Sends a committed write's value to its caller, or the group's failure if the COMMIT failed.
type Answer = Box<dyn FnOnce(Option<&Arc<sqlx::Error>>) + Send>;

fn answer_on_commit<T: Send + 'static>(reply: Reply<T>, value: T) -> Answer {
    Box::new(move |failure| {
        let outcome = match failure {
            None => Ok(value),
            Some(error) => Err(StoreError::GroupCommit(Arc::clone(error))),
        };
        // A caller that stopped waiting (client hang-up) still has its write committed.
        let _ = reply.send(outcome);
    })
}

/// What became of one write inside the group transaction.
enum Applied {
    /// Done and waiting for the COMMIT, with the answer to send once it is known.
    Committing(Answer),
    /// Failed alone and rolled back to its savepoint; its caller already has the error.
    Refused,
    /// The transaction itself is gone (a savepoint could not be released or rolled back): the
    /// group must be abandoned. The write's caller already has an error.
    Broken(Arc<sqlx::Error>),
}

impl Write {
    /// The caller gave up waiting before the write started: skipping it is indistinguishable,
    /// to that caller, from a failure, and a claim nobody waits for would strand its tasks
    /// until the lease expires.
    fn abandoned(&self) -> bool {
        match self {
            Write::Enqueue { reply, .. } => reply.is_closed(),
            Write::AppendEvents { reply, .. } => reply.is_closed(),
            Write::AppendAudit { reply, .. } => reply.is_closed(),
            Write::LockBranch { reply, .. } => reply.is_closed(),
            Write::UnlockBranch { reply, .. } => reply.is_closed(),
            Write::Claim { reply, .. } => reply.is_closed(),
            Write::FinishTasks { reply, .. } | Write::PostponeTasks { reply, .. } => {
                reply.is_closed()
            }
        }
    }

    /// A request's intake, which may wait a moment to share its commit. The writes a branch's
    /// writer waits for (its lease, claims, results and progress) go at once: a batch waits on
    /// them.
    fn may_gather(&self) -> bool {
        matches!(self, Write::Enqueue { .. } | Write::AppendAudit { .. })
    }

    /// Where the write goes in its group (see [`commit_group`]).
    fn rank(&self) -> u8 {
        match self {
            Write::Enqueue { .. } => 0,
            Write::AppendEvents { .. } => 1,
            Write::AppendAudit { .. } => 2,
            _ => 3,
        }
    }

    /// Fails the write because its whole group failed.
    fn fail(self, error: &Arc<sqlx::Error>) {
        let failed = || StoreError::GroupCommit(Arc::clone(error));
        // Callers that stopped waiting need no answer.
        match self {
            Write::Enqueue { reply, .. } => drop(reply.send(Err(failed()))),
            Write::AppendEvents { reply, .. } => drop(reply.send(Err(failed()))),
            Write::AppendAudit { reply, .. } => drop(reply.send(Err(failed()))),
            Write::LockBranch { reply, .. } => drop(reply.send(Err(failed()))),
            Write::UnlockBranch { reply, .. } => drop(reply.send(Err(failed()))),
            Write::Claim { reply, .. } => drop(reply.send(Err(failed()))),
            Write::FinishTasks { reply, .. } | Write::PostponeTasks { reply, .. } => {
                drop(reply.send(Err(failed())));
            }
        }
    }

    /// Runs the write inside its own savepoint of the group transaction. `opening` opens that
    /// savepoint, releasing the previous write's if it is still open (see [`commit_group`]).
    async fn apply(self, conn: &mut SqliteConnection, now: i64, opening: &str) -> Applied {
        if let Err(error) = sqlx::query(opening).execute(&mut *conn).await {
            let error = Arc::new(error);
            self.fail(&error);
            return Applied::Broken(error);
        }
        match self {
            Write::Enqueue { job, reply } => {
                let outcome = enqueue_jobs(conn, &[&job], now).await.and_then(|mut jobs| {
                    jobs.pop().ok_or_else(|| {
                        StoreError::Corrupt("an enqueued job went missing".to_owned())
                    })
                });
                settle(conn, reply, outcome).await
            }
            Write::AppendEvents { events, reply } => {
                let outcome = append_event_batches(conn, &[&events], now)
                    .await
                    .map(|mut batches| batches.pop().unwrap_or_default());
                settle(conn, reply, outcome).await
            }
            Write::AppendAudit { record, reply } => {
                let outcome = append_audits(conn, &[&record], now)
                    .await
                    .and_then(|mut stored| {
                        stored.pop().ok_or_else(|| {
                            StoreError::Corrupt("an appended audit record went missing".to_owned())
                        })
                    });
                settle(conn, reply, outcome).await
            }
            Write::LockBranch {
                branch,
                owner,
                ttl,
                reply,
            } => {
                let outcome = lock_branch(conn, &branch, &owner, ttl, now).await;
                settle(conn, reply, outcome).await
            }
            Write::UnlockBranch {
                branch,
                owner,
                reply,
            } => {
                let outcome = unlock_branch(conn, &branch, &owner).await;
                settle(conn, reply, outcome).await
            }
            Write::Claim {
                branch,
                owner,
                max,
                reply,
            } => {
                let outcome = claim(conn, &branch, &owner, max, now).await;
                settle(conn, reply, outcome).await
            }
            Write::FinishTasks { tasks, reply } => {
                let outcome = finish_tasks(conn, tasks, now).await;
                settle(conn, reply, outcome).await
            }
            Write::PostponeTasks {
                tasks,
                retry_in,
                reply,
            } => {
                let outcome = postpone_tasks(conn, tasks, retry_in, now).await;
                settle(conn, reply, outcome).await
            }
        }
    }
}

/// Ends one write: on success its savepoint stays open until the next write or the COMMIT
/// releases it; on failure it is rolled back.
async fn settle<T: Send + 'static>(
    conn: &mut SqliteConnection,
    reply: Reply<T>,
    outcome: Result<T>,
) -> Applied {
    match outcome {
        Ok(value) => Applied::Committing(answer_on_commit(reply, value)),
        Err(refusal) => {
            // ROLLBACK TO keeps the savepoint open; RELEASE closes it, leaving nothing behind.
            let rolled_back = sqlx::query("ROLLBACK TO write; RELEASE write")
                .execute(&mut *conn)
                .await;
            // The write is not stored either way: its caller learns why it failed.
            drop(reply.send(Err(refusal)));
            match rolled_back {
                Ok(_) => Applied::Refused,
                Err(error) => Applied::Broken(Arc::new(error)),
            }
        }
    }
}

/// The writer: one group commit after the other until the store is dropped.
async fn run_writer(pool: SqlitePool, clock: Arc<dyn Clock>, mut queue: mpsc::Receiver<Write>) {
    let mut group = Vec::with_capacity(GROUP_COMMIT_MAX);
    // `recv_many` waits only for the first write and takes whatever else is already queued: a
    // lone write never waits for a timer.
    while queue.recv_many(&mut group, GROUP_COMMIT_MAX).await > 0 {
        if group.len() > 1 && group.iter().all(Write::may_gather) {
            gather(&mut queue, &mut group).await;
        }
        commit_group(&pool, clock.as_ref(), group.drain(..)).await;
    }
    tracing::debug!("job store writer stopped");
}

/// Takes the writes that arrive within [`GROUP_LINGER`] into `group`, until they pause for
/// [`GROUP_QUIET`], the group has [`GROUP_SHARED`] or a write arrives that may not wait. More
/// than one intake write was waiting when the last group ended: requests come faster than
/// groups commit.
async fn gather(queue: &mut mpsc::Receiver<Write>, group: &mut Vec<Write>) {
    let deadline = tokio::time::Instant::now() + GROUP_LINGER;
    while group.len() < GROUP_SHARED {
        let (before, room) = (group.len(), GROUP_COMMIT_MAX - group.len());
        let quiet = (tokio::time::Instant::now() + GROUP_QUIET).min(deadline);
        match tokio::time::timeout_at(quiet, queue.recv_many(group, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) if !group[before..].iter().all(Write::may_gather) => break,
            Ok(_) => {}
        }
    }
}

/// Runs `group` in one transaction and answers each write once the COMMIT is known.
async fn commit_group(
    pool: &SqlitePool,
    clock: &dyn Clock,
    group: impl Iterator<Item = Write> + Send,
) {
    let mut writes: Vec<Write> = group.filter(|write| !write.abandoned()).collect();
    if writes.is_empty() {
        return;
    }
    // Every write of a group was in flight at the same time, so any order of them is one their
    // callers could have seen. Enqueues first, then event appends, then audit records, then the
    // rest, each kind in arrival order (a stable sort): the writes of a kind then form one run,
    // written together.
    writes.sort_by_key(Write::rank);
    let mut writes = writes.into_iter().peekable();
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(error) => {
            tracing::warn!(%error, "cannot start a group commit");
            let error = Arc::new(error);
            writes.for_each(|write| write.fail(&error));
            return;
        }
    };
    let mut state = GroupState::default();
    while let Some(write) = writes.next() {
        let now = clock.now().as_millisecond();
        // Consecutive enqueues, event appends and audit records are written together: a few
        // statements for the whole run instead of a few per write.
        let applied = match write {
            Write::Enqueue { job, reply } => {
                let mut run = vec![(job, reply)];
                while let Some(Write::Enqueue { job, reply }) =
                    writes.next_if(|next| matches!(next, Write::Enqueue { .. }))
                {
                    run.push((job, reply));
                }
                state.enqueue_together(&mut tx, run, now).await
            }
            Write::AppendEvents { events, reply } => {
                let mut run = vec![(events, reply)];
                while let Some(Write::AppendEvents { events, reply }) =
                    writes.next_if(|next| matches!(next, Write::AppendEvents { .. }))
                {
                    run.push((events, reply));
                }
                state.append_together(&mut tx, run, now).await
            }
            Write::AppendAudit { record, reply } => {
                let mut run = vec![(record, reply)];
                while let Some(Write::AppendAudit { record, reply }) =
                    writes.next_if(|next| matches!(next, Write::AppendAudit { .. }))
                {
                    run.push((record, reply));
                }
                state.audit_together(&mut tx, run, now).await
            }
            write => state.apply(&mut tx, write, now).await,
        };
        if let Err(error) = applied {
            tracing::warn!(%error, "a group commit lost its transaction");
            writes.for_each(|write| write.fail(&error));
            for answer in state.answers {
                answer(Some(&error));
            }
            if let Err(error) = tx.rollback().await {
                tracing::debug!(%error, "rolling back a broken group commit");
            }
            return;
        }
    }
    let failure = tx.commit().await.err().map(Arc::new);
    match &failure {
        None => tracing::trace!(
            committed = state.answers.len(),
            refused = state.refused,
            "group commit"
        ),
        Some(error) => {
            tracing::warn!(%error, writes = state.answers.len(), "a group commit failed");
        }
    }
    for answer in state.answers {
        answer(failure.as_ref());
    }
}

/// The writes of one group so far. Every method fails only when the transaction itself is gone
/// (a savepoint could not be opened, released or rolled back); the writes it was given have
/// their answer then, and the group must be abandoned.
struct GroupState {
    /// Writes done, waiting for the COMMIT.
    answers: Vec<Answer>,
    refused: usize,
    /// Opens the next write's savepoint. Each statement is a round trip to SQLite's thread,
    /// which costs more than most statements, so the release of the previous write's savepoint
    /// travels with it (SQLite keeps a released savepoint's changes in the transaction; the
    /// COMMIT releases the last one).
    opening: &'static str,
}

impl Default for GroupState {
    fn default() -> Self {
        GroupState {
            answers: Vec::new(),
            refused: 0,
            opening: "SAVEPOINT write",
        }
    }
}

impl GroupState {
    fn committing(&mut self, answer: Answer) {
        self.answers.push(answer);
        self.opening = "RELEASE write; SAVEPOINT write";
    }

    fn refusing(&mut self) {
        self.refused += 1;
        self.opening = "SAVEPOINT write";
    }

    async fn apply(
        &mut self,
        conn: &mut SqliteConnection,
        write: Write,
        now: i64,
    ) -> Result<(), Arc<sqlx::Error>> {
        match write.apply(conn, now, self.opening).await {
            Applied::Committing(answer) => self.committing(answer),
            Applied::Refused => self.refusing(),
            Applied::Broken(error) => return Err(error),
        }
        Ok(())
    }

    /// Runs `writes` one by one, each in its own savepoint.
    async fn apply_each(
        &mut self,
        conn: &mut SqliteConnection,
        writes: impl IntoIterator<Item = Write>,
        now: i64,
    ) -> Result<(), Arc<sqlx::Error>> {
        let mut writes = writes.into_iter();
        while let Some(write) = writes.next() {
            if let Err(error) = self.apply(conn, write, now).await {
                writes.for_each(|write| write.fail(&error));
                return Err(error);
            }
        }
        Ok(())
    }

    /// Opens the savepoint of a run of writes; if that fails, so do they all.
    async fn open_run(
        &mut self,
        conn: &mut SqliteConnection,
        run: Vec<Write>,
    ) -> Result<Vec<Write>, Arc<sqlx::Error>> {
        match sqlx::query(self.opening).execute(&mut *conn).await {
            Ok(_) => Ok(run),
            Err(error) => {
                let error = Arc::new(error);
                run.into_iter().for_each(|write| write.fail(&error));
                Err(error)
            }
        }
    }

    /// Takes back a run that failed as a whole, so that its writes can run one by one and
    /// only the faulty one fails.
    async fn undo_run(
        &mut self,
        conn: &mut SqliteConnection,
        error: &StoreError,
        run: Vec<Write>,
        now: i64,
    ) -> Result<(), Arc<sqlx::Error>> {
        tracing::debug!(%error, writes = run.len(), "a run of writes failed, retrying one by one");
        if let Err(error) = sqlx::query("ROLLBACK TO write; RELEASE write")
            .execute(&mut *conn)
            .await
        {
            let error = Arc::new(error);
            run.into_iter().for_each(|write| write.fail(&error));
            return Err(error);
        }
        self.opening = "SAVEPOINT write";
        self.apply_each(conn, run, now).await
    }

    async fn enqueue_together(
        &mut self,
        conn: &mut SqliteConnection,
        run: Vec<(PreparedJob, Reply<Enqueued>)>,
        now: i64,
    ) -> Result<(), Arc<sqlx::Error>> {
        let run: Vec<Write> = run
            .into_iter()
            .map(|(job, reply)| Write::Enqueue { job, reply })
            .collect();
        if run.len() == 1 {
            return self.apply_each(conn, run, now).await;
        }
        let run = self.open_run(conn, run).await?;
        let jobs: Vec<&PreparedJob> = run
            .iter()
            .filter_map(|write| match write {
                Write::Enqueue { job, .. } => Some(job),
                _ => None,
            })
            .collect();
        match enqueue_jobs(conn, &jobs, now).await {
            Ok(enqueued) => {
                for (write, enqueued) in run.into_iter().zip(enqueued) {
                    if let Write::Enqueue { reply, .. } = write {
                        self.committing(answer_on_commit(reply, enqueued));
                    }
                }
                Ok(())
            }
            Err(error) => self.undo_run(conn, &error, run, now).await,
        }
    }

    async fn append_together(
        &mut self,
        conn: &mut SqliteConnection,
        run: Vec<(Vec<NewEvent>, Reply<Vec<Event>>)>,
        now: i64,
    ) -> Result<(), Arc<sqlx::Error>> {
        let run: Vec<Write> = run
            .into_iter()
            .map(|(events, reply)| Write::AppendEvents { events, reply })
            .collect();
        if run.len() == 1 {
            return self.apply_each(conn, run, now).await;
        }
        let run = self.open_run(conn, run).await?;
        let batches: Vec<&[NewEvent]> = run
            .iter()
            .filter_map(|write| match write {
                Write::AppendEvents { events, .. } => Some(events.as_slice()),
                _ => None,
            })
            .collect();
        match append_event_batches(conn, &batches, now).await {
            Ok(appended) => {
                for (write, events) in run.into_iter().zip(appended) {
                    if let Write::AppendEvents { reply, .. } = write {
                        self.committing(answer_on_commit(reply, events));
                    }
                }
                Ok(())
            }
            Err(error) => self.undo_run(conn, &error, run, now).await,
        }
    }
}

impl GroupState {
    async fn audit_together(
        &mut self,
        conn: &mut SqliteConnection,
        run: Vec<(NewAuditRecord, Reply<AuditRecord>)>,
        now: i64,
    ) -> Result<(), Arc<sqlx::Error>> {
        let run: Vec<Write> = run
            .into_iter()
            .map(|(record, reply)| Write::AppendAudit { record, reply })
            .collect();
        if run.len() == 1 {
            return self.apply_each(conn, run, now).await;
        }
        let run = self.open_run(conn, run).await?;
        let records: Vec<&NewAuditRecord> = run
            .iter()
            .filter_map(|write| match write {
                Write::AppendAudit { record, .. } => Some(record),
                _ => None,
            })
            .collect();
        match append_audits(conn, &records, now).await {
            Ok(stored) => {
                for (write, stored) in run.into_iter().zip(stored) {
                    if let Write::AppendAudit { reply, .. } = write {
                        self.committing(answer_on_commit(reply, stored));
                    }
                }
                Ok(())
            }
            Err(error) => self.undo_run(conn, &error, run, now).await,
        }
    }
}

/// Appends audit records in arrival order, in one statement whatever their number.
async fn append_audits(
    conn: &mut SqliteConnection,
    records: &[&NewAuditRecord],
    now: i64,
) -> Result<Vec<AuditRecord>> {
    let rows = serde_json::Value::Array(
        records
            .iter()
            .map(|r| {
                serde_json::json!([
                    r.actor,
                    detail_text(r),
                    r.action,
                    r.service,
                    r.environment,
                    r.repository,
                    r.branch,
                    r.request_id,
                    r.result.as_str(),
                    r.code,
                    r.message
                ])
            })
            .collect(),
    );
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO audit (at, actor, actor_detail, action, service, environment, \
                            repository, branch, request_id, result, code, message) \
         SELECT ?2, a.value ->> 0, a.value ->> 1, a.value ->> 2, a.value ->> 3, a.value ->> 4, \
                a.value ->> 5, a.value ->> 6, a.value ->> 7, a.value ->> 8, a.value ->> 9, \
                a.value ->> 10 \
         FROM json_each(?1) AS a WHERE true ORDER BY a.key \
         RETURNING id",
    )
    .bind(json_text(&rows, "audit records")?)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    if ids.len() != records.len() {
        return Err(StoreError::Corrupt(format!(
            "{} audit records appended, {} stored",
            records.len(),
            ids.len()
        )));
    }
    // RETURNING promises no order; AUTOINCREMENT ids grow in the order the rows went in, which
    // is the array's.
    ids.sort_unstable();
    ids.into_iter()
        .zip(records)
        .map(|(id, record)| stored(id, now, (*record).clone()))
        .collect()
}

/// Nested savepoints for the items of a batch write (the tasks to finish or postpone), so that
/// each item can fail alone. Like the savepoints of writes, a successful item's stays open until
/// the next item's opening statement releases it; the write's own savepoint covers the rest.
#[derive(Default)]
struct ItemSavepoints {
    open: bool,
}

impl ItemSavepoints {
    async fn begin(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        let opening = if self.open {
            "RELEASE item; SAVEPOINT item"
        } else {
            "SAVEPOINT item"
        };
        sqlx::query(opening).execute(&mut *conn).await?;
        self.open = true;
        Ok(())
    }

    /// Rolls a failed item back. The outer error means the transaction is no longer usable.
    async fn end<T>(
        &mut self,
        conn: &mut SqliteConnection,
        outcome: Result<T>,
    ) -> Result<Result<T>> {
        if outcome.is_err() {
            sqlx::query("ROLLBACK TO item; RELEASE item")
                .execute(&mut *conn)
                .await?;
            self.open = false;
        }
        Ok(outcome)
    }
}

/// Stores jobs in arrival order, all of them in four statements whatever their number (plus
/// three per job whose idempotency key is already known), so that a group of concurrent enqueues
/// costs little more than one. The rows travel as JSON arrays: the statements keep one text and
/// stay prepared.
async fn enqueue_jobs(
    conn: &mut SqliteConnection,
    jobs: &[&PreparedJob],
    now: i64,
) -> Result<Vec<Enqueued>> {
    // Made here, not by the callers, so ids sort like `created_at` (both in commit order).
    let ids: Vec<String> = jobs.iter().map(|_| Uuid::now_v7().to_string()).collect();
    let rows = serde_json::Value::Array(
        jobs.iter()
            .zip(&ids)
            .map(|(job, id)| {
                serde_json::json!([
                    id,
                    job.job.idempotency_key,
                    job.job.kind,
                    job.job.requested_by,
                    job.request
                ])
            })
            .collect(),
    );
    // The unique index arbitrates between requests carrying the same key, including two in this
    // very statement: rows go in array order, so the later one finds the earlier one. (`WHERE
    // true` keeps SQLite from reading ON CONFLICT as a join constraint.)
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO jobs (id, idempotency_key, kind, requested_by, state, request, \
                           created_at, updated_at) \
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, 'queued', \
                j.value ->> 4, ?2, ?2 \
         FROM json_each(?1) AS j WHERE true ORDER BY j.key \
         ON CONFLICT (idempotency_key) DO NOTHING \
         RETURNING id",
    )
    .bind(json_text(&rows, "jobs")?)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();

    let task_rows = serde_json::Value::Array(
        jobs.iter()
            .zip(&ids)
            .filter(|(_, id)| inserted.contains(*id))
            .flat_map(|(job, id)| {
                job.job
                    .tasks
                    .iter()
                    .zip(&job.payloads)
                    .map(move |(task, payload)| {
                        serde_json::json!([id, task.branch.repository, task.branch.branch, payload])
                    })
            })
            .collect(),
    );
    let mut task_ids: std::collections::HashMap<(String, String, String), TaskId> =
        std::collections::HashMap::new();
    if !inserted.is_empty() {
        // Ids grow in array order, which is the order the tasks of one branch run in.
        let rows: Vec<(TaskId, String, String, String)> = sqlx::query_as(
            "INSERT INTO tasks (job_id, repository, branch, state, payload, created_at, \
                                updated_at) \
             SELECT t.value ->> 0, t.value ->> 1, t.value ->> 2, 'queued', t.value ->> 3, \
                    ?2, ?2 \
             FROM json_each(?1) AS t ORDER BY t.key \
             RETURNING id, job_id, repository, branch",
        )
        .bind(json_text(&task_rows, "tasks")?)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        task_ids = rows
            .into_iter()
            .map(|(task_id, job_id, repository, branch)| ((job_id, repository, branch), task_id))
            .collect();
    }

    let at = timestamp(now, || "creation time of enqueued jobs".to_owned())?;
    let mut enqueued = Vec::with_capacity(jobs.len());
    for (job, id) in jobs.iter().zip(ids) {
        if !inserted.contains(&id) {
            enqueued.push(existing_job(conn, &job.job).await?);
            continue;
        }
        // Built from what was written rather than read back: statements fewer on the writer's
        // critical path.
        let mut tasks = Vec::with_capacity(job.job.tasks.len());
        for task in &job.job.tasks {
            let key = (
                id.clone(),
                task.branch.repository.clone(),
                task.branch.branch.clone(),
            );
            let task_id = task_ids.get(&key).copied().ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "task of job {id} on branch {} of {} vanished while being stored",
                    task.branch.branch, task.branch.repository
                ))
            })?;
            tasks.push(queued_task(task_id, &id, task, at));
        }
        enqueued.push(created_job(id, &job.job, tasks, at));
    }
    Ok(enqueued)
}

/// The job already stored under the idempotency key of `job`.
async fn existing_job(conn: &mut SqliteConnection, job: &NewJob) -> Result<Enqueued> {
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE idempotency_key = ?1")
            .bind(&job.idempotency_key)
            .fetch_optional(&mut *conn)
            .await?;
    let existing = existing.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "job with idempotency key {:?} conflicts but cannot be read",
            job.idempotency_key
        ))
    })?;
    let job = load_job(conn, &existing)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("job {existing} vanished while being read")))?;
    Ok(Enqueued {
        job,
        created: false,
    })
}

/// Appends batches of events (each batch one write), numbering each job's events densely in
/// order: two statements however many events and jobs. On failure, says what is wrong with the
/// first event that cannot be stored, like appending them one by one would.
async fn append_event_batches(
    conn: &mut SqliteConnection,
    batches: &[&[NewEvent]],
    now: i64,
) -> Result<Vec<Vec<Event>>> {
    let events = || batches.iter().flat_map(|batch| batch.iter());
    let mut counts: Vec<(&str, i64)> = Vec::new();
    let mut position: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for event in events() {
        let at = *position.entry(&event.job_id).or_insert_with(|| {
            counts.push((&event.job_id, 0));
            counts.len() - 1
        });
        counts[at].1 += 1;
    }
    if counts.is_empty() {
        return Ok(batches.iter().map(|_| Vec::new()).collect());
    }
    let numbered: Vec<(String, i64)> = sqlx::query_as(
        "UPDATE jobs SET last_event_seq = last_event_seq + (c.value ->> 1) \
         FROM json_each(?1) AS c WHERE jobs.id = c.value ->> 0 \
         RETURNING id, last_event_seq",
    )
    .bind(json_text(&serde_json::json!(counts), "event counts")?)
    .fetch_all(&mut *conn)
    .await?;
    // The next seq of each job: its new last one, minus what this call appends, plus one.
    let mut next: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for (job_id, last) in &numbered {
        if let Some(&at) = position.get(job_id.as_str()) {
            let (job_id, count) = counts[at];
            next.insert(job_id, last - count + 1);
        }
    }
    if next.len() < counts.len() {
        return Err(refused_event(conn, events(), &next).await?);
    }

    let at = timestamp(now, || "time of appended events".to_owned())?;
    let mut rows = Vec::new();
    let mut appended = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut events = Vec::with_capacity(batch.len());
        for event in batch.iter() {
            let seq = next.get_mut(event.job_id.as_str()).ok_or_else(|| {
                StoreError::Corrupt(format!("job {} lost its event numbering", event.job_id))
            })?;
            rows.push(serde_json::json!([
                event.job_id,
                *seq,
                event.level.as_str(),
                event.task_id,
                event.message
            ]));
            events.push(Event {
                job_id: event.job_id.clone(),
                seq: *seq,
                at,
                level: event.level,
                task_id: event.task_id,
                message: event.message.clone(),
            });
            *seq += 1;
        }
        appended.push(events);
    }
    // The foreign key from events to tasks refuses a task of another job; only then are the
    // tasks looked up, to say what is wrong.
    let inserted = sqlx::query(
        "INSERT INTO events (job_id, seq, at, level, task_id, message) \
         SELECT e.value ->> 0, e.value ->> 1, ?1, e.value ->> 2, e.value ->> 3, e.value ->> 4 \
         FROM json_each(?2) AS e",
    )
    .bind(now)
    .bind(json_text(&serde_json::Value::Array(rows), "events")?)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(appended),
        Err(sqlx::Error::Database(error))
            if error.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
        {
            Err(refused_event(conn, events(), &next).await?)
        }
        Err(error) => Err(error.into()),
    }
}

/// What is wrong with the first of `events` that cannot be stored: its job is not among `known`
/// jobs, or it names a task that is unknown or another job's.
async fn refused_event<'e>(
    conn: &mut SqliteConnection,
    events: impl Iterator<Item = &'e NewEvent>,
    known: &std::collections::HashMap<&str, i64>,
) -> Result<StoreError> {
    for event in events {
        if !known.contains_key(event.job_id.as_str()) {
            return Ok(StoreError::UnknownJob(event.job_id.clone()));
        }
        let Some(task_id) = event.task_id else {
            continue;
        };
        let owner: Option<String> = sqlx::query_scalar("SELECT job_id FROM tasks WHERE id = ?1")
            .bind(task_id)
            .fetch_optional(&mut *conn)
            .await?;
        match owner {
            None => return Ok(StoreError::UnknownTask(task_id)),
            Some(owner) if owner != event.job_id => {
                return Ok(StoreError::Invalid(format!(
                    "event of job {} names task {task_id}, which belongs to job {owner}",
                    event.job_id
                )));
            }
            Some(_) => {}
        }
    }
    Err(StoreError::Corrupt(
        "events were refused, yet each names a known job and a task of it".to_owned(),
    ))
}

async fn lock_branch(
    conn: &mut SqliteConnection,
    branch: &BranchKey,
    owner: &str,
    ttl: Duration,
    now: i64,
) -> Result<bool> {
    let expires_at = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    // One atomic statement (the same in PostgreSQL): insert a fresh lease, or overwrite the
    // existing one if it is ours and live (renewal: the epoch stays) or expired (takeover, even
    // by ourselves: the epoch grows, fencing off whatever was claimed under the old one). No row
    // back: someone else holds it.
    let taken = sqlx::query(
        "INSERT INTO branch_leases (repository, branch, owner, expires_at, epoch) \
         VALUES (?1, ?2, ?3, ?4, 1) \
         ON CONFLICT (repository, branch) DO UPDATE \
           SET owner = excluded.owner, expires_at = excluded.expires_at, \
               epoch = CASE WHEN branch_leases.owner = excluded.owner \
                             AND branch_leases.expires_at > ?5 \
                            THEN branch_leases.epoch ELSE branch_leases.epoch + 1 END \
           WHERE branch_leases.owner = excluded.owner OR branch_leases.expires_at <= ?5 \
         RETURNING owner",
    )
    .bind(&branch.repository)
    .bind(&branch.branch)
    .bind(owner)
    .bind(expires_at)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(taken.is_some())
}

async fn unlock_branch(conn: &mut SqliteConnection, branch: &BranchKey, owner: &str) -> Result<()> {
    // Expired and moved to a new epoch rather than deleted: what was claimed under it can no
    // longer be recorded, and epochs never restart.
    sqlx::query(
        "UPDATE branch_leases SET expires_at = 0, epoch = epoch + 1 \
         WHERE repository = ?1 AND branch = ?2 AND owner = ?3",
    )
    .bind(&branch.repository)
    .bind(&branch.branch)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn claim(
    conn: &mut SqliteConnection,
    branch: &BranchKey,
    owner: &str,
    max: usize,
    now: i64,
) -> Result<Vec<Task>> {
    let lease: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT owner, expires_at, epoch FROM branch_leases WHERE repository = ?1 AND branch = ?2",
    )
    .bind(&branch.repository)
    .bind(&branch.branch)
    .fetch_optional(&mut *conn)
    .await?;
    let epoch = match lease {
        Some((holder, expires_at, epoch)) if holder == owner && expires_at > now => epoch,
        _ => {
            return Err(StoreError::BranchNotLeased {
                branch: branch.clone(),
                owner: owner.to_owned(),
            });
        }
    };
    if max == 0 {
        return Ok(Vec::new());
    }
    // Atomic because the group transaction holds SQLite's single write lock from its BEGIN
    // IMMEDIATE. In PostgreSQL, where writers run concurrently, the inner SELECT becomes
    //   SELECT id FROM tasks WHERE … ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED
    // so two claimers never take the same row and neither waits on the other.
    let rows = sqlx::query(&format!(
        "UPDATE tasks \
         SET state = 'running', attempts = attempts + 1, claimed_by = ?4, claim_epoch = ?6, \
             not_before = NULL, updated_at = ?3 \
         WHERE id IN ( \
           SELECT id FROM tasks \
           WHERE repository = ?1 AND branch = ?2 AND {UNFINISHED} \
             AND (state = 'queued' \
                  OR (state = 'pending' AND not_before <= ?3) \
                  OR (state = 'running' AND (claimed_by <> ?4 OR claim_epoch IS NOT ?6))) \
             AND id < COALESCE((SELECT MIN(id) FROM tasks \
                                WHERE repository = ?1 AND branch = ?2 \
                                  AND {UNFINISHED} \
                                  AND state = 'pending' AND not_before > ?3), {max}) \
           ORDER BY id LIMIT ?5) \
         RETURNING {columns}",
        max = i64::MAX,
        columns = task_columns!(),
    ))
    .bind(&branch.repository)
    .bind(&branch.branch)
    .bind(now)
    .bind(owner)
    .bind(i64::try_from(max).unwrap_or(i64::MAX))
    .bind(epoch)
    .fetch_all(&mut *conn)
    .await?;
    let mut tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
    // RETURNING promises no order.
    tasks.sort_by_key(|task| task.id);
    let jobs: BTreeSet<&str> = tasks.iter().map(|task| task.job_id.as_str()).collect();
    refresh_job_states(conn, &jobs, now).await?;
    Ok(tasks)
}

async fn finish_tasks(
    conn: &mut SqliteConnection,
    tasks: Vec<(TaskId, Result<FinishedTask>)>,
    now: i64,
) -> Result<Vec<Result<()>>> {
    let mut results: Vec<Option<Result<()>>> = Vec::with_capacity(tasks.len());
    let mut together = Vec::with_capacity(tasks.len());
    let mut again = Vec::new();
    let mut seen = BTreeSet::new();
    for (at, (task_id, finished)) in tasks.into_iter().enumerate() {
        match finished {
            Err(error) => results.push(Some(Err(error))),
            // A task listed twice: the later entry runs after the batch and finds the task
            // already finished, as it would one by one.
            Ok(finished) if !seen.insert(task_id) => {
                results.push(None);
                again.push((at, task_id, finished));
            }
            Ok(finished) => {
                results.push(None);
                together.push((at, task_id, finished));
            }
        }
    }

    // One UPDATE for every task; the lease check rides in it, so a refused task is simply not
    // updated (nothing to roll back) and only then looked at again to say why. A success keeps
    // the last transient error: it tells why the task needed several attempts.
    let rows = serde_json::Value::Array(
        together
            .iter()
            .map(|(_, task_id, finished)| {
                serde_json::json!([
                    task_id,
                    finished.state.as_str(),
                    finished.result,
                    finished.error
                ])
            })
            .collect(),
    );
    let finished: Vec<(TaskId, String)> = sqlx::query_as(&format!(
        "UPDATE tasks SET state = u.value ->> 1, result = u.value ->> 2, \
                          last_error = COALESCE(u.value ->> 3, last_error), updated_at = ?2 \
         FROM json_each(?1) AS u \
         WHERE tasks.id = u.value ->> 0 AND {LEASED} \
         RETURNING tasks.id, tasks.job_id"
    ))
    .bind(json_text(&rows, "task outcomes")?)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let finished: std::collections::HashMap<TaskId, String> = finished.into_iter().collect();

    let mut jobs = BTreeSet::new();
    let mut events = Vec::new();
    for (at, task_id, outcome) in together {
        let result = match finished.get(&task_id) {
            Some(job_id) => {
                jobs.insert(job_id.clone());
                events.extend(outcome.events.into_iter().map(|(level, message)| NewEvent {
                    job_id: job_id.clone(),
                    task_id: Some(task_id),
                    level,
                    message,
                }));
                Ok(())
            }
            None => Err(lease_refusal(conn, task_id).await),
        };
        results[at] = Some(result);
    }
    append_event_batches(conn, &[&events], now).await?;

    let mut savepoints = ItemSavepoints::default();
    for (at, task_id, outcome) in again {
        savepoints.begin(conn).await?;
        let outcome = finish_task(conn, task_id, outcome, now).await;
        results[at] = Some(savepoints.end(conn, outcome).await?.map(|job_id| {
            jobs.insert(job_id);
        }));
    }
    // Once per job, however many of its tasks ended in this batch.
    refresh_job_states(conn, &jobs, now).await?;
    results
        .into_iter()
        .map(|result| {
            result.ok_or_else(|| StoreError::Corrupt("a finished task lost its outcome".to_owned()))
        })
        .collect()
}

/// Ends one claimed task and appends its events; returns its job.
async fn finish_task(
    conn: &mut SqliteConnection,
    task_id: TaskId,
    finished: FinishedTask,
    now: i64,
) -> Result<String> {
    // The lease check rides in the UPDATE; only a refusal costs a second look. A success keeps
    // the last transient error: it tells why the task needed several attempts.
    let job_id: Option<String> = sqlx::query_scalar(&format!(
        "UPDATE tasks SET state = ?2, result = ?3, last_error = COALESCE(?4, last_error), \
                          updated_at = ?5 \
         WHERE id = ?1 AND {LEASED} \
         RETURNING job_id"
    ))
    .bind(task_id)
    .bind(finished.state.as_str())
    .bind(&finished.result)
    .bind(&finished.error)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(job_id) = job_id else {
        return Err(lease_refusal(conn, task_id).await);
    };
    if !finished.events.is_empty() {
        let events: Vec<NewEvent> = finished
            .events
            .into_iter()
            .map(|(level, message)| NewEvent {
                job_id: job_id.clone(),
                task_id: Some(task_id),
                level,
                message,
            })
            .collect();
        append_event_batches(conn, &[&events], now).await?;
    }
    Ok(job_id)
}

async fn postpone_tasks(
    conn: &mut SqliteConnection,
    tasks: Vec<(TaskId, String)>,
    retry_in: Duration,
    now: i64,
) -> Result<Vec<Result<()>>> {
    let not_before = now.saturating_add(i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX));
    let mut results = Vec::with_capacity(tasks.len());
    let mut jobs = BTreeSet::new();
    let mut savepoints = ItemSavepoints::default();
    for (task_id, error) in tasks {
        savepoints.begin(conn).await?;
        let outcome = postpone_task(conn, task_id, &error, not_before, now).await;
        results.push(savepoints.end(conn, outcome).await?.map(|job_id| {
            jobs.insert(job_id);
        }));
    }
    refresh_job_states(conn, &jobs, now).await?;
    Ok(results)
}

/// Puts one claimed task back to pending; returns its job.
async fn postpone_task(
    conn: &mut SqliteConnection,
    task_id: TaskId,
    error: &str,
    not_before: i64,
    now: i64,
) -> Result<String> {
    let job_id: Option<String> = sqlx::query_scalar(&format!(
        "UPDATE tasks SET state = 'pending', last_error = ?2, not_before = ?3, updated_at = ?4 \
         WHERE id = ?1 AND {LEASED} \
         RETURNING job_id"
    ))
    .bind(task_id)
    .bind(error)
    .bind(not_before)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    match job_id {
        Some(job_id) => Ok(job_id),
        None => Err(lease_refusal(conn, task_id).await),
    }
}

/// Why a task could not be finished or postponed: unknown, or not running under its lease.
async fn lease_refusal(conn: &mut SqliteConnection, task_id: TaskId) -> StoreError {
    match leased_running_task(conn, task_id).await {
        Ok(_) => StoreError::Corrupt(format!(
            "task {task_id} runs under its lease but could not be updated"
        )),
        Err(refusal) => refusal,
    }
}

/// The job of task `task_id` if that task is running under the lease that claimed it.
async fn leased_running_task(conn: &mut SqliteConnection, task_id: TaskId) -> Result<String> {
    let row: Option<LeaseCheck> = sqlx::query_as(
        "SELECT t.job_id, t.state, t.claimed_by, l.owner, \
                COALESCE(t.claim_epoch = l.epoch, FALSE) AS same_epoch FROM tasks AS t \
         LEFT JOIN branch_leases AS l ON l.repository = t.repository AND l.branch = t.branch \
         WHERE t.id = ?1",
    )
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?;
    let check = row.ok_or(StoreError::UnknownTask(task_id))?;
    if still_leased(&check) {
        Ok(check.0)
    } else {
        Err(StoreError::LeaseLost(task_id))
    }
}

/// Derives the state of each job in `job_ids` from its tasks: two statements for any number of
/// jobs, their texts fixed (the ids travel as one JSON array) so they stay prepared.
async fn refresh_job_states<S: AsRef<str> + Ord>(
    conn: &mut SqliteConnection,
    job_ids: &BTreeSet<S>,
    now: i64,
) -> Result<()> {
    if job_ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = job_ids.iter().map(AsRef::as_ref).collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT job_id, state FROM tasks WHERE job_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(json_text(&serde_json::json!(ids), "job ids")?)
    .fetch_all(&mut *conn)
    .await?;
    let mut states: std::collections::HashMap<&str, Vec<TaskState>> =
        ids.iter().map(|id| (*id, Vec::new())).collect();
    for (job_id, name) in &rows {
        let state = TaskState::parse(name).ok_or_else(|| {
            StoreError::Corrupt(format!("a task of job {job_id} has unknown state {name:?}"))
        })?;
        states.entry(job_id.as_str()).or_default().push(state);
    }
    let updates: Vec<serde_json::Value> = states
        .into_iter()
        .map(|(job_id, tasks)| serde_json::json!([job_id, JobState::from_tasks(tasks).as_str()]))
        .collect();
    sqlx::query(
        "UPDATE jobs SET state = u.value ->> 1, updated_at = ?2 \
         FROM json_each(?1) AS u WHERE jobs.id = u.value ->> 0",
    )
    .bind(json_text(&serde_json::Value::Array(updates), "job states")?)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn load_job(conn: &mut SqliteConnection, id: &str) -> Result<Option<Job>> {
    let Some(row) = sqlx::query(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let tasks = sqlx::query(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE job_id = ?1 ORDER BY id"
    ))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(task_from_row)
    .collect::<Result<Vec<_>>>()?;
    job_from_row(&row, tasks).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::NewTask;

    fn deploy(key: &str) -> PreparedJob {
        let job = NewJob {
            idempotency_key: Some(key.to_owned()),
            kind: "deploy".to_owned(),
            requested_by: "ci-token".to_owned(),
            request: json!({ "image": "shop:1" }),
            tasks: vec![NewTask {
                branch: BranchKey {
                    repository: "gitops/prod".to_owned(),
                    branch: "main".to_owned(),
                },
                payload: json!({ "set_image": "shop:1" }),
            }],
        };
        PreparedJob::new(job).unwrap()
    }

    fn audit(actor: &str, detail: Option<serde_json::Value>) -> NewAuditRecord {
        NewAuditRecord {
            actor: actor.to_owned(),
            actor_detail: detail,
            action: "deploy".to_owned(),
            service: None,
            environment: Some("prod".to_owned()),
            repository: Some("gitops/prod".to_owned()),
            branch: Some("main".to_owned()),
            request_id: Some(format!("req-{actor}")),
            result: crate::AuditResult::Accepted,
            code: None,
            message: format!("{actor}'s deploy"),
        }
    }

    #[tokio::test]
    async fn audit_records_of_one_group_go_in_together_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tug.db")).await.unwrap();
        let records = vec![
            audit("ci", None),
            audit("alice", Some(json!({"issuer": "https://idp", "rule": 1}))),
            audit("bob", None),
        ];
        let mut replies = Vec::new();
        let mut group = vec![Write::Enqueue {
            job: deploy("build-1"),
            reply: oneshot::channel().0,
        }];
        for record in &records {
            let (reply, answer) = oneshot::channel();
            replies.push(answer);
            group.push(Write::AppendAudit {
                record: record.clone(),
                reply,
            });
        }
        commit_group(store.pool(), &SystemClock, group.into_iter()).await;

        let mut stored = Vec::new();
        for answer in replies {
            stored.push(answer.await.unwrap().unwrap());
        }
        let ids: Vec<i64> = stored.iter().map(|r| r.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(
            stored.iter().map(|r| r.record.clone()).collect::<Vec<_>>(),
            records
        );
        let listed = crate::AuditLog::audit(&store, &crate::AuditQuery::default())
            .await
            .unwrap();
        assert_eq!(listed.into_iter().rev().collect::<Vec<_>>(), stored);
    }

    /// Groups are formed by timing under load; here one is built by hand so that the writes
    /// are sure to share a transaction.
    #[tokio::test]
    async fn writes_of_one_group_see_each_other_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tug.db")).await.unwrap();
        let (first, first_reply) = oneshot::channel();
        let (again, again_reply) = oneshot::channel();
        let (stray_event, stray_event_reply) = oneshot::channel();
        let (stray_finish, stray_finish_reply) = oneshot::channel();
        let (abandoned, abandoned_reply) = oneshot::channel();
        let (other, other_reply) = oneshot::channel();
        drop(abandoned_reply);
        let group = vec![
            Write::Enqueue {
                job: deploy("build-1"),
                reply: first,
            },
            Write::Enqueue {
                job: deploy("build-1"),
                reply: again,
            },
            Write::AppendEvents {
                events: vec![NewEvent {
                    job_id: "no-such-job".to_owned(),
                    task_id: None,
                    level: Level::Info,
                    message: "lost".to_owned(),
                }],
                reply: stray_event,
            },
            Write::FinishTasks {
                tasks: vec![(
                    9_999,
                    FinishedTask::new(TaskOutcome::Succeeded(json!({})), Vec::new()),
                )],
                reply: stray_finish,
            },
            Write::Enqueue {
                job: deploy("build-abandoned"),
                reply: abandoned,
            },
            Write::Enqueue {
                job: deploy("build-2"),
                reply: other,
            },
        ];
        commit_group(store.pool(), &SystemClock, group.into_iter()).await;

        let first = first_reply.await.unwrap().unwrap();
        let again = again_reply.await.unwrap().unwrap();
        assert!(first.created);
        assert!(!again.created, "the second enqueue saw the first");
        assert_eq!(again.job, first.job);
        let stray_event = stray_event_reply.await.unwrap();
        assert!(
            matches!(stray_event, Err(StoreError::UnknownJob(_))),
            "{stray_event:?}"
        );
        let stray_finish = stray_finish_reply.await.unwrap().unwrap();
        assert!(
            matches!(stray_finish[..], [Err(StoreError::UnknownTask(9_999))]),
            "{stray_finish:?}"
        );
        assert!(other_reply.await.unwrap().unwrap().created);

        let keys: Vec<Option<String>> =
            sqlx::query_scalar("SELECT idempotency_key FROM jobs ORDER BY created_at, id")
                .fetch_all(store.read_pool())
                .await
                .unwrap();
        assert_eq!(
            keys,
            vec![Some("build-1".to_owned()), Some("build-2".to_owned())],
            "the abandoned enqueue never ran"
        );
        let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(store.read_pool())
            .await
            .unwrap();
        assert_eq!(events, 0);
    }

    fn event(job_id: &str, message: &str) -> NewEvent {
        NewEvent {
            job_id: job_id.to_owned(),
            task_id: None,
            level: Level::Info,
            message: message.to_owned(),
        }
    }

    /// Event appends of one group are written together; one refused append sends the run back
    /// to one write at a time, and only it fails. Arrival order decides the numbering.
    #[tokio::test]
    async fn a_refused_write_in_a_run_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tug.db")).await.unwrap();
        let job = store.enqueue(deploy("build-1").job).await.unwrap().job;
        let (first, first_reply) = oneshot::channel();
        let (stray, stray_reply) = oneshot::channel();
        let (second, second_reply) = oneshot::channel();
        let (enqueue, enqueue_reply) = oneshot::channel();
        let group = vec![
            Write::AppendEvents {
                events: vec![event(&job.id, "a1"), event(&job.id, "a2")],
                reply: first,
            },
            Write::AppendEvents {
                events: vec![event(&job.id, "lost"), event("no-such-job", "lost")],
                reply: stray,
            },
            // Arrived after the appends, written before them: its rank comes first.
            Write::Enqueue {
                job: deploy("build-2"),
                reply: enqueue,
            },
            Write::AppendEvents {
                events: vec![event(&job.id, "a3")],
                reply: second,
            },
        ];
        commit_group(store.pool(), &SystemClock, group.into_iter()).await;

        let first = first_reply.await.unwrap().unwrap();
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        let stray = stray_reply.await.unwrap();
        assert!(
            matches!(stray, Err(StoreError::UnknownJob(ref id)) if id == "no-such-job"),
            "{stray:?}"
        );
        let second = second_reply.await.unwrap().unwrap();
        assert_eq!(second.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
        assert!(enqueue_reply.await.unwrap().unwrap().created);
        let stored = store.events(&job.id, 0).await.unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>(),
            vec!["a1", "a2", "a3"]
        );
    }

    #[tokio::test]
    async fn readers_keep_a_small_page_cache_and_the_writer_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tug.db")).await.unwrap();
        let cache = |pool: &SqlitePool| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("PRAGMA cache_size")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(cache(store.read_pool()).await, -i64::from(READ_CACHE_KIB));
        assert_eq!(cache(store.pool()).await, -2000);
        store.close().await;
    }

    #[tokio::test]
    async fn the_writer_keeps_its_statement_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tug.db")).await.unwrap();
        let temp_store = sqlx::query_scalar::<_, i64>("PRAGMA temp_store")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(temp_store, 2, "MEMORY");
        store.close().await;
    }

    #[tokio::test]
    async fn a_group_that_cannot_start_fails_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("tug.db")).await.unwrap();
        store.pool().close().await;
        let (first, first_reply) = oneshot::channel();
        let (second, second_reply) = oneshot::channel();
        let group = vec![
            Write::Enqueue {
                job: deploy("build-1"),
                reply: first,
            },
            Write::UnlockBranch {
                branch: BranchKey {
                    repository: "gitops/prod".to_owned(),
                    branch: "main".to_owned(),
                },
                owner: "writer-a".to_owned(),
                reply: second,
            },
        ];
        commit_group(store.pool(), &SystemClock, group.into_iter()).await;
        let first = first_reply.await.unwrap();
        assert!(
            matches!(first, Err(StoreError::GroupCommit(_))),
            "{first:?}"
        );
        let second = second_reply.await.unwrap();
        assert!(
            matches!(second, Err(StoreError::GroupCommit(_))),
            "{second:?}"
        );
    }
}
