//! The PostgreSQL store: one database shared by every replica of a tug server.
//!
//! Every write of the [`Store`] trait is one transaction on a pooled connection; `Ok` means that
//! transaction committed. PostgreSQL runs writers concurrently, so where SQLite relies on its
//! single write lock this store says what it locks:
//!
//! - a claim locks the branch's lease row (`FOR UPDATE`), which serialises it with a takeover of
//!   that lease, and takes its tasks with `FOR UPDATE SKIP LOCKED`, so two claimers never take
//!   the same row and neither waits for the other;
//! - numbering a job's events bumps `jobs.last_event_seq` (a row lock), which keeps `seq` dense;
//! - finishing or postponing a task is an `UPDATE … WHERE` the lease still names the owner and
//!   the epoch that claimed it: a writer that lost its lease records nothing.
//!
//! Replicas learn of each other's work through `LISTEN`/`NOTIFY` (see [`PgStore::changes`]): an
//! enqueue notifies its branches (so the replica holding a branch's lease claims at once), a
//! task's end or a new event notifies its job (so a stream on any replica reads it at once). A
//! notification is a hint, never the only way: the writers' dispatcher and the job followers
//! also poll, so a lost notification delays, never loses.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::rows::{
    LeaseCheck, check_new_job, created_job, event_from_row, job_from_prefixed_row, job_from_row,
    json_text, queued_task, still_leased, task_from_row, timestamp,
};
use crate::{
    BranchKey, Clock, Enqueued, Event, Job, JobFilter, JobId, JobState, Level, NewEvent, NewJob,
    Result, Store, StoreChange, StoreError, SystemClock, Task, TaskId, TaskOutcome, TaskState,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Channel of "a branch has new tasks" notifications; the payload is `repository\tbranch`.
const BRANCH_CHANNEL: &str = "tug_branch";
/// Channel of "a job has news" notifications; the payload is the job id.
const JOB_CHANNEL: &str = "tug_job";

/// How far a subscriber of [`PgStore::changes`] may fall behind before it misses notices (it
/// then relies on polling, which it does anyway).
const CHANGES_CAPACITY: usize = 4096;

/// A task running under the lease that claimed it (same owner, same epoch). An expired lease
/// nobody took over still counts, as in the SQLite store.
const LEASED: &str = "tasks.state = 'running' AND (tasks.claimed_by, tasks.claim_epoch) = \
                      (SELECT l.owner, l.epoch FROM branch_leases AS l \
                       WHERE l.repository = tasks.repository AND l.branch = tasks.branch)";

const UNFINISHED: &str = "state IN ('queued', 'running', 'pending')";

const JOB_COLUMNS: &str =
    "id, idempotency_key, kind, requested_by, state, request, created_at, updated_at";
const TASK_COLUMNS: &str = "id, job_id, repository, branch, state, payload, attempts, \
                            last_error, result, not_before, claimed_by, created_at, updated_at";

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:5432/db`, or `postgres:///db?host=/run/postgresql`.
    pub url: String,
    pub max_connections: u32,
    /// How long a request waits for a connection before failing (database down or saturated):
    /// a clear error beats a request that hangs.
    pub acquire_timeout: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// [`Store`] and [`crate::ReleaseStore`] on PostgreSQL (see the module documentation).
pub struct PgStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    changes: broadcast::Sender<StoreChange>,
    /// Signs this store's notifications, so its listener skips what this process already knows
    /// (its own writers and streams are woken directly).
    instance: String,
    /// Enqueues on their way to the group writer (see [`PgStore::enqueue`]).
    enqueues: mpsc::UnboundedSender<PendingEnqueue>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, brings the schema up to date and starts listening for other replicas' changes.
    pub async fn connect(config: &PgConfig) -> Result<Self> {
        Self::connect_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Like [`PgStore::connect`], reading the time from `clock` (tests move time by hand).
    pub async fn connect_with_clock(config: &PgConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        let options: PgConnectOptions = config.url.parse().map_err(|source| {
            StoreError::Connect {
                // The URL may carry a password: never repeat it.
                target: redacted_url(&config.url),
                source,
            }
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(2))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                target: redacted_url(&config.url),
                source,
            })?;
        // Replicas starting together migrate one at a time: sqlx takes an advisory lock.
        MIGRATOR.run(&pool).await?;
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let instance = Uuid::now_v7().simple().to_string();
        let (enqueues, queued) = mpsc::unbounded_channel();
        tokio::spawn(group_enqueues(
            EnqueueWriter {
                pool: pool.clone(),
                clock: clock.clone(),
                instance: instance.clone(),
            },
            queued,
        ));
        let store = PgStore {
            pool,
            clock,
            changes,
            instance,
            enqueues,
        };
        store.spawn_listener().await?;
        tracing::debug!(database = %redacted_url(&config.url), "job store open (PostgreSQL)");
        Ok(store)
    }

    /// The pool, for tests and tools that look at the tables directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Forwards the database's notifications to [`Store::changes`] subscribers. The listener
    /// reconnects by itself when the database goes away; notifications sent meanwhile are lost,
    /// which the pollers cover.
    async fn spawn_listener(&self) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all([BRANCH_CHANNEL, JOB_CHANNEL]).await?;
        let changes = self.changes.clone();
        let instance = self.instance.clone();
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notice)) => {
                        // `…\t<instance>`: a notice of this very store is not news here.
                        let Some((body, sender)) = notice.payload().rsplit_once('\t') else {
                            continue;
                        };
                        if sender == instance {
                            continue;
                        }
                        let change = match notice.channel() {
                            BRANCH_CHANNEL => body.split_once('\t').map(|(repository, branch)| {
                                StoreChange::Branch(BranchKey {
                                    repository: repository.to_owned(),
                                    branch: branch.to_owned(),
                                })
                            }),
                            JOB_CHANNEL => Some(StoreChange::Job(body.to_owned())),
                            _ => None,
                        };
                        if let Some(change) = change {
                            // Nobody subscribed is fine.
                            let _ = changes.send(change);
                        }
                    }
                    // The connection dropped; the next call reconnects (and listens again).
                    Ok(None) => {}
                    // The store was closed: nothing more to listen for.
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(error) => {
                        tracing::warn!(%error, "lost the database notification channel; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(())
    }
}

