//! The REST API (axum): the Delivery server's `POST /api/v1/deploy` with an NDJSON progress
//! stream, job queries, health and Prometheus metrics.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tug_store::{Event, Job, JobState, Level};
use utoipa::{IntoParams, IntoResponses, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use tug_service::app::{HeadStart, JobsQuery};
use tug_service::follow::{Update, follow};
use tug_service::streams::StreamSlot;
use tug_service::{App, ErrorKind, ServiceError};

/// The deploy API's routes, each registered together with its documentation so that a served
/// route cannot be left out of the OpenAPI document.
pub(crate) fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(deploy))
        .routes(routes!(health))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(list_audit))
        .routes(routes!(metrics))
}

pub fn router(app: Arc<App>) -> Router {
    let (router, _) = routes().split_for_parts();
    router.fallback(not_found).with_state(app)
}

/// The body of every refusal, with the status that goes with `code`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    /// Stable machine-readable reason (`invalid_argument`, `not_found`, `permission_denied`, …).
    code: &'static str,
    message: String,
    /// More about the refusal; `field` names the offending input where there is one.
    #[schema(value_type = Object)]
    details: Value,
}

/// `{code, message, details}` with the status that goes with `code`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    // Boxed: every handler returns this as its error, and a small Err keeps results small.
    details: Box<Value>,
    /// Seconds, sent as `Retry-After`.
    retry_after: Option<u32>,
}

impl ApiError {
    /// A refusal only the transport makes (a body over the size limit, an unknown endpoint).
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Box::new(json!({})),
            retry_after: None,
        }
    }
}

/// The one mapping of service errors to HTTP statuses.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status = match e.kind {
            ErrorKind::Invalid { .. } => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict | ErrorKind::PolicyConflict => StatusCode::CONFLICT,
            ErrorKind::PolicyViolation | ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
        };
        let retry_after = match e.kind {
            ErrorKind::Busy { retry_after_secs } => {
                Some(u32::try_from(retry_after_secs).unwrap_or(u32::MAX))
            }
            _ => None,
        };
        // Refusals say why in the log too, in the request's span (so with its id); the reason
        // names the token for a scope refusal, never the token itself.
        if matches!(status.as_u16(), 401 | 403 | 409) {
            tracing::warn!(
                status = status.as_u16(), code = e.code(), reason = %e.message,
                "request refused"
            );
        }
        ApiError {
            status,
            code: e.code(),
            message: e.message,
            details: Box::new(e.details),
            retry_after,
        }
    }
}

/// The refusals every authenticated release operation can answer with.
// Only described, never built: the handlers answer with `ApiError`.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub(crate) enum Refusals {
    /// Invalid input; `details.field` names the field
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// No valid token
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// Token not allowed for the repository or branch
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Unknown service, environment or artifact
    #[response(status = 404)]
    NotFound(ErrorBody),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: self.message,
            details: *self.details,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(tug_service::auth::bearer_token)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

#[utoipa::path(get, path = "/api/v1/health", tag = "server",
    summary = "Health",
    params(("service" = Option<String>, Query,
        description = "A service name, as gRPC health checks send it; the answer is the server's")),
    responses(
        (status = 200, description = "`{\"status\":\"SERVING\"}`", body = Object),
        (status = 503, description = "`{\"status\":\"NOT_SERVING\",\"reason\":…}`: the database \
            is unreachable or the server is stopping", body = Object)))]
