//! The REST API of releases. Bodies and answers are JSON with camelCase fields; errors are the
//! API's `{code, message, details}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tug_release::status::{environment_status, pin};
use tug_release::{Artifact, Person, PolicyError, ServicePolicies};
use tug_store::{ArtifactWrite, Job, NewArtifact, ReleaseQuery, RolloutState, StoredArtifact};

use super::edits::check_bundle;
use super::flow::{
    Ask, auto_release, enqueue, load_artifact, message_parts, person_identity, plan, release_json,
    submit,
};
use super::index::{UNPINNED_BY, history, sync, sync_all};
use super::policies::{policies_path, policies_place, read as read_policies};
use super::{Ctx, conflict, internal, invalid, not_found};
use crate::app::App;
use crate::auth::Principal;
use crate::http::{ApiError, auth_error, bearer, job_json, line, progress_stream, store_error};
use crate::intake::{PayloadFile, TaskPayload};

/// How long a policy change or unpin waits for its commit before answering with the job as it is.
const WAIT_FOR_COMMIT: Duration = Duration::from_secs(120);

type Shared = Arc<Ctx>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/artifacts", post(push_artifact).get(list_artifacts))
        .route("/api/v1/artifacts/{id}", get(get_artifact))
        .route("/api/v1/artifacts/{id}/bundle", post(upload_bundle))
        .route("/api/v1/releases", post(release).get(describe))
        .route("/api/v1/status/{service}", get(status))
        .route("/api/v1/reindex", post(reindex))
        .route("/api/v1/unpin", post(unpin))
        .route("/api/v1/rollouts", post(report_rollout))
        .route(
            "/api/v1/policies/{service}",
            get(list_policies).delete(delete_policies),
        )
        .route(
            "/api/v1/policies/{service}/auto-release",
            post(apply_auto_release),
        )
        .route(
            "/api/v1/policies/{service}/branch-restriction",
            post(apply_branch_restriction),
        )
        .with_state(Arc::new(Ctx::new(app)))
}

fn authenticate(ctx: &Ctx, headers: &HeaderMap) -> Result<Principal, ApiError> {
    ctx.app
        .authorizer
        .authenticate(bearer(headers))
        .map_err(|e| auth_error(&e))
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("request body: {e}"),
        )
    })
}

fn query_error(e: &axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.body_text())
}

fn count(value: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(invalid("count", "count: must be between 1 and 1000")),
    }
}

/// `by` of a request, or the token's name.
fn requester(by: Option<Person>, principal: &Principal) -> Person {
    match by {
        Some(by) if !(by.name.trim().is_empty() && by.email.trim().is_empty()) => by,
        _ => Person::new(principal.name.clone(), ""),
    }
}

fn artifact_json(stored: &StoredArtifact) -> Value {
    let artifact: Value = serde_json::from_str(&stored.artifact_json).unwrap_or(Value::Null);
    json!({
        "id": stored.id,
        "service": stored.service,
        "branch": stored.branch,
        "createdAt": stored.created_at.to_string(),
        "hasBundle": stored.has_bundle,
        "artifact": artifact,
    })
}

