//! The release API over REST: each handler parses its request, calls the service's `*_core`
//! operation and writes the typed answer as the JSON (camelCase fields; errors `{code, message,
//! details}`) the REST API has always answered with.

use std::convert::Infallible;
use std::pin::Pin as Pinned;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tug_service::ServiceError;
use tug_service::release::Ctx;
use tug_service::release::api::Registration;
use tug_service::release::api::*;
use tug_service::release::flow::release_json;
use tug_store::StoredArtifact;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::{ApiError, bearer, job_json, line, progress_stream};

type Shared = Arc<Ctx>;

/// The release API's routes, each registered together with its documentation.
pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(push_artifact, list_artifacts))
        .routes(routes!(get_artifact))
        .routes(routes!(upload_bundle))
        .routes(routes!(release, describe))
        .routes(routes!(status))
        .routes(routes!(reindex))
        .routes(routes!(unpin))
        .routes(routes!(report_rollout))
        .routes(routes!(list_policies, delete_policies))
        .routes(routes!(apply_auto_release))
        .routes(routes!(apply_branch_restriction))
}

pub(crate) fn router(ctx: Shared) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(ctx)
}

// ---------------------------------------------------------------------------------------------
// REST: parse, call the core, answer with JSON.

async fn authenticate(ctx: &Ctx, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(Caller::authenticate(ctx, bearer(headers)).await?)
}

/// [`authenticate`] for an operation that changes state: a refusal is audited as `action`.
async fn authenticate_write(
    ctx: &Ctx,
    headers: &HeaderMap,
    action: &'static str,
) -> Result<Caller, ApiError> {
    Ok(Caller::authenticate_write(ctx, bearer(headers), action).await?)
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ServiceError::invalid(format!("request body: {e}")).into())
}

fn query_error(e: &axum::extract::rejection::QueryRejection) -> ApiError {
    ServiceError::invalid(e.body_text()).into()
}

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

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

/// The artifact's image, source commit and CI link where the artifact is registered.
fn add_artifact_details(v: &mut Value, known: Option<&KnownArtifact>) {
    let Some(KnownArtifact { artifact, .. }) = known else {
        v["artifactKnown"] = json!(false);
        return;
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
}

#[utoipa::path(post, path = "/api/v1/artifacts", tag = "releases",
    summary = "Register an artifact (the release manager's artifact.json); runs the service's auto-release policies",
    request_body(content = Object, description = "artifact.json: `id`, `service`, `namespace`, `application` (branch, sha, author, committer, message, url, provider), `ci` (jobUrl, start, end), `stages`"),
    responses((status = 201, description = "The stored artifact and the auto-releases it started", body = Object), (status = 200, description = "The artifact was already registered with this content", body = Object), (status = 409, description = "The id exists with other content", body = crate::http::ErrorBody), crate::http::Refusals))]
async fn push_artifact(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticate_write(&ctx, &headers, "artifact.push").await?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "request body is not UTF-8",
        )
    })?;
    let pushed = push_artifact_core(&ctx, &caller, text).await?;
    let status = if pushed.write == Registration::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = artifact_json(&pushed.stored);
    body["created"] = json!(pushed.write == Registration::Created);
    body["autoReleases"] = json!(pushed.auto_releases);
    Ok((status, axum::Json(body)).into_response())
}

#[utoipa::path(get, path = "/api/v1/artifacts", tag = "releases",
    summary = "Artifacts of a service, newest first",
    params(ArtifactsQuery),
    responses((status = 200, description = "`{artifacts: [...]}`", body = Object), crate::http::Refusals))]
