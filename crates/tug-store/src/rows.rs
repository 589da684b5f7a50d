//! Rows of the job queue read back into their types, and the checks and conversions every
//! backend shares.

use std::collections::BTreeSet;

use jiff::Timestamp;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::{
    BranchKey, Enqueued, Event, Job, JobState, Level, NewJob, NewTask, Result, StoreError, Task,
    TaskId, TaskState,
};

pub(crate) fn job_from_row<R>(row: &R, tasks: Vec<Task>) -> Result<Job>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    job_from_prefixed_row(row, "", tasks)
}

/// [`job_from_row`] for a row whose job columns are named `{prefix}id`, `{prefix}state`, …
/// (a job joined with its tasks, whose own columns keep their names).
pub(crate) fn job_from_prefixed_row<R>(row: &R, prefix: &str, tasks: Vec<Task>) -> Result<Job>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let column = |name: &str| format!("{prefix}{name}");
    let id: String = row.try_get(column("id").as_str())?;
    let state: String = row.try_get(column("state").as_str())?;
    let state = JobState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("job {id} has unknown state {state:?}")))?;
    let request: String = row.try_get(column("request").as_str())?;
    let created_at = timestamp(row.try_get(column("created_at").as_str())?, || {
        format!("created_at of job {id}")
    })?;
    let updated_at = timestamp(row.try_get(column("updated_at").as_str())?, || {
        format!("updated_at of job {id}")
    })?;
    Ok(Job {
        request: json_value(&request, || format!("request of job {id}"))?,
        idempotency_key: row.try_get(column("idempotency_key").as_str())?,
        kind: row.try_get(column("kind").as_str())?,
        requested_by: row.try_get(column("requested_by").as_str())?,
        state,
        created_at,
        updated_at,
        tasks,
        id,
    })
}

pub(crate) fn task_from_row<R>(row: &R) -> Result<Task>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
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

pub(crate) fn event_from_row<R>(row: &R) -> Result<Event>
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
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

/// What the lease check of a task reads: its job, state and claimant, the branch's lease holder,
/// and whether the task was claimed under the lease's current epoch.
pub(crate) type LeaseCheck = (String, String, Option<String>, Option<String>, bool);

/// Whether a task may still be recorded by the writer that claimed it: it runs, and the branch's
/// lease names its claimant at the epoch it was claimed under. An expired lease that nobody took
/// over still counts: the writer's push happened, and recording it beats running it again.
pub(crate) fn still_leased(check: &LeaseCheck) -> bool {
    let (_, state, claimed_by, holder, same_epoch) = check;
    state == TaskState::Running.as_str()
        && claimed_by.is_some()
        && claimed_by == holder
        && *same_epoch
}

pub(crate) fn check_new_job(job: &NewJob) -> Result<()> {
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

pub(crate) fn timestamp(ms: i64, what: impl FnOnce() -> String) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms)
        .map_err(|error| StoreError::Corrupt(format!("{}: {ms} ms is not a time: {error}", what())))
}

pub(crate) fn json_text(value: &serde_json::Value, what: &str) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|error| StoreError::Invalid(format!("{what} is not storable JSON: {error}")))
}

pub(crate) fn json_value(text: &str, what: impl FnOnce() -> String) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("{} is not JSON: {error}", what())))
}

/// A task as an enqueue stored it, built from what was written rather than read back: a
/// statement fewer on the writer's critical path.
pub(crate) fn queued_task(id: TaskId, job_id: &str, task: &NewTask, at: Timestamp) -> Task {
    Task {
        id,
        job_id: job_id.to_owned(),
        branch: task.branch.clone(),
        state: TaskState::Queued,
        payload: task.payload.clone(),
        attempts: 0,
        last_error: None,
        result: None,
        claimed_by: None,
        retry_at: None,
        created_at: at,
        updated_at: at,
    }
}

/// A job an enqueue created, with the tasks it stored.
pub(crate) fn created_job(id: String, job: &NewJob, tasks: Vec<Task>, at: Timestamp) -> Enqueued {
    Enqueued {
        job: Job {
            id,
            idempotency_key: job.idempotency_key.clone(),
            kind: job.kind.clone(),
            requested_by: job.requested_by.clone(),
            state: JobState::Queued,
            request: job.request.clone(),
            created_at: at,
            updated_at: at,
            tasks,
        },
        created: true,
    }
}