async fn push_artifact(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&ctx, &headers)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "request body is not UTF-8",
        )
    })?;
    let artifact = Artifact::from_json(text).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string())
            .with_field(Some(e.path()))
    })?;
    let model = ctx.model()?;
    model
        .services
        .get(&artifact.service)
        .map_err(|e| not_found("service", format!("service: {e}")))?;
    let branch = artifact.branch().unwrap_or_default().to_owned();
    if branch.is_empty() {
        return Err(invalid(
            "application.branch",
            "application.branch: the artifact names no source branch (and its id is not <branch>-<sha>-<sha>)",
        ));
    }
    let write = ctx
        .app
        .releases
        .put_artifact(NewArtifact {
            service: artifact.service.clone(),
            id: artifact.id.clone(),
            branch,
            artifact_json: text.to_owned(),
        })
        .await
        .map_err(|e| store_error(&e))?;
    let stored = ctx
        .app
        .releases
        .artifact(&artifact.service, &artifact.id)
        .await
        .map_err(|e| store_error(&e))?
        .ok_or_else(|| internal("the artifact just stored went missing"))?;
    // Registering the same artifact again changes nothing, so it releases nothing either.
    let auto = if write == ArtifactWrite::Unchanged {
        Vec::new()
    } else {
        auto_release(&ctx, bearer(&headers), &principal.name, &stored, &artifact).await?
    };
    let status = if write == ArtifactWrite::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = artifact_json(&stored);
    body["created"] = json!(write == ArtifactWrite::Created);
    body["autoReleases"] = json!(auto);
    Ok((status, axum::Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactsQuery {
    service: String,
    branch: Option<String>,
    count: Option<u32>,
}

async fn list_artifacts(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<ArtifactsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    authenticate(&ctx, &headers)?;
    let Query(q) = query.map_err(|e| query_error(&e))?;
    let found = ctx
        .app
        .releases
        .artifacts(
            &q.service,
            q.branch.as_deref().filter(|b| !b.is_empty()),
            count(q.count, 20)?,
        )
        .await
        .map_err(|e| store_error(&e))?;
    Ok(axum::Json(
        json!({"artifacts": found.iter().map(artifact_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceQuery {
    service: String,
}

async fn get_artifact(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ServiceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    authenticate(&ctx, &headers)?;
    let Query(q) = query.map_err(|e| query_error(&e))?;
    let (stored, _) = load_artifact(&ctx, &q.service, &id).await?;
    Ok(axum::Json(artifact_json(&stored)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleBody {
    service: String,
    /// `<env>/<file>` → content.
    files: BTreeMap<String, String>,
}

async fn upload_bundle(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&ctx, &headers)?;
    let bundle: BundleBody = parse_body(&body)?;
    let model = ctx.model()?;
    check_bundle(&bundle.files, |env| model.environments.get(env).is_ok())
        .map_err(|(field, message)| invalid(&field, format!("{field}: {message}")))?;
    let (_, artifact) = load_artifact(&ctx, &bundle.service, &id).await?;
    let json = serde_json::to_string(&bundle.files)
        .map_err(|e| internal(format!("bundle is not JSON: {e}")))?;
    ctx.app
        .releases
        .put_bundle(&bundle.service, &id, &json)
        .await
        .map_err(|e| store_error(&e))?;
    let (stored, _) = load_artifact(&ctx, &bundle.service, &id).await?;
    // Auto-releases of services released by copying wait for their bundle.
    let auto = auto_release(&ctx, bearer(&headers), &principal.name, &stored, &artifact).await?;
    let mut body = artifact_json(&stored);
    body["files"] = json!(bundle.files.len());
    body["autoReleases"] = json!(auto);
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum IntentWord {
    Release,
    Promote,
    Rollback,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReleaseBody {
    service: String,
    environments: Vec<String>,
    #[serde(default, alias = "artifact")]
    artifact_id: Option<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default = "default_intent")]
    intent: IntentWord,
    #[serde(default)]
    from_env: Option<String>,
    #[serde(default)]
    by: Option<Person>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

fn default_intent() -> IntentWord {
    IntentWord::Release
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<bool>,
}

type LineStream = Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

async fn release(
    State(ctx): State<Shared>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = authenticate(&ctx, &headers)?;
    let body: ReleaseBody = parse_body(&body)?;
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let ask = match body.intent {
        IntentWord::Release => Ask::Release {
            artifact_id: non_empty(body.artifact_id),
            branch: non_empty(body.branch),
        },
        IntentWord::Promote => Ask::Promote {
            from_env: non_empty(body.from_env),
        },
        IntentWord::Rollback => Ask::Rollback {
            artifact_id: non_empty(body.artifact_id),
        },
    };
    let by = requester(body.by, &principal);
    let planned = plan(
        &ctx,
        bearer(&headers),
        &body.service,
        &body.environments,
        &ask,
        &by,
    )
    .await?;
    let submitted = submit(
        &ctx,
        &principal.name,
        planned,
        body.idempotency_key.as_deref(),
    )
    .await?;
    let summary: Vec<Value> = submitted
        .iter()
        .map(|s| {
            let mut v = release_json(&s.planned);
            v["jobId"] = json!(s.enqueued.job.id);
            v
        })
        .collect();
    if q.wait == Some(false) {
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"releases": summary})),
        )
            .into_response());
    }
    let mut streams: Vec<LineStream> = Vec::new();
    for (s, v) in submitted.iter().zip(summary) {
        let intro = json!({"result": {
            "message": format!(
                "[INFO] {} of artifact {} to {} (job {})",
                s.planned.record.intent.word(),
                s.planned.record.artifact_id,
                s.planned.environment,
                s.enqueued.job.id
            ),
            "release": v,
        }});
        streams.push(Box::pin(futures::stream::once(async move {
            Ok::<_, Infallible>(line(&intro))
        })));
        streams.push(Box::pin(progress_stream(
            ctx.app.clone(),
            s.enqueued.job.id.clone(),
            s.enqueued.created,
        )));
    }
    let mut response = Response::new(Body::from_stream(futures::stream::iter(streams).flatten()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DescribeQuery {
    service: String,
    env: Option<String>,
    count: Option<u32>,
}

async fn describe(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    query: Result<Query<DescribeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    authenticate(&ctx, &headers)?;
    let Query(q) = query.map_err(|e| query_error(&e))?;
    let model = ctx.model()?;
    model
        .services
        .get(&q.service)
        .map_err(|e| not_found("service", e.to_string()))?;
    let env = q.env.filter(|e| !e.is_empty());
    if let Some(env) = &env {
        model
            .environments
            .get(env)
            .map_err(|e| invalid("env", format!("env: {e}")))?;
    }
    sync_all(&ctx, true).await?;
    let rows = ctx
        .app
        .releases
        .releases(&ReleaseQuery {
            service: q.service.clone(),
            environment: env,
            limit: count(q.count, 20)?,
        })
        .await
        .map_err(|e| store_error(&e))?;
    let mut releases = Vec::new();
    for row in rows {
        let mut v = json!({
            "service": row.service,
            "environment": row.environment,
            "artifactId": row.artifact_id,
            "intent": row.intent,
            "releasedBy": {"name": row.released_by_name, "email": row.released_by_email},
            "releasedAt": row.released_at.to_string(),
            "commit": row.commit,
            "repository": row.repository,
            "branch": row.branch,
            "request": row.request,
        });
        add_artifact_details(&ctx, &mut v, &row.service, &row.artifact_id).await?;
        releases.push(v);
    }
    Ok(axum::Json(
        json!({"service": q.service, "releases": releases}),
    ))
}

/// The artifact's image, source commit and CI link where the artifact is registered.
async fn add_artifact_details(
    ctx: &Ctx,
    v: &mut Value,
    service: &str,
    artifact_id: &str,
) -> Result<(), ApiError> {
    let stored = ctx
        .app
        .releases
        .artifact(service, artifact_id)
        .await
        .map_err(|e| store_error(&e))?;
    let Some(artifact) = stored.and_then(|s| Artifact::from_json(&s.artifact_json).ok()) else {
        v["artifactKnown"] = json!(false);
        return Ok(());
    };
    v["artifactKnown"] = json!(true);
    if let Some(image) = artifact.image_reference() {
        v["image"] = json!(image.image);
        v["tag"] = json!(image.tag);
        v["digest"] = json!(image.digest);
    }
    let app = &artifact.application;
    v["sourceBranch"] = json!(artifact.branch());
    v["sourceSha"] = json!(app.sha);
    v["author"] = json!({"name": app.author_name, "email": app.author_email});
    v["committer"] = json!({"name": app.committer_name, "email": app.committer_email});
    v["message"] = json!(app.message);
    v["ciJobUrl"] = json!(artifact.ci.job_url);
    Ok(())
}

async fn status(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    authenticate(&ctx, &headers)?;
    let model = ctx.model()?;
    model
        .services
        .get(&service)
        .map_err(|e| not_found("service", e.to_string()))?;
    sync_all(&ctx, true).await?;
    let (history, unpins) = history(&ctx, &service).await?;
    let rollouts = ctx
        .app
        .releases
        .rollouts(&service)
        .await
        .map_err(|e| store_error(&e))?;
    let mut environments = Vec::new();
    for env in &model.environments {
        let st = environment_status(&history, &unpins, &service, &env.name);
        let place = model.places.get(&env.name);
        let mut v = json!({
            "environment": env.name,
            "repository": place.map(|p| p.repository.clone()),
            "branch": place.map(|p| p.branch.clone()),
            "path": model.services.target_for(&service, &env.name).ok().map(|t| t.path),
            "released": st.current.is_some(),
            "pinned": st.pin.is_some(),
            "pin": st.pin.as_ref().map(|p| json!({
                "artifactId": p.artifact, "by": p.by, "at": p.at.to_string(),
            })),
            "previousArtifactId": st.previous.map(|p| p.record.artifact_id.clone()),
            "rollout": rollouts.iter().find(|r| r.environment == env.name).map(|r| json!({
                "revision": r.revision, "state": r.state, "message": r.message,
                "at": r.at.to_string(),
            })),
        });
        if let Some(current) = st.current {
            v["artifactId"] = json!(current.record.artifact_id);
            v["intent"] = json!(current.record.intent);
            v["releasedBy"] = json!(current.record.released_by);
            v["date"] = json!(current.at.to_string());
            v["commit"] = json!(current.commit);
            add_artifact_details(&ctx, &mut v, &service, &current.record.artifact_id).await?;
        }
        environments.push(v);
    }
    Ok(axum::Json(
        json!({"service": service, "environments": environments}),
    ))
}

async fn reindex(
    State(ctx): State<Shared>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    authenticate(&ctx, &headers)?;
    let model = ctx.model()?;
    ctx.app
        .releases
        .clear_release_index()
        .await
        .map_err(|e| store_error(&e))?;
    let mut branches = Vec::new();
    for place in model.branches() {
        let synced = sync(&ctx, &place, true, true).await?;
        branches.push(json!({
            "repository": place.repository,
            "branch": place.branch,
            "head": synced.head,
            "releases": synced.releases,
            "unpins": synced.unpins,
        }));
    }
    Ok(axum::Json(json!({"branches": branches})))
}

/// Waits (bounded) for a job to end, so policy changes and unpins answer with their commit.
async fn wait_for(app: &Arc<App>, job_id: &str) -> Result<Job, ApiError> {
    let mut signal = app.signal.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT_FOR_COMMIT;
    loop {
        let job = app
            .store
            .job(job_id)
            .await
            .map_err(|e| store_error(&e))?
            .ok_or_else(|| internal(format!("job {job_id} disappeared")))?;
        if job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
            return Ok(job);
        }
        // The signal wakes us early; the timeout covers a writer on another replica.
        let _ = tokio::time::timeout(Duration::from_millis(500), signal.recv()).await;
    }
}

#[allow(clippy::too_many_arguments)]
/// Stores a job that commits `files` (or nothing, for a marker commit) with `message` to
/// `place`, waits for it, and answers with the job.
async fn commit_and_wait(
    ctx: &Ctx,
    principal: &Principal,
    by: &Person,
    place: &super::Place,
    message: &str,
    files: Vec<PayloadFile>,
    request: Value,
    kind: &str,
) -> Result<(Job, Value), ApiError> {
    let repo = ctx
        .app
        .config
        .repository(&place.repository)
        .cloned()
        .ok_or_else(|| {
            internal(format!(
                "repository `{}` is not configured",
                place.repository
            ))
        })?;
    let (title, trailers) = message_parts(message);
    let (author_name, author_email) = person_identity(by);
    let allow_empty = files.is_empty();
    let payload = TaskPayload {
        url: repo.url,
        segments: Vec::new(),
        author_name,
        author_email,
        message: Some(title),
        trailers,
        allow_empty,
        redeploy_value: jiff::Timestamp::now().to_string(),
        files,
        replace_dirs: Vec::new(),
    };
    let enqueued = enqueue(ctx, &principal.name, kind, place, &payload, request, None).await?;
    let job = wait_for(&ctx.app, &enqueued.job.id).await?;
    let body = job_json(&job, &[]);
    if job.state == tug_store::JobState::Failed {
        let error = job
            .tasks
            .iter()
            .find_map(|t| t.last_error.clone())
            .unwrap_or_else(|| "the commit failed".to_owned());
        return Err(conflict(format!("job {} failed: {error}", job.id)));
    }
    Ok((job, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UnpinBody {
    service: String,
    env: String,
    #[serde(default)]
    by: Option<Person>,
}

async fn unpin(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let principal = authenticate(&ctx, &headers)?;
    let body: UnpinBody = parse_body(&body)?;
    let model = ctx.model()?;
    model
        .services
        .get(&body.service)
        .map_err(|e| not_found("service", e.to_string()))?;
    model
        .environments
        .get(&body.env)
        .map_err(|e| invalid("env", format!("env: {e}")))?;
    let place = model
        .places
        .get(&body.env)
        .cloned()
        .ok_or_else(|| internal("environment without a branch"))?;
    ctx.app
        .authorizer
        .authorize(bearer(&headers), &place.repository, &place.branch)
        .map_err(|e| auth_error(&e))?;
    sync(&ctx, &place, true, false).await?;
    let (history, unpins) = history(&ctx, &body.service).await?;
    let Some(pinned) = pin(&history, &unpins, &body.service, &body.env) else {
        return Err(conflict(format!(
            "service '{}' is not pinned in '{}'",
            body.service, body.env
        )));
    };
    let by = requester(body.by, &principal);
    let message = format!(
        "[{}/{}] unpin by {}\n\n{}: {}\n{}: {}\n{UNPINNED_BY}: {}\n",
        body.env,
        body.service,
        by.short(),
        tug_release::trailers::SERVICE,
        body.service,
        tug_release::trailers::ENVIRONMENT,
        body.env,
        by
    );
    let request = json!({"service": body.service, "env": body.env, "by": by});
    let (job, mut v) = commit_and_wait(
        &ctx,
        &principal,
        &by,
        &place,
        &message,
        Vec::new(),
        request,
        "unpin",
    )
    .await?;
    sync(&ctx, &place, false, false).await?;
    v["unpinned"] = json!({"artifactId": pinned.artifact, "rolledBackBy": pinned.by});
    v["jobId"] = json!(job.id);
    Ok(axum::Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RolloutBody {
    service: String,
    env: String,
    revision: String,
    state: String,
    #[serde(default)]
    message: String,
}

async fn report_rollout(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    authenticate(&ctx, &headers)?;
    let body: RolloutBody = parse_body(&body)?;
    let model = ctx.model()?;
    model
        .services
        .get(&body.service)
        .map_err(|e| not_found("service", e.to_string()))?;
    model
        .environments
        .get(&body.env)
        .map_err(|e| invalid("env", format!("env: {e}")))?;
    if body.state.trim().is_empty() {
        return Err(invalid("state", "state: must not be empty"));
    }
    ctx.app
        .releases
        .put_rollout(RolloutState {
            service: body.service,
            environment: body.env,
            revision: body.revision,
            state: body.state,
            message: body.message,
            at: jiff::Timestamp::now(),
        })
        .await
        .map_err(|e| store_error(&e))?;
    Ok(axum::Json(json!({"recorded": true})))
}

fn policies_json(ctx: &Ctx, policies: &ServicePolicies) -> Result<Value, ApiError> {
    let model = ctx.model()?;
    let list = policies.list(&model.global);
    Ok(json!({
        "service": policies.service,
        "autoReleases": list.auto_releases.iter().map(|p| json!({
            "id": p.id, "branch": p.branch, "environment": p.environment, "global": false,
        })).collect::<Vec<_>>(),
        "branchRestrictions": list.branch_restrictions.iter().map(|r| json!({
            "id": r.policy.id, "branchRegex": r.policy.branch_regex,
            "environment": r.policy.environment, "global": r.global,
        })).collect::<Vec<_>>(),
        "overridden": list.overridden.iter().map(|p| json!({
            "id": p.id, "branchRegex": p.branch_regex, "environment": p.environment,
        })).collect::<Vec<_>>(),
    }))
}

fn policy_error(e: &PolicyError) -> ApiError {
    match e {
        PolicyError::Conflict { new, existing, .. } => {
            ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
                .with_details(json!({"policy": new, "conflictsWith": existing}))
        }
        PolicyError::GlobalNotDeletable { id, .. } => {
            ApiError::new(StatusCode::CONFLICT, "failed_precondition", e.to_string())
                .with_details(json!({"policy": id}))
        }
        PolicyError::UnknownId { id, .. } => {
            not_found("policy", e.to_string()).with_details(json!({"what": "policy", "policy": id}))
        }
        PolicyError::InvalidRegex { policy, .. } => invalid("branchRegex", e.to_string())
            .with_details(json!({
                "field": "branchRegex", "policy": policy,
            })),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string()),
    }
}

async fn list_policies(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    authenticate(&ctx, &headers)?;
    ctx.model()?
        .services
        .get(&service)
        .map_err(|e| not_found("service", e.to_string()))?;
    let policies = read_policies(&ctx, &service).await?;
    Ok(axum::Json(policies_json(&ctx, &policies)?))
}

/// Applies `change` to the service's policies and commits the file.
async fn change_policies(
    ctx: &Ctx,
    headers: &HeaderMap,
    service: &str,
    by: Option<Person>,
    describe: &str,
    change: impl FnOnce(&mut ServicePolicies) -> Result<Value, ApiError>,
) -> Result<axum::Json<Value>, ApiError> {
    let principal = authenticate(ctx, headers)?;
    ctx.model()?
        .services
        .get(service)
        .map_err(|e| not_found("service", e.to_string()))?;
    let place = policies_place(ctx)?;
    ctx.app
        .authorizer
        .authorize(bearer(headers), &place.repository, &place.branch)
        .map_err(|e| auth_error(&e))?;
    let mut policies = read_policies(ctx, service).await?;
    let outcome = change(&mut policies)?;
    let content = policies.to_json().map_err(|e| internal(e.to_string()))?;
    let by = requester(by, &principal);
    let path = policies_path(service);
    let message = format!(
        "[policies/{service}] {describe} by {}\n\n{}: {service}\n",
        by.short(),
        tug_release::trailers::SERVICE
    );
    let file = PayloadFile {
        path,
        content_base64: base64::engine::general_purpose::STANDARD.encode(content),
    };
    let request = json!({"service": service, "change": describe, "by": by});
    let (job, mut v) = commit_and_wait(
        ctx,
        &principal,
        &by,
        &place,
        &message,
        vec![file],
        request,
        "policy",
    )
    .await?;
    v["jobId"] = json!(job.id);
    v["policies"] = policies_json(ctx, &policies)?;
    if let (Some(target), Value::Object(extra)) = (v.as_object_mut(), outcome) {
        target.extend(extra);
    }
    Ok(axum::Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AutoReleaseBody {
    branch: String,
    env: String,
    #[serde(default)]
    by: Option<Person>,
}

async fn apply_auto_release(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let body: AutoReleaseBody = parse_body(&body)?;
    let model = ctx.model()?;
    model
        .environments
        .get(&body.env)
        .map_err(|e| invalid("env", format!("env: {e}")))?;
    if let Err(e) = model.services.target_for(&service, &body.env)
        && model.services.get(&service).is_ok()
    {
        return Err(invalid("env", format!("env: {e}")));
    }
    let describe = format!(
        "apply auto-release of branch {} to {}",
        body.branch, body.env
    );
    let global = model.global.clone();
    change_policies(&ctx, &headers, &service, body.by, &describe, |p| {
        let id = p
            .apply_auto_release(&global, &body.branch, &body.env)
            .map_err(|e| policy_error(&e))?;
        Ok(json!({"id": id}))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct BranchRestrictionBody {
    env: String,
    branch_regex: String,
    #[serde(default)]
    by: Option<Person>,
}

async fn apply_branch_restriction(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let body: BranchRestrictionBody = parse_body(&body)?;
    let model = ctx.model()?;
    model
        .environments
        .get(&body.env)
        .map_err(|e| invalid("env", format!("env: {e}")))?;
    let describe = format!(
        "apply branch restriction {} to {}",
        body.branch_regex, body.env
    );
    let global = model.global.clone();
    change_policies(&ctx, &headers, &service, body.by, &describe, |p| {
        let id = p
            .apply_branch_restriction(&global, &body.env, &body.branch_regex)
            .map_err(|e| policy_error(&e))?;
        Ok(json!({"id": id}))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeletePoliciesBody {
    ids: Vec<String>,
    #[serde(default)]
    by: Option<Person>,
}

async fn delete_policies(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let body: DeletePoliciesBody = parse_body(&body)?;
    if body.ids.is_empty() {
        return Err(invalid("ids", "ids: name at least one policy id"));
    }
    let global = ctx.model()?.global.clone();
    let describe = format!("delete policies {}", body.ids.join(", "));
    change_policies(&ctx, &headers, &service, body.by, &describe, |p| {
        let deleted = p.delete(&global, &body.ids).map_err(|e| policy_error(&e))?;
        Ok(json!({"deleted": deleted}))
    })
    .await
}