async fn health(State(app): State<Arc<App>>) -> Response {
    match app.health().await {
        Ok(()) => axum::Json(json!({"status": "SERVING"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "NOT_SERVING", "reason": reason})),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeployQuery {
    /// `false`: answer 202 with the job id once stored, without streaming progress.
    #[param(default = true)]
    wait: Option<bool>,
    /// `true`: answer what the request would change (diffs, commit messages) on the current
    /// tips; nothing is stored or pushed.
    /// The answer is JSON: per branch the status (`would_commit`, `up_to_date`, `failed`), the
    /// commit message and a unified diff per file.
    #[serde(rename = "dryRun")]
    #[param(default = false)]
    dry_run: Option<bool>,
}

#[utoipa::path(post, path = "/api/v1/deploy", tag = "deploy",
    summary = "Submit a deploy request; streams progress as NDJSON, then the outcome",
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "The same key returns the same job, never a second commit"),
        DeployQuery,
    ),
    request_body = tug_spec::DeployRequest,
    responses(
        (status = 200, description = "Progress lines `{\"result\":{\"message\":…}}`, the last one with the job outcome; with `dryRun=true` a JSON preview instead",
            content((Object = "application/x-ndjson"), (Object = "application/json"))),
        (status = 202, description = "Stored (`wait=false`)", body = JobBody),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Token not allowed for a repository or branch", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    ))]
async fn deploy(
    State(app): State<Arc<App>>,
    Query(q): Query<DeployQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    let limit = usize::try_from(app.config.limits.max_body_bytes).unwrap_or(usize::MAX);
    let body: Bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
        })?;
    // Authenticate before parsing: an anonymous caller learns nothing about the format.
    let token = bearer(&headers);
    app.caller(token).await?;
    let deploy: tug_spec::DeployRequest = tug_spec::from_json(
        "request body",
        std::str::from_utf8(&body)
            .map_err(|_| ApiError::from(ServiceError::invalid("request body is not UTF-8")))?,
    )
    .map_err(|e| ApiError::from(ServiceError::invalid_at(e.path.as_deref(), e.to_string())))?;
    let idempotency = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| ApiError::from(ServiceError::invalid("Idempotency-Key is not text")))?;
    if q.dry_run == Some(true) {
        let previews = app.preview(token, deploy).await?;
        let failed = previews.iter().any(|p| p.status == "failed");
        return Ok(axum::Json(json!({
            "dryRun": true,
            "status": if failed { "failed" } else { "succeeded" },
            "updates": previews,
        }))
        .into_response());
    }
    // A caller that waits needs a place among the waiting streams, taken before anything is
    // stored: a refused request leaves nothing behind and is simply sent again.
    let slot = match q.wait {
        Some(false) => None,
        _ => app.waiting.reserve(1)?.pop(),
    };
    let submitted = app.submit_to_follow(token, deploy, idempotency).await?;
    let (enqueued, head_start) = (submitted.enqueued, submitted.head_start);
    let job = enqueued.job;
    if q.wait == Some(false) {
        let status = if enqueued.created {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        return Ok((status, axum::Json(job_json(&job, &[]))).into_response());
    }
    let Some(slot) = slot else {
        return Err(ServiceError::internal("no stream slot for a waiting request").into());
    };
    let stream = progress_stream(app, job.id.clone(), enqueued.created, slot, head_start);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response.headers_mut().insert(
        "x-tug-job-id",
        HeaderValue::from_str(&job.id).unwrap_or(HeaderValue::from_static("")),
    );
    Ok(response)
}

pub(crate) fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn progress_line(message: &str) -> Value {
    json!({"result": {"message": message}})
}

/// The Delivery server's stream shape: `{"result":{"message":"[INFO] …"}}` lines, then one final
/// line that also carries the job's outcome.
pub(crate) fn progress_stream(
    app: Arc<App>,
    job_id: String,
    created: bool,
    slot: StreamSlot,
    head_start: Option<HeadStart>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    let updates = follow(app, job_id, created, slot, head_start);
    futures::StreamExt::map(updates, |u| {
        Ok(line(&match u {
            Update::Accepted {
                job_id,
                created: true,
            } => progress_line(&format!("[INFO] accepted job {job_id}")),
            Update::Accepted {
                job_id,
                created: false,
            } => progress_line(&format!(
                "[INFO] job {job_id} was already accepted under this Idempotency-Key"
            )),
            Update::Progress(e) => progress_line(&e.message),
            Update::Broken(m) => progress_line(&format!("[ERROR] {m}")),
            Update::ShuttingDown => progress_line(
                "[WARN] the server is shutting down; the job stays queued and resumes when it is back",
            ),
            Update::Finished(job) => final_line(&job),
        }))
    })
}

