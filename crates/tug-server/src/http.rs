//! The REST API (axum): the Delivery server's `POST /api/v1/deploy` with an NDJSON progress
//! stream, job queries, health, OpenAPI and Prometheus metrics.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tug_store::{Event, Job, JobFilter, JobState, Level};

use crate::app::App;
use crate::auth::AuthError;
use crate::follow::{Update, follow};
use crate::intake::Rejection;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/deploy", post(deploy))
        .route("/api/v1/health", get(health))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(app)
}

/// `{code, message, details}` with the status that goes with `code`.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    /// The machine-readable code (`invalid_argument`, `unauthenticated`, …), as the REST body's
    /// `code`; the gRPC API maps it to a status code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Replaces `details` (which names the field, policy or thing at fault).
    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Refusals (401, 403, 409) say why in the log too, in the request's span (so with its
    /// id); the reason names the token for a scope refusal, never the token itself.
    pub(crate) fn log_refusal(&self) {
        if matches!(self.status.as_u16(), 401 | 403 | 409) {
            tracing::warn!(
                status = self.status.as_u16(), code = self.code, reason = %self.message,
                "request refused"
            );
        }
    }

    pub(crate) fn with_field(mut self, field: Option<&str>) -> Self {
        if let Some(f) = field {
            self.details = json!({ "field": f });
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log_refusal();
        let body = json!({"code": self.code, "message": self.message, "details": self.details});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Invalid { field, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
                    .with_field(field.as_deref())
            }
            Rejection::Auth(e) => auth_error(&e),
        }
    }
}

pub(crate) fn auth_error(e: &AuthError) -> ApiError {
    match e {
        AuthError::Unauthenticated { .. } => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
        }
        AuthError::Forbidden { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "permission_denied", e.to_string())
        }
    }
}

pub(crate) fn store_error(e: &tug_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "store failure");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the job store failed: {e}"),
    )
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "SERVING"}))
}

#[derive(Debug, Deserialize)]
struct DeployQuery {
    /// `false`: answer 202 with the job id once stored, without streaming progress.
    wait: Option<bool>,
    /// `true`: answer what the request would change (diffs, commit messages) on the current
    /// tips; nothing is stored or pushed.
    #[serde(rename = "dryRun")]
    dry_run: Option<bool>,
}

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
    app.authorizer
        .authenticate(token)
        .map_err(|e| auth_error(&e))?;
    let deploy: tug_spec::DeployRequest = tug_spec::from_json(
        "request body",
        std::str::from_utf8(&body).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "request body is not UTF-8",
            )
        })?,
    )
    .map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string())
            .with_field(e.path.as_deref())
    })?;
    let idempotency = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "Idempotency-Key is not text",
            )
        })?;
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
    let enqueued = app.submit(token, deploy, idempotency).await?;
    let job = enqueued.job;
    if q.wait == Some(false) {
        let status = if enqueued.created {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        return Ok((status, axum::Json(job_json(&job, &[]))).into_response());
    }
    let stream = progress_stream(app, job.id.clone(), enqueued.created);
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
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    let rx = follow(app, job_id, created);
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |u| {
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
pub fn job_json(job: &Job, events: &[Event]) -> Value {
    let updates: Vec<Value> = job
        .tasks
        .iter()
        .map(|t| {
            let mut u = json!({
                "repository": t.branch.repository,
                "branch": t.branch.branch,
                "status": format!("{:?}", t.state).to_lowercase(),
                "attempts": t.attempts,
            });
            if let Some(r) = &t.result {
                if let Some(c) = r.get("commit") {
                    u["commit"] = c.clone();
                }
                if let Some(url) = r.get("url") {
                    u["url"] = url.clone();
                }
                if r.get("status").and_then(Value::as_str) == Some("up_to_date") {
                    u["upToDate"] = Value::Bool(true);
                }
                if let Some(created) = r.get("created") {
                    u["created"] = created.clone();
                }
            }
            if let Some(e) = &t.last_error {
                u["error"] = Value::String(e.clone());
            }
            u
        })
        .collect();
    let mut v = json!({
        "jobId": job.id,
        "status": job.state.as_str(),
        "requestedBy": job.requested_by,
        "createdAt": job.created_at.to_string(),
        "updatedAt": job.updated_at.to_string(),
        "updates": updates,
    });
    if let Some(k) = &job.idempotency_key {
        v["idempotencyKey"] = Value::String(k.clone());
    }
    if !events.is_empty() {
        v["events"] = Value::Array(
            events
                .iter()
                .map(|e| {
                    json!({
                        "seq": e.seq, "at": e.at.to_string(),
                        "level": match e.level { Level::Info => "info", Level::Warn => "warn", Level::Error => "error" },
                        "message": e.message,
                    })
                })
                .collect(),
        );
    }
    v
}

async fn get_job(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    app.authorizer
        .authenticate(bearer(&headers))
        .map_err(|e| auth_error(&e))?;
    let job = app
        .store
        .job(&id)
        .await
        .map_err(|e| store_error(&e))?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no job {id}")))?;
    let events = app
        .store
        .events(&id, 0)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(axum::Json(job_json(&job, &events)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    repository: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

async fn list_jobs(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    app.authorizer
        .authenticate(bearer(&headers))
        .map_err(|e| auth_error(&e))?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.body_text()))?;
    let state = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                format!("status: unknown job status {s:?}; expected queued, running, pending, succeeded or failed"),
            )
            .with_field(Some("status"))
        })?),
    };
    if q.limit == Some(0) || q.limit.is_some_and(|l| l > 1000) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "limit: must be between 1 and 1000",
        )
        .with_field(Some("limit")));
    }
    let filter = JobFilter {
        repository: q.repository.filter(|r| !r.is_empty()),
        state,
        limit: q.limit,
    };
    let jobs = app
        .store
        .list_jobs(&filter)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(axum::Json(
        json!({"jobs": jobs.iter().map(|j| job_json(j, &[])).collect::<Vec<_>>()}),
    ))
}

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
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

async fn openapi() -> axum::Json<Value> {
    axum::Json(crate::openapi::document())
}