/// `url` without its password, for messages.
pub(crate) fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable database URL>".to_owned(),
    }
}

#[async_trait]
impl Store for PgStore {
    /// Enqueues share their commit: they go to one task that writes every enqueue waiting
    /// for it in one statement (one transaction, one WAL flush) and answers each caller after
    /// that commit, the way SQLite's group commit does. A lone enqueue is written at once.
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        check_new_job(&job)?;
        let (answer, answered) = oneshot::channel();
        self.enqueues
            .send((job, answer))
            .map_err(|_| StoreError::Corrupt("the enqueue writer has stopped".to_owned()))?;
        answered
            .await
            .map_err(|_| StoreError::Corrupt("the enqueue writer has stopped".to_owned()))?
    }

    async fn job(&self, id: &str) -> Result<Option<Job>> {
        // No transaction around the two reads: the tasks are read after the job row, so they are
        // at least as new as it is — a job whose row says it ended comes with its ended tasks
        // (both are written in one transaction), which is what callers rely on.
        let mut conn = self.pool.acquire().await?;
        load_job(&mut conn, id).await
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>> {
        let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let limit = filter.limit.unwrap_or(JobFilter::DEFAULT_LIMIT);
        let mut query =
            QueryBuilder::<Postgres>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE TRUE"));
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let rows = query.build().fetch_all(&mut *tx).await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let mut tasks_by_job: std::collections::HashMap<String, Vec<Task>> =
            std::collections::HashMap::with_capacity(ids.len());
        for row in sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = ANY($1) ORDER BY id"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        {
            let task = task_from_row(&row)?;
            tasks_by_job
                .entry(task.job_id.clone())
                .or_default()
                .push(task);
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
        let mut appended = self
            .append_events(vec![NewEvent {
                job_id: job_id.to_owned(),
                task_id,
                level,
                message: message.to_owned(),
            }])
            .await?;
        appended.pop().ok_or_else(|| {
            StoreError::Corrupt(format!("the event appended to job {job_id} went missing"))
        })
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        let mut tx = self.pool.begin().await?;
        let appended = append_events(&mut tx, &events, now, Some(&self.instance)).await?;
        tx.commit().await?;
        Ok(appended)
    }

    async fn events(&self, job_id: &str, after_seq: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT job_id, seq, at, level, task_id, message FROM events \
             WHERE job_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(job_id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn job_with_events(&self, id: &str, after_seq: i64) -> Result<Option<(Job, Vec<Event>)>> {
        // One statement, one snapshot: the job beside each of its tasks, and on every row the
        // job's new events as one JSON array (a job has few tasks; the array is built per row).
        let rows = sqlx::query(&format!(
            "{JOB_WITH_TASKS_SELECT}, \
                (SELECT COALESCE(json_agg(json_build_array(e.seq, e.at, e.level, e.task_id, \
                                                           e.message) ORDER BY e.seq), '[]') \
                 FROM events e WHERE e.job_id = j.id AND e.seq > $2)::text AS e_events \
             {JOB_WITH_TASKS_FROM}"
        ))
        .bind(id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        let job = job_from_prefixed_row(first, "j_", tasks)?;
        let events: String = first.try_get("e_events")?;
        let events = events_from_json(id, &events)?;
        Ok(Some((job, events)))
    }

    async fn jobs_with_events(&self, ids: &[JobId]) -> Result<Vec<(Job, Vec<Event>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // As `job_with_events`, for a batch of jobs in one statement.
        let rows = sqlx::query(&format!(
            "{JOB_WITH_TASKS_SELECT}, \
                (SELECT COALESCE(json_agg(json_build_array(e.seq, e.at, e.level, e.task_id, \
                                                           e.message) ORDER BY e.seq), '[]') \
                 FROM events e WHERE e.job_id = j.id)::text AS e_events \
             FROM jobs j JOIN tasks t ON t.job_id = j.id WHERE j.id = ANY($1) \
             ORDER BY j.id, t.id"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut read = Vec::with_capacity(ids.len());
        let mut start = 0;
        while start < rows.len() {
            let id: String = rows[start].try_get("j_id")?;
            let mut end = start + 1;
            while end < rows.len() && rows[end].try_get::<String, _>("j_id")? == id {
                end += 1;
            }
            let job_rows = &rows[start..end];
            let tasks = job_rows
                .iter()
                .map(task_from_row)
                .collect::<Result<Vec<_>>>()?;
            let job = job_from_prefixed_row(&job_rows[0], "j_", tasks)?;
            let events: String = job_rows[0].try_get("e_events")?;
            let events = events_from_json(&id, &events)?;
            read.push((job, events));
            start = end;
        }
        Ok(read)
    }

    async fn runnable_branches(&self) -> Result<Vec<BranchKey>> {
        let now = self.now_ms();
        // As in the SQLite store: the oldest claimable task of a branch must come before its
        // oldest pending task that is not due yet.
        let rows = sqlx::query(&format!(
            "SELECT t.repository, t.branch FROM tasks AS t \
             LEFT JOIN branch_leases AS l \
               ON l.repository = t.repository AND l.branch = t.branch \
             WHERE t.{UNFINISHED} \
             GROUP BY t.repository, t.branch \
             HAVING MIN(CASE WHEN t.state = 'queued' \
                               OR (t.state = 'pending' AND t.not_before <= $1) \
                               OR (t.state = 'running' AND (l.owner IS NULL \
                                                            OR l.expires_at <= $1 \
                                                            OR l.owner <> t.claimed_by)) \
                             THEN t.id END) \
                  < COALESCE(MIN(CASE WHEN t.state = 'pending' AND t.not_before > $1 \
                                      THEN t.id END), {max}) \
             ORDER BY t.repository, t.branch",
            max = i64::MAX,
        ))
        .bind(now)
        .fetch_all(&self.pool)
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
        // The SQLite store's statement: insert, renew (same owner, live: the epoch stays) or
        // take over (expired: the epoch grows). The conflicting row is locked while it is
        // decided, so two replicas never both win.
        let taken: Option<String> = sqlx::query_scalar(
            "INSERT INTO branch_leases AS b (repository, branch, owner, expires_at, epoch) \
             VALUES ($1, $2, $3, $4, 1) \
             ON CONFLICT (repository, branch) DO UPDATE \
               SET owner = excluded.owner, expires_at = excluded.expires_at, \
                   epoch = CASE WHEN b.owner = excluded.owner AND b.expires_at > $5 \
                                THEN b.epoch ELSE b.epoch + 1 END \
               WHERE b.owner = excluded.owner OR b.expires_at <= $5 \
             RETURNING owner",
        )
        .bind(&branch.repository)
        .bind(&branch.branch)
        .bind(owner)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.is_some())
    }

    async fn unlock_branch(&self, branch: &BranchKey, owner: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Expired and moved to a new epoch rather than deleted: what was claimed under it can no
        // longer be recorded, and epochs never restart.
        let given_up = sqlx::query(
            "UPDATE branch_leases SET expires_at = 0, epoch = epoch + 1 \
             WHERE repository = $1 AND branch = $2 AND owner = $3",
        )
        .bind(&branch.repository)
        .bind(&branch.branch)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if given_up.rows_affected() > 0 {
            // Another replica may be waiting for this branch: it takes over at once.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(BRANCH_CHANNEL)
                .bind(format!(
                    "{}\t{}\t{}",
                    branch.repository, branch.branch, self.instance
                ))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim(&self, branch: &BranchKey, owner: &str, max: usize) -> Result<Vec<Task>> {
        let now = self.now_ms();
        let mut tx = self.pool.begin().await?;
        // Locking the lease row orders this claim with any takeover of the branch.
        let lease: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT owner, expires_at, epoch FROM branch_leases \
             WHERE repository = $1 AND branch = $2 FOR UPDATE",
        )
        .bind(&branch.repository)
        .bind(&branch.branch)
        .fetch_optional(&mut *tx)
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
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "UPDATE tasks \
             SET state = 'running', attempts = attempts + 1, claimed_by = $4, \
                 claim_epoch = $6, not_before = NULL, updated_at = $3 \
             WHERE id IN ( \
               SELECT id FROM tasks \
               WHERE repository = $1 AND branch = $2 AND {UNFINISHED} \
                 AND (state = 'queued' \
                      OR (state = 'pending' AND not_before <= $3) \
                      OR (state = 'running' AND (claimed_by <> $4 OR claim_epoch <> $6))) \
                 AND id < COALESCE((SELECT MIN(id) FROM tasks \
                                    WHERE repository = $1 AND branch = $2 \
                                      AND {UNFINISHED} \
                                      AND state = 'pending' AND not_before > $3), {max}) \
               ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) \
             RETURNING {TASK_COLUMNS}",
            max = i64::MAX,
        ))
        .bind(&branch.repository)
        .bind(&branch.branch)
        .bind(now)
        .bind(owner)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .bind(epoch)
        .fetch_all(&mut *tx)
        .await?;
        let mut tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        tasks.sort_by_key(|task| task.id);
        let jobs: BTreeSet<String> = tasks.iter().map(|task| task.job_id.clone()).collect();
        refresh_job_states(&mut tx, &jobs, now).await?;
        tx.commit().await?;
        Ok(tasks)
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
        let now = self.now_ms();
        // Serialised first; then one UPDATE for the whole batch, the lease check riding in it,
        // and only refused tasks looked at again to say why.
        let mut results: Vec<Option<Result<()>>> = Vec::with_capacity(outcomes.len());
        let mut batch: Vec<(usize, TaskId, &'static str, String, Option<String>)> = Vec::new();
        let mut task_events = Vec::with_capacity(outcomes.len());
        let mut seen = BTreeSet::new();
        for (at, (task_id, outcome, events)) in outcomes.into_iter().enumerate() {
            task_events.push(events);
            let (state, result, error) = match outcome {
                TaskOutcome::Succeeded(result) => (TaskState::Succeeded, result, None),
                TaskOutcome::Failed(error) => (
                    TaskState::Failed,
                    serde_json::json!({ "error": error }),
                    Some(error),
                ),
            };
            match json_text(&result, "task result") {
                // A task listed twice: the later entry finds it finished, as one by one.
                Ok(_) if !seen.insert(task_id) => {
                    results.push(Some(Err(StoreError::LeaseLost(task_id))));
                }
                Ok(text) => {
                    results.push(None);
                    batch.push((at, task_id, state.as_str(), text, error));
                }
                Err(refusal) => results.push(Some(Err(refusal))),
            }
        }
        let mut tx = self.pool.begin().await?;
        let ids: Vec<TaskId> = batch.iter().map(|b| b.1).collect();
        let states: Vec<&str> = batch.iter().map(|b| b.2).collect();
        let texts: Vec<&str> = batch.iter().map(|b| b.3.as_str()).collect();
        let errors: Vec<Option<&str>> = batch.iter().map(|b| b.4.as_deref()).collect();
        // A success keeps the last transient error: it tells why the task needed retries.
        let finished: Vec<(TaskId, String)> = sqlx::query_as(&format!(
            "UPDATE tasks SET state = u.state, result = u.result, \
                              last_error = COALESCE(u.error, tasks.last_error), updated_at = $5 \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) \
                  AS u(id, state, result, error) \
             WHERE tasks.id = u.id AND {LEASED} RETURNING tasks.id, tasks.job_id"
        ))
        .bind(&ids)
        .bind(&states)
        .bind(&texts)
        .bind(&errors)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let finished: std::collections::HashMap<TaskId, String> = finished.into_iter().collect();
        let mut jobs = BTreeSet::new();
        let mut events = Vec::new();
        for (at, task_id, ..) in batch {
            let outcome = match finished.get(&task_id) {
                Some(job_id) => {
                    events.extend(std::mem::take(&mut task_events[at]).into_iter().map(
                        |(level, message)| NewEvent {
                            job_id: job_id.clone(),
                            task_id: Some(task_id),
                            level,
                            message,
                        },
                    ));
                    jobs.insert(job_id.clone());
                    Ok(())
                }
                None => Err(lease_refusal(&mut tx, task_id).await?),
            };
            results[at] = Some(outcome);
        }
        // The finished tasks and their jobs exist and are locked: no row can be refused, and
        // the jobs are notified once, below, with their new states.
        append_events(&mut tx, &events, now, None).await?;
        refresh_job_states(&mut tx, &jobs, now).await?;
        notify_jobs(&mut tx, &jobs, &self.instance).await?;
        tx.commit().await?;
        results
            .into_iter()
            .map(|result| {
                result.ok_or_else(|| {
                    StoreError::Corrupt("a finished task lost its outcome".to_owned())
                })
            })
            .collect()
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
        let now = self.now_ms();
        let not_before =
            now.saturating_add(i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.pool.begin().await?;
        let mut results = Vec::with_capacity(tasks.len());
        let mut jobs = BTreeSet::new();
        for (task_id, error) in tasks {
            let job_id: Option<String> = sqlx::query_scalar(&format!(
                "UPDATE tasks SET state = 'pending', last_error = $2, not_before = $3, \
                                  updated_at = $4 \
                 WHERE id = $1 AND {LEASED} RETURNING job_id"
            ))
            .bind(task_id)
            .bind(&error)
            .bind(not_before)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            match job_id {
                Some(job_id) => {
                    jobs.insert(job_id);
                    results.push(Ok(()));
                }
                None => results.push(Err(lease_refusal(&mut tx, task_id).await?)),
            }
        }
        refresh_job_states(&mut tx, &jobs, now).await?;
        notify_jobs(&mut tx, &jobs, &self.instance).await?;
        tx.commit().await?;
        Ok(results)
    }

    async fn waiting(&self, branch: &BranchKey) -> Result<u64> {
        // `{UNFINISHED}` lets the partial index of unfinished tasks answer.
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM tasks WHERE repository = $1 AND branch = $2 \
               AND {UNFINISHED} \
               AND (state = 'queued' OR (state = 'pending' AND not_before <= $3))"
        ))
        .bind(&branch.repository)
        .bind(&branch.branch)
        .bind(self.now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn queue_depths(&self) -> Result<Vec<(BranchKey, u64)>> {
        let rows = sqlx::query(&format!(
            "SELECT repository, branch, COUNT(*) AS depth FROM tasks WHERE {UNFINISHED} \
             GROUP BY repository, branch ORDER BY repository, branch"
        ))
        .fetch_all(&self.pool)
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

    async fn claim_notification(&self, job_id: &str, channel: &str) -> Result<bool> {
        let claimed = sqlx::query(
            "INSERT INTO notifications_sent (job_id, channel, at) \
             SELECT id, $2, $3 FROM jobs WHERE id = $1 AND state IN ('succeeded', 'failed') \
             ON CONFLICT (job_id, channel) DO NOTHING",
        )
        .bind(job_id)
        .bind(channel)
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() > 0)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn changes(&self) -> Option<broadcast::Receiver<StoreChange>> {
        Some(self.changes.subscribe())
    }
}

/// Tells every other replica that these jobs have news (delivered when the transaction
/// commits), signed with the sending store's `instance`.
async fn notify_jobs(
    conn: &mut PgConnection,
    jobs: &BTreeSet<String>,
    instance: &str,
) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = jobs.iter().map(String::as_str).collect();
    sqlx::query("SELECT pg_notify($1, id || E'\\t' || $3) FROM unnest($2::text[]) AS id")
        .bind(JOB_CHANNEL)
        .bind(&ids)
        .bind(instance)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn existing_job(conn: &mut PgConnection, job: &NewJob) -> Result<Enqueued> {
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE idempotency_key = $1")
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

/// Appends events in order, numbering each job's densely; all or none (the caller's
/// transaction). Fails like the SQLite store for an unknown job or a task of another job.
/// `notify_as`: the instance to notify the other replicas as, or `None` when the caller
/// notifies the jobs itself (and has made sure every event's job and task exist).
async fn append_events(
    conn: &mut PgConnection,
    events: &[NewEvent],
    now: i64,
    notify_as: Option<&str>,
) -> Result<Vec<Event>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut counts: Vec<(String, i64)> = Vec::new();
    for event in events {
        match counts.iter_mut().find(|(id, _)| *id == event.job_id) {
            Some((_, count)) => *count += 1,
            None => counts.push((event.job_id.clone(), 1)),
        }
    }
    // Row locks on the jobs, taken in id order so two appenders never deadlock.
    counts.sort();
    let ids: Vec<&str> = counts.iter().map(|(id, _)| id.as_str()).collect();
    let ns: Vec<i64> = counts.iter().map(|(_, n)| *n).collect();
    let numbered: Vec<(String, i64)> = sqlx::query_as(
        "UPDATE jobs SET last_event_seq = last_event_seq + c.n \
         FROM (SELECT * FROM unnest($1::text[], $2::bigint[]) AS c(id, n) ORDER BY id) AS c \
         WHERE jobs.id = c.id RETURNING jobs.id, jobs.last_event_seq",
    )
    .bind(&ids)
    .bind(&ns)
    .fetch_all(&mut *conn)
    .await?;
    let mut next: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for (job_id, last) in numbered {
        if let Some((_, count)) = counts.iter().find(|(id, _)| *id == job_id) {
            next.insert(job_id, last - count + 1);
        }
    }
    if next.len() < counts.len() {
        return Err(refused_event(conn, events, &next).await?);
    }
    let at = timestamp(now, || "time of appended events".to_owned())?;
    let mut appended = Vec::with_capacity(events.len());
    for event in events {
        let seq = next.get_mut(&event.job_id).ok_or_else(|| {
            StoreError::Corrupt(format!("job {} lost its event numbering", event.job_id))
        })?;
        appended.push(Event {
            job_id: event.job_id.clone(),
            seq: *seq,
            at,
            level: event.level,
            task_id: event.task_id,
            message: event.message.clone(),
        });
        *seq += 1;
    }
    let job_ids: Vec<&str> = appended.iter().map(|e| e.job_id.as_str()).collect();
    let seqs: Vec<i64> = appended.iter().map(|e| e.seq).collect();
    let levels: Vec<&str> = appended.iter().map(|e| e.level.as_str()).collect();
    let task_ids: Vec<Option<i64>> = appended.iter().map(|e| e.task_id).collect();
    let messages: Vec<&str> = appended.iter().map(|e| e.message.as_str()).collect();
    let insert = || {
        sqlx::query(
            "INSERT INTO events (job_id, seq, at, level, task_id, message) \
             SELECT e.job_id, e.seq, $1, e.level, e.task_id, e.message \
             FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::text[]) \
                  AS e(job_id, seq, level, task_id, message)",
        )
        .bind(now)
        .bind(&job_ids)
        .bind(&seqs)
        .bind(&levels)
        .bind(&task_ids)
        .bind(&messages)
    };
    let Some(instance) = notify_as else {
        insert().execute(&mut *conn).await?;
        return Ok(appended);
    };
    // A savepoint, so a refused row leaves the caller's transaction usable to say why.
    sqlx::query("SAVEPOINT events").execute(&mut *conn).await?;
    let inserted = insert().execute(&mut *conn).await;
    match inserted {
        Ok(_) => {
            sqlx::query("RELEASE SAVEPOINT events")
                .execute(&mut *conn)
                .await?;
            let jobs: BTreeSet<String> = counts.into_iter().map(|(id, _)| id).collect();
            notify_jobs(conn, &jobs, instance).await?;
            Ok(appended)
        }
        Err(sqlx::Error::Database(error))
            if error.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
        {
            sqlx::query("ROLLBACK TO SAVEPOINT events")
                .execute(&mut *conn)
                .await?;
            Err(refused_event(conn, events, &next).await?)
        }
        Err(error) => Err(error.into()),
    }
}

async fn refused_event(
    conn: &mut PgConnection,
    events: &[NewEvent],
    known: &std::collections::HashMap<String, i64>,
) -> Result<StoreError> {
    for event in events {
        if !known.contains_key(&event.job_id) {
            return Ok(StoreError::UnknownJob(event.job_id.clone()));
        }
        let Some(task_id) = event.task_id else {
            continue;
        };
        let owner: Option<String> = sqlx::query_scalar("SELECT job_id FROM tasks WHERE id = $1")
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

/// Why a task could not be finished or postponed: unknown, or not running under its lease.
async fn lease_refusal(conn: &mut PgConnection, task_id: TaskId) -> Result<StoreError> {
    let row: Option<LeaseCheck> = sqlx::query_as(
        "SELECT t.job_id, t.state, t.claimed_by, l.owner, \
                COALESCE(t.claim_epoch = l.epoch, FALSE) FROM tasks AS t \
         LEFT JOIN branch_leases AS l ON l.repository = t.repository AND l.branch = t.branch \
         WHERE t.id = $1",
    )
    .bind(task_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(check) = row else {
        return Ok(StoreError::UnknownTask(task_id));
    };
    Ok(if still_leased(&check) {
        StoreError::Corrupt(format!(
            "task {task_id} runs under its lease but could not be updated"
        ))
    } else {
        StoreError::LeaseLost(task_id)
    })
}

async fn refresh_job_states(
    conn: &mut PgConnection,
    job_ids: &BTreeSet<String>,
    now: i64,
) -> Result<()> {
    if job_ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = job_ids.iter().map(String::as_str).collect();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT job_id, state FROM tasks WHERE job_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let mut states: std::collections::BTreeMap<&str, Vec<TaskState>> =
        ids.iter().map(|id| (*id, Vec::new())).collect();
    for (job_id, name) in &rows {
        let state = TaskState::parse(name).ok_or_else(|| {
            StoreError::Corrupt(format!("a task of job {job_id} has unknown state {name:?}"))
        })?;
        states.entry(job_id.as_str()).or_default().push(state);
    }
    let (ids, new_states): (Vec<&str>, Vec<&str>) = states
        .into_iter()
        .map(|(job_id, tasks)| (job_id, JobState::from_tasks(tasks).as_str()))
        .unzip();
    sqlx::query(
        "UPDATE jobs SET state = u.state, updated_at = $3 \
         FROM unnest($1::text[], $2::text[]) AS u(id, state) WHERE jobs.id = u.id",
    )
    .bind(&ids)
    .bind(&new_states)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A job's columns (prefixed `j_`) beside each of its tasks' (see [`load_job`]).
const JOB_WITH_TASKS_SELECT: &str = "SELECT j.id AS j_id, j.idempotency_key AS j_idempotency_key, \
        j.kind AS j_kind, j.requested_by AS j_requested_by, \
        j.state AS j_state, j.request AS j_request, \
        j.created_at AS j_created_at, j.updated_at AS j_updated_at, \
        t.id, t.job_id, t.repository, t.branch, t.state, t.payload, t.attempts, \
        t.last_error, t.result, t.not_before, t.claimed_by, t.created_at, t.updated_at";
/// The rest of that statement, for the job `$1`.
const JOB_WITH_TASKS_FROM: &str =
    "FROM jobs j JOIN tasks t ON t.job_id = j.id WHERE j.id = $1 ORDER BY t.id";

/// Events as `job_with_events` aggregates them: `[[seq, at, level, task_id, message], …]`.
fn events_from_json(job_id: &str, text: &str) -> Result<Vec<Event>> {
    type Row = (i64, i64, String, Option<i64>, String);
    let rows: Vec<Row> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("events of job {job_id}: {e}")))?;
    rows.into_iter()
        .map(|(seq, at, level, task_id, message)| {
            let level = Level::parse(&level).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "event {seq} of job {job_id} has unknown level {level:?}"
                ))
            })?;
            Ok(Event {
                job_id: job_id.to_owned(),
                seq,
                at: timestamp(at, || format!("event {seq} of job {job_id}"))?,
                level,
                task_id,
                message,
            })
        })
        .collect()
}

async fn load_job(conn: &mut PgConnection, id: &str) -> Result<Option<Job>> {
    // One statement, so one round trip and one snapshot: the job's columns (prefixed) beside
    // each of its tasks. Every job has at least one task, so no row means no job.
    let rows = sqlx::query(&format!("{JOB_WITH_TASKS_SELECT} {JOB_WITH_TASKS_FROM}"))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
    job_from_prefixed_row(first, "j_", tasks).map(Some)
}

/// An enqueue waiting for its group, and where its answer goes.
type PendingEnqueue = (NewJob, oneshot::Sender<Result<Enqueued>>);

/// Most enqueues written by one statement.
const ENQUEUE_GROUP_MAX: usize = 256;

/// What the group writer of enqueues needs of the store.
struct EnqueueWriter {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    instance: String,
}

/// The group writer of enqueues: takes every enqueue waiting (never waits for company), writes
/// them with one statement, answers each caller once it committed; until the store is dropped.
///
/// Invariants: an enqueue is answered `Ok` only after the statement holding it committed; one
/// group holds at most one job per idempotency key (a second one goes in the next group, where
/// it finds the first one's job); jobs are inserted, and their tasks numbered, in arrival order.
async fn group_enqueues(
    writer: EnqueueWriter,
    mut queued: mpsc::UnboundedReceiver<PendingEnqueue>,
) {
    let writer = Arc::new(writer);
    let mut waiting: std::collections::VecDeque<PendingEnqueue> = Default::default();
    loop {
        if waiting.is_empty() {
            match queued.recv().await {
                Some(pending) => waiting.push_back(pending),
                None => return,
            }
        }
        while waiting.len() < ENQUEUE_GROUP_MAX {
            match queued.try_recv() {
                Ok(pending) => waiting.push_back(pending),
                Err(_) => break,
            }
        }
        let mut keys = std::collections::HashSet::new();
        let mut group = Vec::with_capacity(waiting.len());
        let mut later = std::collections::VecDeque::new();
        for pending in waiting.drain(..) {
            match &pending.0.idempotency_key {
                Some(key) if !keys.insert(key.clone()) => later.push_back(pending),
                _ => group.push(pending),
            }
        }
        waiting = later;
        write_group(&writer, group).await;
    }
}

async fn write_group(writer: &Arc<EnqueueWriter>, group: Vec<PendingEnqueue>) {
    let (jobs, answers): (Vec<NewJob>, Vec<_>) = group.into_iter().unzip();
    match writer.insert(&jobs).await {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                // A caller that went away still has its job stored; its key finds it again.
                let _ = answer.send(result);
            }
        }
        // The database refused the statement: written one by one, only a faulty job fails.
        // Concurrently, so a database going down fails them all within one connect timeout.
        Err(StoreError::Database(sqlx::Error::Database(_))) if jobs.len() > 1 => {
            let mut alone = tokio::task::JoinSet::new();
            for (job, answer) in jobs.into_iter().zip(answers) {
                let writer = writer.clone();
                alone.spawn(async move {
                    let result =
                        writer
                            .insert(std::slice::from_ref(&job))
                            .await
                            .and_then(|mut results| {
                                results.pop().unwrap_or_else(|| {
                                    Err(StoreError::Corrupt("an enqueue got no answer".to_owned()))
                                })
                            });
                    let _ = answer.send(result);
                });
            }
            while alone.join_next().await.is_some() {}
        }
        Err(error) => {
            // Nothing of the group is stored; every caller hears why.
            let error = match error {
                StoreError::Database(error) => Arc::new(error),
                other => {
                    for answer in answers {
                        let _ = answer.send(Err(StoreError::Corrupt(other.to_string())));
                    }
                    return;
                }
            };
            for answer in answers {
                let _ = answer.send(Err(StoreError::GroupCommit(error.clone())));
            }
        }
    }
}

impl EnqueueWriter {
    /// Inserts `jobs` (each checked by [`check_new_job`]) with their tasks and the notices to the
    /// other replicas in one statement — one round trip, one implicit transaction, one WAL
    /// flush. The unique index arbitrates between requests with the same key: a concurrent
    /// insert of the same key makes this one wait for it; then that job is not inserted, no task
    /// row of it comes back, and the job already stored under the key is read and answered.
    async fn insert(&self, jobs: &[NewJob]) -> Result<Vec<Result<Enqueued>>> {
        let now = self.clock.now().as_millisecond();
        let at = timestamp(now, || "creation time of an enqueued job".to_owned())?;
        let ids: Vec<String> = jobs.iter().map(|_| Uuid::now_v7().to_string()).collect();
        let requests = jobs
            .iter()
            .map(|job| json_text(&job.request, "request"))
            .collect::<Result<Vec<_>>>()?;
        let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.idempotency_key.as_deref()).collect();
        let kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
        let requesters: Vec<&str> = jobs.iter().map(|j| j.requested_by.as_str()).collect();
        let mut task_jobs = Vec::new();
        let mut repositories = Vec::new();
        let mut branches = Vec::new();
        let mut payloads = Vec::new();
        let mut notices = Vec::new();
        for (id, job) in ids.iter().zip(jobs) {
            for task in &job.tasks {
                task_jobs.push(id.as_str());
                repositories.push(task.branch.repository.as_str());
                branches.push(task.branch.branch.as_str());
                payloads.push(json_text(&task.payload, "task payload")?);
                notices.push(format!(
                    "{}\t{}\t{}",
                    task.branch.repository, task.branch.branch, self.instance
                ));
            }
        }
        // Task ids are handed out in array order (the ORDER BY), which is the order the tasks
        // of one branch run in: arrival order.
        let rows: Vec<(TaskId, String, String, String, i64)> = sqlx::query_as(
            "WITH input AS ( \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
                                      $5::text[]) \
                     WITH ORDINALITY AS j(id, idempotency_key, kind, requested_by, request, n)), \
             job AS ( \
                 INSERT INTO jobs (id, idempotency_key, kind, requested_by, state, request, \
                                   created_at, updated_at) \
                 SELECT id, idempotency_key, kind, requested_by, 'queued', request, $6, $6 \
                 FROM input ORDER BY n \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING id), \
             task AS ( \
                 INSERT INTO tasks (job_id, repository, branch, state, payload, created_at, \
                                    updated_at) \
                 SELECT t.job_id, t.repository, t.branch, 'queued', t.payload, $6, $6 \
                 FROM unnest($7::text[], $8::text[], $9::text[], $10::text[]) WITH ORDINALITY \
                      AS t(job_id, repository, branch, payload, n) \
                 JOIN job ON job.id = t.job_id \
                 ORDER BY t.n \
                 RETURNING id, job_id, repository, branch), \
             notified AS ( \
                 SELECT pg_notify($11, x.notice) \
                 FROM unnest($12::text[], $13::text[]) AS x(job_id, notice) \
                 JOIN job ON job.id = x.job_id) \
             SELECT task.id, task.job_id, task.repository, task.branch, \
                    (SELECT count(*) FROM notified) \
             FROM task",
        )
        .bind(&ids)
        .bind(&keys)
        .bind(&kinds)
        .bind(&requesters)
        .bind(&requests)
        .bind(now)
        .bind(&task_jobs)
        .bind(&repositories)
        .bind(&branches)
        .bind(&payloads)
        .bind(BRANCH_CHANNEL)
        .bind(&task_jobs)
        .bind(&notices)
        .fetch_all(&self.pool)
        .await?;
        let mut stored: std::collections::HashMap<(String, String, String), TaskId> = rows
            .into_iter()
            .map(|(task, job, repository, branch, _)| ((job, repository, branch), task))
            .collect();
        let mut results = Vec::with_capacity(jobs.len());
        for (id, job) in ids.into_iter().zip(jobs) {
            let mut tasks = Vec::with_capacity(job.tasks.len());
            for task in &job.tasks {
                let key = (
                    id.clone(),
                    task.branch.repository.clone(),
                    task.branch.branch.clone(),
                );
                let Some(task_id) = stored.remove(&key) else {
                    break;
                };
                tasks.push(queued_task(task_id, &id, task, at));
            }
            if tasks.is_empty() {
                // Every job has a task (`check_new_job`): none stored means the key was taken.
                let read = async {
                    let mut conn = self.pool.acquire().await?;
                    existing_job(&mut conn, job).await
                };
                results.push(read.await);
                continue;
            }
            if tasks.len() != job.tasks.len() {
                results.push(Err(StoreError::Corrupt(format!(
                    "a task of job {id} vanished while being stored"
                ))));
                continue;
            }
            results.push(Ok(created_job(id, job, tasks, at)));
        }
        Ok(results)
    }
}
