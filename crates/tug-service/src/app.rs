//! The service: its shared state, start-up and the deploy submission every front end calls.

use std::sync::Arc;

use tracing::Instrument as _;
use tug_store::{
    AuditLog, AuditQuery, AuditRecord, Enqueued, Event, Job, JobFilter, JobState, NewJob,
    ReleaseStore, Store, StoreError,
};

use crate::auth::{Authorizer, Principal, Target, Verb};
use crate::config::Config;
use crate::error::ServiceError;
use crate::intake::job_from_request;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::signals::JobSignals;
use crate::writer::Writers;

/// What every request handler and writer shares.
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    /// Artifacts, the release index, unpins and rollout states (the same database as `store`).
    pub releases: Arc<dyn ReleaseStore>,
    /// The audit trail (the same database as `store`).
    pub audit: Arc<dyn AuditLog>,
    pub authorizer: Authorizer,
    pub metrics: Arc<Metrics>,
    pub writers: Arc<Writers>,
    /// Tells the streams following a job that it has news.
    pub signal: Arc<JobSignals>,
    pub shutdown: Shutdown,
    /// The callers waiting on a stream for their job (`limits.max_waiting_streams`).
    pub waiting: Arc<crate::streams::WaitingStreams>,
    /// How often a stream reads its job without being told of news: the only way to learn
    /// what another replica did when a notification is lost, and only a safety net when this
    /// process is the store's one user and signals every change itself.
    pub follow_poll: std::time::Duration,
}

impl App {
    /// Whether this replica can serve: the database answers within two seconds and the server
    /// is not shutting down. `Err` says why not, for health checks.
    pub async fn health(&self) -> Result<(), String> {
        if self.shutdown.is_set() {
            return Err("the server is shutting down".to_owned());
        }
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the database is unreachable: {e}")),
            Err(_) => Err("the database did not answer within 2 s".to_owned()),
        }
    }

    /// Validates, authorises and stores a deploy request; wakes the writers of its branches.
    /// Returns only once the job is committed to the store.
    pub async fn submit(
        &self,
        token: Option<&str>,
        request: tug_spec::DeployRequest,
        idempotency_key: Option<String>,
    ) -> Result<Enqueued, ServiceError> {
        let principal = self.caller(token).await;
        let entry = crate::audit::Entry::for_caller("deploy", principal.as_ref().ok());
        let result = match &principal {
            Ok(principal) => {
                self.submit_unaudited(principal, request, idempotency_key)
                    .await
            }
            Err(e) => Err(e.clone()),
        };
        let record = match &result {
            Ok(enqueued) => {
                let mut entry = entry;
                if let Some(task) = enqueued.job.tasks.first() {
                    entry = entry.branch(&task.branch.repository, &task.branch.branch);
                }
                let again = if enqueued.created {
                    ""
                } else {
                    " (idempotency key seen before)"
                };
                entry.accepted(format!(
                    "job {}: {} branch(es){again}",
                    enqueued.job.id,
                    enqueued.job.tasks.len()
                ))
            }
            Err(e) => entry.refused(e),
        };
        crate::audit::write(self.audit.as_ref(), [record]).await;
        result
    }

    /// [`App::submit`] for a caller that follows the job: also watches it, from before it is
    /// stored. When nothing about the job was signalled between its storing and the watch, the
    /// follower starts from the job as stored instead of reading it back (a new job has no
    /// events yet): two reads fewer per request, which on PostgreSQL are round trips.
    pub async fn submit_to_follow(
        &self,
        token: Option<&str>,
        request: tug_spec::DeployRequest,
        idempotency_key: Option<String>,
    ) -> Result<Submitted, ServiceError> {
        let mut signalled = self.signal.subscribe_all();
        let enqueued = self.submit(token, request, idempotency_key).await?;
        let watch = self.signal.watch(&enqueued.job.id);
        let quiet = enqueued.created
            && loop {
                match signalled.try_recv() {
                    Ok(id) if id == enqueued.job.id => break false,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break true,
                    // Fell behind or closed: it may have missed this job's signal.
                    Err(_) => break false,
                }
            };
        let head_start = quiet.then_some(HeadStart { watch });
        Ok(Submitted {
            enqueued,
            head_start,
        })
    }

    /// Who presents `token`, with their grants; operations check their verb on it.
    pub async fn caller(&self, token: Option<&str>) -> Result<Principal, ServiceError> {
        self.authorizer
            .authenticate(token)
            .await
            .map_err(ServiceError::from)
    }

    /// [`App::caller`] for a read: a valid credential with the `read` verb on `target`.
    pub async fn reader(
        &self,
        token: Option<&str>,
        target: &Target,
    ) -> Result<Principal, ServiceError> {
        let principal = self.caller(token).await?;
        principal.check(Verb::Read, target)?;
        Ok(principal)
    }

    async fn submit_unaudited(
        &self,
        principal: &Principal,
        request: tug_spec::DeployRequest,
        idempotency_key: Option<String>,
    ) -> Result<Enqueued, ServiceError> {
        let job = job_from_request(
            &self.config,
            principal,
            request,
            idempotency_key,
            jiff::Timestamp::now(),
        )
        .map_err(ServiceError::from)?;
        let enqueued = self
            .enqueue(job)
            .await
            .map_err(|e| ServiceError::store(&e))?;
        // Inside the request's span: this line ties the request id to the job id the writers
        // log from here on.
        tracing::info!(
            job_id = %enqueued.job.id,
            created = enqueued.created,
            tasks = enqueued.job.tasks.len(),
            requested_by = %enqueued.job.requested_by,
            "job accepted"
        );
        if enqueued.created {
            for t in &enqueued.job.tasks {
                self.writers.wake(&t.branch).await;
            }
        }
        Ok(enqueued)
    }

    /// The audit trail, newest first; any valid token may read it.
    pub async fn audit_log(
        &self,
        token: Option<&str>,
        query: AuditQuery,
    ) -> Result<Vec<AuditRecord>, ServiceError> {
        self.reader(token, &Target::new()).await?;
        if query
            .limit
            .is_some_and(|l| l == 0 || l > AuditQuery::MAX_LIMIT)
        {
            return Err(ServiceError::invalid_field(
                "limit",
                format!("limit: must be between 1 and {}", AuditQuery::MAX_LIMIT),
            ));
        }
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since >= until
        {
            return Err(ServiceError::invalid_field(
                "until",
                "until: must be later than since",
            ));
        }
        self.audit
            .audit(&query)
            .await
            .map_err(|e| ServiceError::store(&e))
    }
}

