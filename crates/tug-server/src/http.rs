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
use tug_store::{Event, Job, JobState, Level};

use tug_service::app::JobsQuery;
use tug_service::follow::{Update, follow};
use tug_service::{App, ErrorKind, ServiceError};

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
    /// A refusal only the transport makes (a body over the size limit, an unknown endpoint).
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
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
            details: e.details,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message, "details": self.details});
        (self.status, axum::Json(body)).into_response()
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
        .map_err(ServiceError::from)?;
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
    let (job, events) = app.job(bearer(&headers), &id, true).await?;
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
    let token = bearer(&headers);
    // Authenticate before reading the query: an anonymous caller learns nothing about it.
    app.authorizer
        .authenticate(token)
        .map_err(ServiceError::from)?;
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
        .map_err(|e| ServiceError::internal(e.to_string()))?;
    Ok((
        [(header::CONTENT_TYPE, tug_service::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

async fn openapi() -> axum::Json<Value> {
    axum::Json(crate::openapi::document())
}
