//! Inbound webhooks over REST: each reads the headers and body the sender posts, calls the
//! service's trigger or feedback operation, and answers with the JSON senders are documented to
//! get (202 for an event tug ignores, 201 when it registered something new).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tug_service::release::Ctx;
use tug_service::release::feedback::{self, Feedback};
use tug_service::release::triggers::{self, Headers, TriggerOutcome};

use crate::http::{ApiError, bearer, job_json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Shared = Arc<Ctx>;

/// The webhook routes, each registered together with its documentation.
pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(routes!(github))
        .routes(routes!(gitlab))
        .routes(routes!(dockerhub))
        .routes(routes!(harbor))
        .routes(routes!(dispatch))
        .routes(routes!(argocd))
        .routes(routes!(flux))
}

pub(crate) fn router(ctx: Shared) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(ctx)
}

/// Header values that are not text are left out: no sender tug speaks with uses them.
fn headers(map: &HeaderMap) -> Headers {
    Headers::new(map.iter().filter_map(|(k, v)| {
        v.to_str()
            .ok()
            .map(|v| (k.as_str().to_owned(), v.to_owned()))
    }))
}

fn answer(outcome: TriggerOutcome) -> Response {
    match outcome {
        TriggerOutcome::Pong => axum::Json(json!({"message": "pong"})).into_response(),
        TriggerOutcome::Ignored(message) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"ignored": true, "message": message})),
        )
            .into_response(),
        TriggerOutcome::Registered(registered) => {
            let created = registered.iter().any(|r| r["created"] == true);
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(json!({"artifacts": registered}))).into_response()
        }
        TriggerOutcome::Dispatched { job, created, rule } => {
            let mut v = job_json(&job, &[]);
            v["jobId"] = json!(job.id);
            v["created"] = json!(created);
            v["rule"] = json!(rule);
            (StatusCode::ACCEPTED, axum::Json(v)).into_response()
        }
    }
}

#[utoipa::path(post, path = "/api/v1/webhooks/github", tag = "webhooks",
    summary = "GitHub push and package events",
    description = "Signed with `X-Hub-Signature-256` (HMAC-SHA256 of the body with the configured secret).",
    security(()),
    request_body = Object,
    responses((status = 200, description = "What the event did (artifacts registered, releases queued)", body = Object), (status = 201, description = "An artifact was registered", body = Object), (status = 202, description = "The event was ignored: `{ignored: true, message}`", body = Object), crate::http::Refusals))]
async fn github(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(answer(triggers::github(&ctx, &headers(&map), &body).await?))
}

#[utoipa::path(post, path = "/api/v1/webhooks/gitlab", tag = "webhooks",
    summary = "GitLab push and tag events",
    description = "Authenticated by `X-Gitlab-Token`.",
    security(()),
    request_body = Object,
    responses((status = 200, description = "What the event did (artifacts registered, releases queued)", body = Object), (status = 201, description = "An artifact was registered", body = Object), (status = 202, description = "The event was ignored: `{ignored: true, message}`", body = Object), crate::http::Refusals))]
async fn gitlab(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(answer(triggers::gitlab(&ctx, &headers(&map), &body).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TokenQuery {
    /// The shared secret configured for the sender.
    token: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/webhooks/dockerhub", tag = "webhooks",
    summary = "Docker Hub image pushes",
    description = "Authenticated by the `token` query parameter.",
    security(()),
    request_body = Object, params(TokenQuery),
    responses((status = 200, description = "What the event did (artifacts registered, releases queued)", body = Object), (status = 201, description = "An artifact was registered", body = Object), (status = 202, description = "The event was ignored: `{ignored: true, message}`", body = Object), crate::http::Refusals))]
async fn dockerhub(
    State(ctx): State<Shared>,
    Query(query): Query<TokenQuery>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let outcome = triggers::dockerhub(&ctx, query.token.as_deref(), &headers(&map), &body).await?;
    Ok(answer(outcome))
}

#[utoipa::path(post, path = "/api/v1/webhooks/harbor", tag = "webhooks",
    summary = "Harbor PUSH_ARTIFACT events",
    description = "Authenticated by the `Authorization` header Harbor sends, or the `token` query parameter.",
    security(()),
    request_body = Object, params(TokenQuery),
    responses((status = 200, description = "What the event did (artifacts registered, releases queued)", body = Object), (status = 201, description = "An artifact was registered", body = Object), (status = 202, description = "The event was ignored: `{ignored: true, message}`", body = Object), crate::http::Refusals))]
async fn harbor(
    State(ctx): State<Shared>,
    Query(query): Query<TokenQuery>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let outcome = triggers::harbor(&ctx, query.token.as_deref(), &headers(&map), &body).await?;
    Ok(answer(outcome))
}

#[utoipa::path(post, path = "/api/v1/dispatch", tag = "webhooks",
    summary = "A repository_dispatch-style event (`{event_type, client_payload}`) mapped to deploy specs by the server's rules",
    request_body = Object,
    responses((status = 200, description = "What the event did (artifacts registered, releases queued)", body = Object), (status = 201, description = "An artifact was registered", body = Object), (status = 202, description = "The event was ignored: `{ignored: true, message}`", body = Object), crate::http::Refusals))]
async fn dispatch(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(answer(triggers::dispatch(&ctx, bearer(&map), &body).await?))
}

fn feedback_answer(outcome: Feedback) -> Response {
    match outcome {
        Feedback::NotRecorded { message } => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"recorded": false, "message": message})),
        )
            .into_response(),
        Feedback::Recorded {
            service,
            environment,
            revision,
            state,
        } => axum::Json(json!({
            "recorded": true,
            "service": service,
            "environment": environment,
            "revision": revision,
            "state": state,
        }))
        .into_response(),
    }
}

#[utoipa::path(post, path = "/api/v1/webhooks/argocd", tag = "webhooks",
    summary = "Argo CD notification webhooks",
    description = "Matched to a release by revision; sets the rollout state.",
    request_body = Object,
    responses((status = 200, description = "`{recorded: true, service, environment, revision, state}`", body = Object), (status = 202, description = "Not matched to a release: `{recorded: false, message}`", body = Object), crate::http::Refusals))]
async fn argocd(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(feedback_answer(
        feedback::argocd(&ctx, bearer(&map), &body).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/webhooks/flux", tag = "webhooks",
    summary = "Flux notification-controller events",
    description = "Matched to a release by revision; sets the rollout state.",
    request_body = Object,
    responses((status = 200, description = "`{recorded: true, service, environment, revision, state}`", body = Object), (status = 202, description = "Not matched to a release: `{recorded: false, message}`", body = Object), crate::http::Refusals))]
async fn flux(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(feedback_answer(
        feedback::flux(&ctx, bearer(&map), &body).await?,
    ))
}