impl App {
    /// Stores a job (deploy or release) in a `store.enqueue` span; each task's payload keeps
    /// the trace context of the current span (the request's), so the writer that lands it joins the request's trace.
    pub(crate) async fn enqueue(&self, mut job: NewJob) -> Result<Enqueued, StoreError> {
        let first = job.tasks.first().map(|t| t.branch.clone());
        let span = tracing::info_span!(
            "store.enqueue",
            kind = %job.kind,
            tasks = job.tasks.len(),
            repository = first.as_ref().map(|b| b.repository.as_str()),
            branch = first.as_ref().map(|b| b.branch.as_str()),
        );
        for task in &mut job.tasks {
            crate::telemetry::stamp_payload(&mut task.payload);
        }
        self.store.enqueue(job).instrument(span).await
    }
}

/// The most jobs one listing returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobsQuery {
    pub repository: Option<String>,
    pub state: Option<JobState>,
    /// `None`: the store's default.
    pub limit: Option<u32>,
}

impl App {
    /// One job, with its events when asked for.
    pub async fn job(
        &self,
        token: Option<&str>,
        id: &str,
        with_events: bool,
    ) -> Result<(Job, Vec<Event>), ServiceError> {
        let principal = self.caller(token).await?;
        // A caller may always follow the jobs it submitted; other jobs need `read`.
        let may_read_all = principal.check(Verb::Read, &Target::new());
        if id.is_empty() {
            may_read_all?;
            return Err(ServiceError::invalid_field("id", "id: must not be empty"));
        }
        let job = self
            .store
            .job(id)
            .await
            .map_err(|e| ServiceError::store(&e))?;
        match (&job, may_read_all) {
            (_, Ok(())) => {}
            (Some(job), Err(_)) if job.requested_by == principal.name && !principal.anonymous => {}
            (_, Err(e)) => return Err(e.into()),
        }
        let job = job.ok_or_else(|| ServiceError::not_found(format!("no job {id}")))?;
        let events = if with_events {
            self.store
                .events(id, 0)
                .await
                .map_err(|e| ServiceError::store(&e))?
        } else {
            Vec::new()
        };
        Ok((job, events))
    }

    /// The newest jobs matching `query`.
    pub async fn list_jobs(
        &self,
        token: Option<&str>,
        query: JobsQuery,
    ) -> Result<Vec<Job>, ServiceError> {
        self.reader(token, &Target::new()).await?;
        if query.limit.is_some_and(|l| l == 0 || l > MAX_LIST_LIMIT) {
            return Err(ServiceError::invalid_field(
                "limit",
                format!("limit: must be between 1 and {MAX_LIST_LIMIT}"),
            ));
        }
        let filter = JobFilter {
            repository: query.repository.filter(|r| !r.is_empty()),
            state: query.state,
            limit: query.limit,
        };
        self.store
            .list_jobs(&filter)
            .await
            .map_err(|e| ServiceError::store(&e))
    }
}

/// A stored deploy and, when nothing happened to it yet, what its follower starts from.
pub struct Submitted {
    pub enqueued: Enqueued,
    pub head_start: Option<HeadStart>,
}

/// A watch on a job just stored, taken before anything could signal it: the job is as the
/// caller was told (queued, no events), so following it starts by waiting.
pub struct HeadStart {
    pub(crate) watch: crate::signals::JobWatch,
}
