//! The SQLite store: one database file under the server's data directory.
//!
//! Writes go through a pool of exactly one connection, so in-process writers queue in the pool
//! (first come, first served) instead of spinning in SQLite's busy handler; the busy timeout only
//! matters when another process writes to the same file. Reads use their own pool and, thanks to
//! WAL, never wait for writers.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, Transaction};
use uuid::Uuid;

use crate::{
    BranchKey, Clock, Enqueued, Event, Job, JobFilter, JobState, Level, NewJob, Result, Store,
    StoreError, SystemClock, Task, TaskId, TaskOutcome, TaskState,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Readers run concurrently under WAL; more than a handful buys nothing on a local file.
const READ_CONNECTIONS: u32 = 4;

/// SQLite's default limit on bound parameters is 32766; stay far below it in `IN (…)` lists.
const IN_LIST_CHUNK: usize = 500;

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

/// [`Store`] on a SQLite file, in WAL mode with `synchronous=FULL`: a job is on disk when
/// [`Store::enqueue`] returns.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    clock: Arc<dyn Clock>,
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
        // WAL is a property of the file; switching needs an exclusive lock, so only the writer
        // asks for it, once, before any reader connects.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
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
            .connect_with(options)
            .await
            .map_err(open_error)?;
        tracing::debug!(path = %path.display(), "job store open");
        Ok(SqliteStore {
            writer,
            reader,
            clock,
        })
    }

    /// The pool for tables kept next to the queue (artifacts, releases). It holds the single
    /// write connection: every write and read-modify-write goes through it, and a transaction
    /// held open on it stalls every other writer, so keep them short.
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// A pool for plain reads; under WAL they never wait for writers.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes every connection, checkpointing the WAL into the database file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Write transactions take the write lock up front: a deferred transaction that reads and
    /// then writes fails with SQLITE_BUSY (no waiting) if another process wrote in between.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn enqueue(&self, new: NewJob) -> Result<Enqueued> {
        check_new_job(&new)?;
        let now = self.now_ms();
        let request = json_text(&new.request, "request")?;
        let payloads = new
            .tasks
            .iter()
            .map(|task| json_text(&task.payload, "task payload"))
            .collect::<Result<Vec<_>>>()?;
        let id = Uuid::now_v7().to_string();

        let mut tx = self.begin_write().await?;
        // The same statement as PostgreSQL's: the unique index arbitrates between concurrent
        // requests carrying the same key.
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, idempotency_key, kind, requested_by, state, request, \
                               created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?6) \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING id",
        )
        .bind(&id)
        .bind(&new.idempotency_key)
        .bind(&new.kind)
        .bind(&new.requested_by)
        .bind(&request)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;

        if inserted.is_none() {
            let existing: Option<String> =
                sqlx::query_scalar("SELECT id FROM jobs WHERE idempotency_key = ?1")
                    .bind(&new.idempotency_key)
                    .fetch_optional(&mut *tx)
                    .await?;
            let existing = existing.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "job with idempotency key {:?} conflicts but cannot be read",
                    new.idempotency_key
                ))
            })?;
            let job = load_job(&mut tx, &existing).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("job {existing} vanished while being read"))
            })?;
            tx.commit().await?;
            return Ok(Enqueued {
                job,
                created: false,
            });
        }

        for (task, payload) in new.tasks.iter().zip(&payloads) {
            sqlx::query(
                "INSERT INTO tasks (job_id, repository, branch, state, payload, created_at, \
                                    updated_at) \
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?5)",
            )
            .bind(&id)
            .bind(&task.branch.repository)
            .bind(&task.branch.branch)
            .bind(payload)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let job = load_job(&mut tx, &id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished while being stored")))?;
        tx.commit().await?;
        Ok(Enqueued { job, created: true })
    }

    async fn job(&self, id: &str) -> Result<Option<Job>> {
        // One read transaction: the job row and its tasks come from the same snapshot.
        let mut tx = self.reader.begin().await?;
        let job = load_job(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
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
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE jobs SET last_event_seq = last_event_seq + 1 WHERE id = ?1 \
             RETURNING last_event_seq",
        )
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let seq = seq.ok_or_else(|| StoreError::UnknownJob(job_id.to_owned()))?;
        if let Some(task_id) = task_id {
            let owner: Option<String> =
                sqlx::query_scalar("SELECT job_id FROM tasks WHERE id = ?1")
                    .bind(task_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match owner {
                None => return Err(StoreError::UnknownTask(task_id)),
                Some(owner) if owner != job_id => {
                    return Err(StoreError::Invalid(format!(
                        "event of job {job_id} names task {task_id}, which belongs to job {owner}"
                    )));
                }
                Some(_) => {}
            }
        }
        sqlx::query(
            "INSERT INTO events (job_id, seq, at, level, task_id, message) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(job_id)
        .bind(seq)
        .bind(now)
        .bind(level.as_str())
        .bind(task_id)
        .bind(message)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Event {
            job_id: job_id.to_owned(),
            seq,
            at: timestamp(now, || format!("event {seq} of job {job_id}"))?,
            level,
            task_id,
            message: message.to_owned(),
        })
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
        let now = self.now_ms();
        let expires_at = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        // One atomic statement, valid as is in PostgreSQL: insert a fresh lease, or overwrite the
        // existing one if it is ours (renewal) or expired (takeover). No row back: someone else
        // holds it.
        let taken = sqlx::query(
            "INSERT INTO branch_leases (repository, branch, owner, expires_at) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (repository, branch) DO UPDATE \
               SET owner = excluded.owner, expires_at = excluded.expires_at \
               WHERE branch_leases.owner = excluded.owner OR branch_leases.expires_at <= ?5 \
             RETURNING owner",
        )
        .bind(&branch.repository)
        .bind(&branch.branch)
        .bind(owner)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&self.writer)
        .await?;
        Ok(taken.is_some())
    }

    async fn unlock_branch(&self, branch: &BranchKey, owner: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM branch_leases WHERE repository = ?1 AND branch = ?2 AND owner = ?3",
        )
        .bind(&branch.repository)
        .bind(&branch.branch)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn claim(&self, branch: &BranchKey, owner: &str, max: usize) -> Result<Vec<Task>> {
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let lease: Option<(String, i64)> = sqlx::query_as(
            "SELECT owner, expires_at FROM branch_leases WHERE repository = ?1 AND branch = ?2",
        )
        .bind(&branch.repository)
        .bind(&branch.branch)
        .fetch_optional(&mut *tx)
        .await?;
        match lease {
            Some((holder, expires_at)) if holder == owner && expires_at > now => {}
            _ => {
                return Err(StoreError::BranchNotLeased {
                    branch: branch.clone(),
                    owner: owner.to_owned(),
                });
            }
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        // Atomic because BEGIN IMMEDIATE holds SQLite's single write lock from the start. In
        // PostgreSQL, where writers run concurrently, the inner SELECT becomes
        //   SELECT id FROM tasks WHERE … ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED
        // so two claimers never take the same row and neither waits on the other.
        let rows = sqlx::query(&format!(
            "UPDATE tasks \
             SET state = 'running', attempts = attempts + 1, claimed_by = ?4, \
                 not_before = NULL, updated_at = ?3 \
             WHERE id IN ( \
               SELECT id FROM tasks \
               WHERE repository = ?1 AND branch = ?2 AND {UNFINISHED} \
                 AND (state = 'queued' \
                      OR (state = 'pending' AND not_before <= ?3) \
                      OR (state = 'running' AND claimed_by <> ?4)) \
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
        .fetch_all(&mut *tx)
        .await?;
        let mut tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        // RETURNING promises no order.
        tasks.sort_by_key(|task| task.id);
        let jobs: BTreeSet<&str> = tasks.iter().map(|task| task.job_id.as_str()).collect();
        for job_id in jobs {
            refresh_job_state(&mut tx, job_id, now).await?;
        }
        tx.commit().await?;
        Ok(tasks)
    }

    async fn finish_task(&self, task_id: TaskId, outcome: TaskOutcome) -> Result<()> {
        let now = self.now_ms();
        let (state, result, error) = match outcome {
            TaskOutcome::Succeeded(result) => (TaskState::Succeeded, result, None),
            TaskOutcome::Failed(error) => (
                TaskState::Failed,
                serde_json::json!({ "error": error }),
                Some(error),
            ),
        };
        let result = json_text(&result, "task result")?;
        let mut tx = self.begin_write().await?;
        let job_id = leased_running_task(&mut tx, task_id).await?;
        // A success keeps the last transient error: it tells why the task needed several attempts.
        sqlx::query(
            "UPDATE tasks SET state = ?2, result = ?3, last_error = COALESCE(?4, last_error), \
                              updated_at = ?5 \
             WHERE id = ?1",
        )
        .bind(task_id)
        .bind(state.as_str())
        .bind(&result)
        .bind(&error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        refresh_job_state(&mut tx, &job_id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn postpone_task(&self, task_id: TaskId, error: &str, retry_in: Duration) -> Result<()> {
        let now = self.now_ms();
        let not_before =
            now.saturating_add(i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.begin_write().await?;
        let job_id = leased_running_task(&mut tx, task_id).await?;
        sqlx::query(
            "UPDATE tasks SET state = 'pending', last_error = ?2, not_before = ?3, updated_at = ?4 \
             WHERE id = ?1",
        )
        .bind(task_id)
        .bind(error)
        .bind(not_before)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        refresh_job_state(&mut tx, &job_id, now).await?;
        tx.commit().await?;
        Ok(())
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

fn check_new_job(job: &NewJob) -> Result<()> {
    if job.tasks.is_empty() {
        return Err(StoreError::Invalid(format!(
            "{} job requested by {} has no tasks",
            job.kind, job.requested_by
        )));
    }
    let mut seen = BTreeSet::new();
    for task in &job.tasks {
        if !seen.insert(&task.branch) {
            return Err(StoreError::Invalid(format!(
                "{} job lists branch {} of {} twice",
                job.kind, task.branch.branch, task.branch.repository
            )));
        }
    }
    Ok(())
}

/// The job of task `task_id` if that task is running under the lease that claimed it.
async fn leased_running_task(conn: &mut SqliteConnection, task_id: TaskId) -> Result<String> {
    let row: Option<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT t.job_id, t.state, t.claimed_by, l.owner FROM tasks AS t \
         LEFT JOIN branch_leases AS l ON l.repository = t.repository AND l.branch = t.branch \
         WHERE t.id = ?1",
    )
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (job_id, state, claimed_by, holder) = row.ok_or(StoreError::UnknownTask(task_id))?;
    // An expired lease that nobody took over still counts: the writer's push happened, and
    // recording it beats running the task again.
    let leased =
        state == TaskState::Running.as_str() && claimed_by.is_some() && claimed_by == holder;
    if leased {
        Ok(job_id)
    } else {
        Err(StoreError::LeaseLost(task_id))
    }
}

async fn refresh_job_state(conn: &mut SqliteConnection, job_id: &str, now: i64) -> Result<()> {
    let names: Vec<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE job_id = ?1")
        .bind(job_id)
        .fetch_all(&mut *conn)
        .await?;
    let states = names
        .iter()
        .map(|name| {
            TaskState::parse(name).ok_or_else(|| {
                StoreError::Corrupt(format!("a task of job {job_id} has unknown state {name:?}"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    sqlx::query("UPDATE jobs SET state = ?2, updated_at = ?3 WHERE id = ?1")
        .bind(job_id)
        .bind(JobState::from_tasks(states).as_str())
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

fn job_from_row(row: &SqliteRow, tasks: Vec<Task>) -> Result<Job> {
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let state = JobState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("job {id} has unknown state {state:?}")))?;
    let request: String = row.try_get("request")?;
    let created_at = timestamp(row.try_get("created_at")?, || {
        format!("created_at of job {id}")
    })?;
    let updated_at = timestamp(row.try_get("updated_at")?, || {
        format!("updated_at of job {id}")
    })?;
    Ok(Job {
        request: json_value(&request, || format!("request of job {id}"))?,
        idempotency_key: row.try_get("idempotency_key")?,
        kind: row.try_get("kind")?,
        requested_by: row.try_get("requested_by")?,
        state,
        created_at,
        updated_at,
        tasks,
        id,
    })
}

fn task_from_row(row: &SqliteRow) -> Result<Task> {
    let id: TaskId = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let state = TaskState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("task {id} has unknown state {state:?}")))?;
    let payload: String = row.try_get("payload")?;
    let result: Option<String> = row.try_get("result")?;
    let attempts: i64 = row.try_get("attempts")?;
    let not_before: Option<i64> = row.try_get("not_before")?;
    Ok(Task {
        id,
        job_id: row.try_get("job_id")?,
        branch: BranchKey {
            repository: row.try_get("repository")?,
            branch: row.try_get("branch")?,
        },
        state,
        payload: json_value(&payload, || format!("payload of task {id}"))?,
        attempts: u32::try_from(attempts).map_err(|_| {
            StoreError::Corrupt(format!("task {id} has {attempts} attempts, out of range"))
        })?,
        last_error: row.try_get("last_error")?,
        result: result
            .map(|text| json_value(&text, || format!("result of task {id}")))
            .transpose()?,
        claimed_by: row.try_get("claimed_by")?,
        retry_at: not_before
            .map(|ms| timestamp(ms, || format!("not_before of task {id}")))
            .transpose()?,
        created_at: timestamp(row.try_get("created_at")?, || {
            format!("created_at of task {id}")
        })?,
        updated_at: timestamp(row.try_get("updated_at")?, || {
            format!("updated_at of task {id}")
        })?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event> {
    let job_id: String = row.try_get("job_id")?;
    let seq: i64 = row.try_get("seq")?;
    let level: String = row.try_get("level")?;
    let level = Level::parse(&level).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "event {seq} of job {job_id} has unknown level {level:?}"
        ))
    })?;
    Ok(Event {
        at: timestamp(row.try_get("at")?, || {
            format!("event {seq} of job {job_id}")
        })?,
        level,
        task_id: row.try_get("task_id")?,
        message: row.try_get("message")?,
        job_id,
        seq,
    })
}

fn timestamp(ms: i64, what: impl FnOnce() -> String) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms)
        .map_err(|error| StoreError::Corrupt(format!("{}: {ms} ms is not a time: {error}", what())))
}

fn json_text(value: &serde_json::Value, what: &str) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Invalid(format!("{what} is not storable JSON: {error}")))
}

fn json_value(text: &str, what: impl FnOnce() -> String) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("{} is not JSON: {error}", what())))
}