async fn list_artifacts(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    query: QueryResult<ArtifactsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate(&ctx, &headers).await?;
    let Query(q) = query.map_err(|e| query_error(&e))?;
    let found = list_artifacts_core(&ctx, &caller, &q).await?;
    Ok(axum::Json(
        json!({"artifacts": found.iter().map(artifact_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ServiceQuery {
    /// The artifact's service.
    service: String,
}

#[utoipa::path(get, path = "/api/v1/artifacts/{id}", tag = "releases",
    summary = "One artifact",
    params(("id" = String, Path, description = "The artifact id"), ServiceQuery),
    responses((status = 200, description = "The artifact", body = Object), crate::http::Refusals))]
async fn get_artifact(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: QueryResult<ServiceQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate(&ctx, &headers).await?;
    let Query(q) = query.map_err(|e| query_error(&e))?;
    let stored = get_artifact_core(&ctx, &caller, &q.service, &id).await?;
    Ok(axum::Json(artifact_json(&stored)))
}

#[utoipa::path(post, path = "/api/v1/artifacts/{id}/bundle", tag = "releases",
    summary = "Attach rendered manifests for copy-mode releases",
    params(("id" = String, Path, description = "The artifact id")), request_body = BundleBody,
    responses((status = 200, description = "The files stored and the auto-releases started", body = Object), crate::http::Refusals))]
async fn upload_bundle(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = authenticate_write(&ctx, &headers, "artifact.bundle").await?;
    let bundle: BundleBody = parse_body(&body)?;
    let uploaded = upload_bundle_core(&ctx, &caller, &id, &bundle).await?;
    let mut body = artifact_json(&uploaded.stored);
    body["files"] = json!(uploaded.files);
    body["autoReleases"] = json!(uploaded.auto_releases);
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// `false`: answer 202 with the queued releases once stored, without streaming progress.
    #[param(default = true)]
    wait: Option<bool>,
    /// `true`: answer what each release would commit (message and a diff per file) on the
    /// environment branches' current tips; nothing is stored or pushed.
    #[serde(rename = "dryRun")]
    #[param(default = false, rename = "dryRun")]
    dry_run: Option<bool>,
}

type LineStream = Pinned<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

/// The public shape of a stored release.
fn queued_json(queued: &QueuedRelease) -> Value {
    let mut v = release_json(&queued.planned);
    v["jobId"] = json!(queued.job_id);
    v
}

#[utoipa::path(post, path = "/api/v1/releases", tag = "releases",
    summary = "Release, promote or roll back a service in environments; streams progress as NDJSON",
    description = "One commit per environment through the branch's writer. Refused with the policy's id when a branch restriction forbids it; `already up to date` when it already runs.",
    params(WaitQuery), request_body = ReleaseInput,
    responses((status = 200, description = "Progress lines, then one outcome per environment", body = Object, content_type = "application/x-ndjson"), (status = 202, description = "Stored (`wait=false`): `{releases: [...]}`", body = Object), (status = 409, description = "Refused by a branch restriction (named)", body = crate::http::ErrorBody), crate::http::Refusals))]
async fn release(
    State(ctx): State<Shared>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A dry run changes nothing, so only a real release audits its refusal.
    let caller = if q.dry_run == Some(true) {
        authenticate(&ctx, &headers).await?
    } else {
        authenticate_write(&ctx, &headers, "release").await?
    };
    let input: ReleaseInput = parse_body(&body)?;
    if q.dry_run == Some(true) {
        let previews = release_preview_core(&ctx, &caller, input).await?;
        let failed = previews.iter().any(|p| p.preview.status == "failed");
        let releases: Vec<Value> = previews
            .iter()
            .map(|p| {
                let mut v = release_json(&p.planned);
                v["preview"] = json!(p.preview);
                v
            })
            .collect();
        return Ok(axum::Json(json!({
            "dryRun": true,
            "status": if failed { "failed" } else { "succeeded" },
            "releases": releases,
        }))
        .into_response());
    }
    // One waiting stream per environment, reserved before anything is stored.
    let mut slots = if q.wait == Some(false) {
        Vec::new()
    } else {
        ctx.app.waiting.reserve(input.environments.len())?
    };
    let queued = release_core(&ctx, &caller, input).await?;
    if q.wait == Some(false) {
        let summary: Vec<Value> = queued.iter().map(queued_json).collect();
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"releases": summary})),
        )
            .into_response());
    }
    let mut streams: Vec<LineStream> = Vec::new();
    for q in &queued {
        let intro = json!({"result": {
            "message": format!(
                "[INFO] {} of artifact {} to {} (job {})",
                q.planned.record.intent.word(),
                q.planned.record.artifact_id,
                q.planned.environment,
                q.job_id
            ),
            "release": queued_json(q),
        }});
        streams.push(Box::pin(futures::stream::once(async move {
            Ok::<_, Infallible>(line(&intro))
        })));
        let Some(slot) = slots.pop() else {
            return Err(ServiceError::internal("more releases than reserved streams").into());
        };
        streams.push(Box::pin(progress_stream(
            ctx.app.clone(),
            q.job_id.clone(),
            q.created,
            slot,
            None,
        )));
    }
    let mut response = Response::new(Body::from_stream(futures::stream::iter(streams).flatten()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/releases", tag = "releases",
    summary = "Release history of a service, newest first (from commit trailers)",
    params(DescribeQuery),
    responses((status = 200, description = "`{service, releases: [...]}` with artifact, intent, who, commit and rollout state", body = Object), crate::http::Refusals))]