pub fn final_line(job: &Job) -> Value {
    let level = if job.state == JobState::Succeeded {
        "INFO"
    } else {
        "ERROR"
    };
    let message = format!("[{level}] job {} {}", job.id, job.state.as_str());
    let mut v = job_json(job, &[]);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("message".to_owned(), Value::String(message));
    }
    json!({ "result": v })
}

/// The public shape of a job.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Job)]
pub(crate) struct JobBody {
    job_id: String,
    /// `queued`, `running`, `pending`, `succeeded` or `failed`.
    status: &'static str,
    requested_by: String,
    created_at: String,
    updated_at: String,
    /// One per branch the job writes to.
    updates: Vec<BranchOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    /// Only when the job is read on its own (`GET /api/v1/jobs/{id}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<EventBody>,
}

/// What a job did (or is doing) on one branch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct BranchOutcome {
    repository: String,
    branch: String,
    status: String,
    attempts: u32,
    /// The commit that landed the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    commit: Option<Value>,
    /// The commit on the Git host's web interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    url: Option<Value>,
    /// The branch already held the desired state: nothing was committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    up_to_date: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    created: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = JobEvent)]
struct EventBody {
    seq: i64,
    at: String,
    /// `info`, `warn` or `error`.
    level: &'static str,
    message: String,
}

impl JobBody {
    fn new(job: &Job, events: &[Event]) -> Self {
        let updates = job
            .tasks
            .iter()
            .map(|t| {
                let result = t.result.as_ref();
                let field = |name: &str| result.and_then(|r| r.get(name)).cloned();
                BranchOutcome {
                    repository: t.branch.repository.clone(),
                    branch: t.branch.branch.clone(),
                    status: format!("{:?}", t.state).to_lowercase(),
                    attempts: t.attempts,
                    commit: field("commit"),
                    url: field("url"),
                    up_to_date: (result.and_then(|r| r.get("status")).and_then(Value::as_str)
                        == Some("up_to_date"))
                    .then_some(true),
                    created: field("created"),
                    error: t.last_error.clone(),
                }
            })
            .collect();
        let events = events
            .iter()
            .map(|e| EventBody {
                seq: e.seq,
                at: e.at.to_string(),
                level: match e.level {
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                },
                message: e.message.clone(),
            })
            .collect();
        JobBody {
            job_id: job.id.clone(),
            status: job.state.as_str(),
            requested_by: job.requested_by.clone(),
            created_at: job.created_at.to_string(),
            updated_at: job.updated_at.to_string(),
            updates,
            idempotency_key: job.idempotency_key.clone(),
            events,
        }
    }
}

