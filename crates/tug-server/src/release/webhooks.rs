//! Inbound webhooks over REST: each reads the headers and body the sender posts, calls the
//! service's trigger or feedback operation, and answers with the JSON senders are documented to
//! get (202 for an event tug ignores, 201 when it registered something new).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;
use tug_service::release::Ctx;
use tug_service::release::feedback::{self, Feedback};
use tug_service::release::triggers::{self, Headers, TriggerOutcome};

use crate::http::{ApiError, bearer, job_json};

type Shared = Arc<Ctx>;

pub(crate) fn router(ctx: Shared) -> Router {
    Router::new()
        .route("/api/v1/webhooks/github", post(github))
        .route("/api/v1/webhooks/gitlab", post(gitlab))
        .route("/api/v1/webhooks/dockerhub", post(dockerhub))
        .route("/api/v1/webhooks/harbor", post(harbor))
        .route("/api/v1/dispatch", post(dispatch))
        .route("/api/v1/webhooks/argocd", post(argocd))
        .route("/api/v1/webhooks/flux", post(flux))
        .with_state(ctx)
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

async fn github(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(answer(triggers::github(&ctx, &headers(&map), &body).await?))
}

async fn gitlab(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(answer(triggers::gitlab(&ctx, &headers(&map), &body).await?))
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn dockerhub(
    State(ctx): State<Shared>,
    Query(query): Query<TokenQuery>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let outcome = triggers::dockerhub(&ctx, query.token.as_deref(), &headers(&map), &body).await?;
    Ok(answer(outcome))
}

async fn harbor(
    State(ctx): State<Shared>,
    Query(query): Query<TokenQuery>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let outcome = triggers::harbor(&ctx, query.token.as_deref(), &headers(&map), &body).await?;
    Ok(answer(outcome))
}

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

async fn argocd(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(feedback_answer(
        feedback::argocd(&ctx, bearer(&map), &body).await?,
    ))
}

async fn flux(
    State(ctx): State<Shared>,
    map: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    Ok(feedback_answer(
        feedback::flux(&ctx, bearer(&map), &body).await?,
    ))
}