async fn describe(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    query: QueryResult<DescribeQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate(&ctx, &headers).await?;
    let Query(q) = query.map_err(|e| query_error(&e))?;
    let service = q.service.clone();
    let entries = describe_core(&ctx, &caller, q).await?;
    let releases: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let row = &entry.release;
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
            add_artifact_details(&mut v, entry.artifact.as_ref());
            v
        })
        .collect();
    Ok(axum::Json(
        json!({"service": service, "releases": releases}),
    ))
}

#[utoipa::path(get, path = "/api/v1/status/{service}", tag = "releases",
    summary = "What runs where: per environment the artifact, tag, author, committer, message, date, CI link, commit, pin and rollout state",
    params(("service" = String, Path, description = "The service")),
    responses((status = 200, description = "`{service, environments: [...]}`", body = Object), crate::http::Refusals))]
async fn status(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate(&ctx, &headers).await?;
    let states = status_core(&ctx, &caller, &service).await?;
    let environments: Vec<Value> = states
        .iter()
        .map(|st| {
            let mut v = json!({
                "environment": st.environment,
                "repository": st.place.as_ref().map(|p| p.repository.clone()),
                "branch": st.place.as_ref().map(|p| p.branch.clone()),
                "path": st.path,
                "released": st.current.is_some(),
                "pinned": st.pin.is_some(),
                "pin": st.pin.as_ref().map(|p| json!({
                    "artifactId": p.artifact, "by": p.by, "at": p.at.to_string(),
                })),
                "previousArtifactId": st.previous_artifact_id,
                "rollout": st.rollout.as_ref().map(|r| json!({
                    "revision": r.revision, "state": r.state, "message": r.message,
                    "at": r.at.to_string(),
                })),
            });
            if let Some(current) = &st.current {
                v["artifactId"] = json!(current.record.artifact_id);
                v["intent"] = json!(current.record.intent);
                v["releasedBy"] = json!(current.record.released_by);
                v["date"] = json!(current.at.to_string());
                v["commit"] = json!(current.commit);
                add_artifact_details(&mut v, st.artifact.as_ref());
            }
            if let Some(d) = &st.set_outside_releases {
                v["setOutsideReleases"] = json!({"image": d.image, "tag": d.tag, "file": d.file});
            }
            v
        })
        .collect();
    Ok(axum::Json(
        json!({"service": service, "environments": environments}),
    ))
}

#[utoipa::path(post, path = "/api/v1/reindex", tag = "releases",
    summary = "Rebuild the release index from the commit trailers of every environment branch",
    responses((status = 200, description = "`{branches: [...]}`: branches read and releases found", body = Object), crate::http::Refusals))]
async fn reindex(
    State(ctx): State<Shared>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate_write(&ctx, &headers, "reindex").await?;
    let branches: Vec<Value> = reindex_core(&ctx, &caller)
        .await?
        .iter()
        .map(|b| {
            json!({
                "repository": b.place.repository,
                "branch": b.place.branch,
                "head": b.head,
                "releases": b.releases,
                "unpins": b.unpins,
            })
        })
        .collect();
    Ok(axum::Json(json!({"branches": branches})))
}

#[utoipa::path(post, path = "/api/v1/unpin", tag = "releases",
    summary = "Lift a rollback pin so auto-release resumes (an empty commit with `Unpinned-by`)",
    request_body = UnpinInput,
    responses((status = 200, description = "The unpin commit's job and the lifted pin", body = Object), crate::http::Refusals))]
async fn unpin(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate_write(&ctx, &headers, "unpin").await?;
    let input: UnpinInput = parse_body(&body)?;
    let unpinned = unpin_core(&ctx, &caller, input).await?;
    let mut v = job_json(&unpinned.job, &[]);
    v["unpinned"] = json!({"artifactId": unpinned.pin.artifact, "rolledBackBy": unpinned.pin.by});
    v["autoRelease"] = json!(unpinned.auto_release);
    v["jobId"] = json!(unpinned.job.id);
    Ok(axum::Json(v))
}