/// The public shape of a job, as JSON for the answers that add to it.
pub fn job_json(job: &Job, events: &[Event]) -> Value {
    serde_json::to_value(JobBody::new(job, events)).unwrap_or(Value::Null)
}

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "deploy",
    summary = "One job with its events",
    params(("id" = String, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = JobBody),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
async fn get_job(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::Json<JobBody>, ApiError> {
    let (job, events) = app.job(bearer(&headers), &id, true).await?;
    Ok(axum::Json(JobBody::new(&job, &events)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only jobs writing to this repository.
    repository: Option<String>,
    /// `queued`, `running`, `pending`, `succeeded` or `failed`.
    status: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Serialize, ToSchema)]
struct JobList {
    jobs: Vec<JobBody>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "deploy",
    summary = "List jobs, newest first",
    params(ListQuery),
    responses(
        (status = 200, description = "Jobs", body = JobList),
        (status = 400, description = "Invalid query", body = ErrorBody),
    ))]

async fn list_jobs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<JobList>, ApiError> {
    let token = bearer(&headers);
    // Authenticate before reading the query: an anonymous caller learns nothing about it.
    app.caller(token).await?;
    let Query(q) = query.map_err(|e| ServiceError::invalid(e.body_text()))?;
    let state = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ServiceError::invalid_field(
                "status",
                format!("status: unknown job status {s:?}; expected queued, running, pending, succeeded or failed"),
            )
        })?),
    };
    let jobs = app
        .list_jobs(
            token,
            JobsQuery {
                repository: q.repository,
                state,
                limit: q.limit,
            },
        )
        .await?;
    Ok(axum::Json(JobList {
        jobs: jobs.iter().map(|j| JobBody::new(j, &[])).collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    /// Only calls by this actor (a token's name; `unknown` for calls without a valid token).
    actor: Option<String>,
    /// Only this action: `deploy`, `artifact.push`, `artifact.bundle`, `release`, `promote`,
    /// `rollback`, `unpin`, `policy.write`, `reindex`, `rollout.report`, `webhook.<source>`.
    action: Option<String>,
    service: Option<String>,
    environment: Option<String>,
    /// RFC 3339; records at or after this time.
    since: Option<String>,
    /// RFC 3339; records before this time.
    until: Option<String>,
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// An id: records older than it (pass the previous page's `next`).
    before: Option<i64>,
}

/// One audit record.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct AuditBody {
    id: i64,
    /// RFC 3339.
    at: String,
    actor: String,
    /// What an identity provider says about the actor (issuer, subject, matched rule); absent
    /// for tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    actor_detail: Option<Value>,
    action: String,
    service: Option<String>,
    environment: Option<String>,
    repository: Option<String>,
    branch: Option<String>,
    /// The `X-Request-Id` the call was answered with.
    request_id: Option<String>,
    /// `accepted` or `refused`.
    result: &'static str,
    /// The refusal's code (`permission_denied`, `not_found`, …).
    code: Option<String>,
    message: String,
}

/// `GET /api/v1/audit`.
#[derive(Debug, Serialize, ToSchema)]
struct AuditList {
    records: Vec<AuditBody>,
    /// The `before` of the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<i64>,
}

fn timestamp_param(
    field: &str,
    value: Option<String>,
) -> Result<Option<jiff::Timestamp>, ServiceError> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|e| {
            ServiceError::invalid_field(
                field,
                format!("{field}: {text:?} is not an RFC 3339 time (2026-01-31T12:00:00Z): {e}"),
            )
        }),
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "server",
    summary = "The audit trail of state-changing calls, newest first",
    params(AuditParams),
    responses(
        (status = 200, description = "Audit records", body = AuditList),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn list_audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditList>, ApiError> {
    let token = bearer(&headers);
    // Authenticate before reading the query: an anonymous caller learns nothing about it.
    app.caller(token).await?;
    let Query(q) = query.map_err(|e| ServiceError::invalid(e.body_text()))?;
    let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let audit_query = tug_store::AuditQuery {
        actor: non_empty(q.actor),
        action: non_empty(q.action),
        service: non_empty(q.service),
        environment: non_empty(q.environment),
        since: timestamp_param("since", q.since)?,
        until: timestamp_param("until", q.until)?,
        before: q.before,
        limit: q.limit,
    };
    let limit = audit_query
        .limit
        .unwrap_or(tug_store::AuditQuery::DEFAULT_LIMIT);
    let records = app.audit_log(token, audit_query).await?;
    let next = (records.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| records.last().map(|r| r.id))
        .flatten();
    Ok(axum::Json(AuditList {
        records: records
            .into_iter()
            .map(|r| AuditBody {
                id: r.id,
                at: r.at.to_string(),
                actor: r.record.actor,
                actor_detail: r.record.actor_detail,
                action: r.record.action,
                service: r.record.service,
                environment: r.record.environment,
                repository: r.record.repository,
                branch: r.record.branch,
                request_id: r.record.request_id,
                result: r.record.result.as_str(),
                code: r.record.code,
                message: r.record.message,
            })
            .collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "server",
    summary = "Prometheus metrics",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    if let Ok(depths) = app.store.queue_depths().await {
        app.metrics.set_queue_depths(
            depths
                .iter()
                .map(|(b, d)| (b.repository.as_str(), b.branch.as_str(), *d)),
        );
    }
    let text = app
        .metrics
        .render()
        .map_err(|e| ServiceError::internal(e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, tug_service::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