#[utoipa::path(post, path = "/api/v1/rollouts", tag = "releases",
    summary = "Record a rollout state (progressing, healthy, degraded) for the release at a revision",
    request_body = RolloutInput,
    responses((status = 200, description = "`{recorded: true}`", body = Object), crate::http::Refusals))]
async fn report_rollout(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate_write(&ctx, &headers, "rollout.report").await?;
    let input: RolloutInput = parse_body(&body)?;
    report_rollout_core(&ctx, &caller, input).await?;
    Ok(axum::Json(json!({"recorded": true})))
}

fn policies_json(listing: &PolicyListing) -> Value {
    json!({
        "service": listing.service,
        "autoReleases": listing.auto_releases.iter().map(|p| json!({
            "id": p.id, "branch": p.branch, "environment": p.environment, "global": false,
        })).collect::<Vec<_>>(),
        "branchRestrictions": listing.branch_restrictions.iter().map(|(p, global)| json!({
            "id": p.id, "branchRegex": p.branch_regex,
            "environment": p.environment, "global": global,
        })).collect::<Vec<_>>(),
        "overridden": listing.overridden.iter().map(|p| json!({
            "id": p.id, "branchRegex": p.branch_regex, "environment": p.environment,
        })).collect::<Vec<_>>(),
    })
}

fn policy_change_json(change: &PolicyChange) -> Value {
    let mut v = job_json(&change.job, &[]);
    v["jobId"] = json!(change.job.id);
    v["policies"] = policies_json(&change.policies);
    match &change.effect {
        PolicyEffect::Applied(id) => v["id"] = json!(id),
        PolicyEffect::Deleted(ids) => v["deleted"] = json!(ids),
    }
    v
}

#[utoipa::path(get, path = "/api/v1/policies/{service}", tag = "releases",
    summary = "The service's policies (policies/<service>.json) and the global restrictions",
    params(("service" = String, Path, description = "The service")),
    responses((status = 200, description = "`{service, autoReleases, branchRestrictions, overridden}`", body = Object), crate::http::Refusals))]
async fn list_policies(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate(&ctx, &headers).await?;
    let listing = list_policies_core(&ctx, &caller, &service).await?;
    Ok(axum::Json(policies_json(&listing)))
}

#[utoipa::path(post, path = "/api/v1/policies/{service}/auto-release", tag = "releases",
    summary = "Release every new artifact of a branch to an environment automatically",
    params(("service" = String, Path, description = "The service")), request_body = AutoReleaseInput,
    responses((status = 200, description = "The policies after the commit", body = Object), (status = 409, description = "Conflicts with a branch restriction (named)", body = crate::http::ErrorBody), crate::http::Refusals))]
async fn apply_auto_release(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate_write(&ctx, &headers, "policy.write").await?;
    let input: AutoReleaseInput = parse_body(&body)?;
    let change = apply_auto_release_core(&ctx, &caller, &service, input).await?;
    Ok(axum::Json(policy_change_json(&change)))
}

#[utoipa::path(post, path = "/api/v1/policies/{service}/branch-restriction", tag = "releases",
    summary = "Allow only branches matching a regex in an environment",
    params(("service" = String, Path, description = "The service")), request_body = BranchRestrictionInput,
    responses((status = 200, description = "The policies after the commit", body = Object), (status = 409, description = "Conflicts with an auto-release (named)", body = crate::http::ErrorBody), crate::http::Refusals))]
async fn apply_branch_restriction(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate_write(&ctx, &headers, "policy.write").await?;
    let input: BranchRestrictionInput = parse_body(&body)?;
    let change = apply_branch_restriction_core(&ctx, &caller, &service, input).await?;
    Ok(axum::Json(policy_change_json(&change)))
}

#[utoipa::path(delete, path = "/api/v1/policies/{service}", tag = "releases",
    summary = "Delete policies by id (global restrictions cannot be deleted)",
    params(("service" = String, Path, description = "The service")), request_body = DeletePoliciesInput,
    responses((status = 200, description = "The policies after the commit", body = Object), crate::http::Refusals))]
async fn delete_policies(
    State(ctx): State<Shared>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let caller = authenticate_write(&ctx, &headers, "policy.write").await?;
    let input: DeletePoliciesInput = parse_body(&body)?;
    let change = delete_policies_core(&ctx, &caller, &service, input).await?;
    Ok(axum::Json(policy_change_json(&change)))
}
