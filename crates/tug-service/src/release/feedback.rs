//! What the cluster says about a release: Argo CD and Flux report a manifest revision, tug
//! finds the release commit with that revision in the release index and records the
//! environment's rollout state (`progressing`, `healthy`, `degraded`), which
//! `GET /api/v1/status/{service}` shows.
//!
//! A revision is often not a release commit itself: group commits, other services' releases,
//! deploys and human commits land after it. Then the report's object name (the Argo CD
//! Application, the Flux Kustomization or HelmRelease `involvedObject.name`) names the service
//! and environment through the `rollout_feedback.names` templates (`{service}-{env}`,
//! `{env}-{service}` by default), and the release is the newest one of that service and
//! environment whose commit is in the revision's history.
//!
//! Both endpoints take the API's bearer token (Argo CD's webhook service and Flux's `generic`
//! provider can both send an `Authorization` header).
//!
//! Argo CD (notifications webhook template, `POST /api/v1/webhooks/argocd`):
//! ```json
//! {"app": "{{.app.metadata.name}}", "revision": "{{.app.status.sync.revision}}",
//!  "syncStatus": "{{.app.status.sync.status}}", "healthStatus": "{{.app.status.health.status}}",
//!  "message": "{{.app.status.operationState.message}}"}
//! ```
//! `Healthy` + `Synced` is healthy, `Degraded`/`Missing`/`Unknown` or a failed sync is degraded,
//! anything else progressing.
//!
//! Flux (notification-controller event, `POST /api/v1/webhooks/flux`): `involvedObject`,
//! `severity`, `reason`, `message` and a revision in `metadata` (`revision` or
//! `<group>/revision`) such as `main@sha1:<sha>` or the older `main/<sha>`. `error` severity is
//! degraded, `ReconciliationSucceeded` healthy, other `info` events progressing.

use serde_json::Value;
use tug_store::{ReleaseQuery, RolloutState};

use super::index::sync_all;
use super::{Ctx, invalid};
use crate::auth::{Principal, Target, Verb};
use crate::error::ServiceError;

/// What a rollout report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// The report names a release: its rollout state is recorded.
    Recorded {
        service: String,
        environment: String,
        revision: String,
        state: &'static str,
    },
    /// No release matches; nothing is recorded and the sender is told why.
    NotRecorded { message: String },
}

/// A rollout report, whatever the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// The Argo CD Application or Flux object name, which names the service and environment.
    pub name: String,
    pub revision: String,
    pub state: &'static str,
    pub message: String,
}

pub(crate) fn argocd_report(payload: &Value) -> Result<Report, String> {
    let s = |key: &str| payload[key].as_str().unwrap_or_default().trim();
    let revision = s("revision");
    if revision.is_empty() {
        return Err("revision: missing (template it from .app.status.sync.revision)".into());
    }
    let health = s("healthStatus");
    let sync = s("syncStatus");
    let operation = s("operationPhase");
    let state = match (health, sync, operation) {
        (_, _, "Failed" | "Error") | ("Degraded" | "Missing" | "Unknown", _, _) => "degraded",
        ("Healthy", "Synced", _) => "healthy",
        _ => "progressing",
    };
    let mut message = format!("Argo CD application {}: {sync}/{health}", s("app"));
    if !s("message").is_empty() {
        message.push_str(&format!(": {}", s("message")));
    }
    Ok(Report {
        name: s("app").to_owned(),
        revision: revision.to_owned(),
        state,
        message,
    })
}

/// The commit of a Flux revision: `main@sha1:<sha>`, `main/<sha>` or `<sha>`.
fn flux_commit(revision: &str) -> &str {
    if let Some((_, sha)) = revision.rsplit_once("sha1:") {
        return sha;
    }
    revision.rsplit_once('/').map_or(revision, |(_, sha)| sha)
}

pub(crate) fn flux_report(payload: &Value) -> Result<Report, String> {
    let metadata = payload["metadata"].as_object();
    let revision = metadata
        .and_then(|m| {
            m.get("revision").or_else(|| {
                m.iter()
                    .find(|(k, _)| k.ends_with("/revision"))
                    .map(|(_, v)| v)
            })
        })
        .and_then(Value::as_str)
        .unwrap_or_default();
    if revision.is_empty() {
        return Err("metadata.revision: the event names no revision".into());
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let reason = s(&payload["reason"]);
    let state = match (s(&payload["severity"]).as_str(), reason.as_str()) {
        ("error", _) => "degraded",
        (_, "ReconciliationSucceeded") => "healthy",
        _ => "progressing",
    };
    let object = &payload["involvedObject"];
    Ok(Report {
        name: s(&object["name"]),
        revision: flux_commit(revision).to_owned(),
        state,
        message: format!(
            "Flux {} {}/{}: {reason}: {}",
            s(&object["kind"]),
            s(&object["namespace"]),
            s(&object["name"]),
            s(&payload["message"])
        ),
    })
}

/// An Argo CD notification (the `webhook` service's JSON body tug documents).
pub async fn argocd(ctx: &Ctx, token: Option<&str>, body: &[u8]) -> Result<Feedback, ServiceError> {
    let caller = ctx.app.caller(token).await;
    let result = match &caller {
        Ok(principal) => record(ctx, principal, body, argocd_report).await,
        Err(e) => Err(e.clone()),
    };
    audited(ctx, caller.as_ref().ok(), result).await
}

/// A Flux notification-controller event (generic webhook provider).
pub async fn flux(ctx: &Ctx, token: Option<&str>, body: &[u8]) -> Result<Feedback, ServiceError> {
    let caller = ctx.app.caller(token).await;
    let result = match &caller {
        Ok(principal) => record(ctx, principal, body, flux_report).await,
        Err(e) => Err(e.clone()),
    };
    audited(ctx, caller.as_ref().ok(), result).await
}

/// Records a rollout report in the audit trail (see `crate::audit`).
async fn audited(
    ctx: &Ctx,
    caller: Option<&Principal>,
    result: Result<Feedback, ServiceError>,
) -> Result<Feedback, ServiceError> {
    let mut entry = crate::audit::Entry::for_caller("rollout.report", caller);
    if let Ok(Feedback::Recorded {
        service,
        environment,
        ..
    }) = &result
    {
        entry = entry.service(service).environment(environment);
    }
    crate::audit::record(ctx.app.audit.as_ref(), entry, result, |f| match f {
        Feedback::Recorded {
            revision, state, ..
        } => format!("revision {revision}: {state}"),
        Feedback::NotRecorded { message } => format!("not recorded: {message}"),
    })
    .await
}

async fn record(
    ctx: &Ctx,
    principal: &Principal,
    body: &[u8],
    read: fn(&Value) -> Result<Report, String>,
) -> Result<Feedback, ServiceError> {
    // The verb first, before any work; the service and environment once the report names them.
    principal.check(Verb::RolloutReport, &Target::new())?;
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ServiceError::invalid(format!("request body: {e}")))?;
    let report = read(&payload).map_err(|m| {
        let field = m.split(':').next().unwrap_or("body").to_owned();
        invalid(&field, m)
    })?;
    if report.revision.len() < 7 || !report.revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "revision",
            format!(
                "revision: `{}` is not a commit SHA (7 to 40 hex digits)",
                report.revision
            ),
        ));
    }
    let mut found = find_release(ctx, &report.revision).await?;
    if found.is_none() {
        // The commit may be newer than the index (a release another replica pushed).
        sync_all(ctx, true).await?;
        found = find_release(ctx, &report.revision).await?;
    }
    if found.is_none() {
        // A revision after the release (group commit, other services, deploys, human commits):
        // the object's name names the service and environment, ancestry the release.
        found = find_by_name(ctx, &report.name, &report.revision).await?;
    }
    let Some((service, environment, commit)) = found else {
        return Ok(Feedback::NotRecorded {
            message: format!(
                "no release has manifest commit {}, and '{}' names no service and environment with a release in its history (names are {}; see rollout_feedback.names)",
                report.revision,
                report.name,
                ctx.app.config.rollout_feedback.describe()
            ),
        });
    };
    principal.check(
        Verb::RolloutReport,
        &Target::new()
            .service(service.clone())
            .environment(environment.clone()),
    )?;
    ctx.app
        .releases
        .put_rollout(RolloutState {
            service: service.clone(),
            environment: environment.clone(),
            revision: commit.clone(),
            state: report.state.to_owned(),
            message: report.message,
            at: jiff::Timestamp::now(),
        })
        .await
        .map_err(|e| ServiceError::store(&e))?;
    // Nobody listens unless GitHub deployments are configured; that is not an error.
    let _ = ctx.rollouts.send(super::release_notify::Rollout {
        service: service.clone(),
        environment: environment.clone(),
        commit: commit.clone(),
        state: report.state,
    });
    Ok(Feedback::Recorded {
        service,
        environment,
        revision: commit,
        state: report.state,
    })
}

/// The (service, environment) an object name stands for, by the configured templates.
fn service_and_env(ctx: &Ctx, name: &str) -> Result<Option<(String, String)>, ServiceError> {
    let model = ctx.model()?;
    let services: Vec<&str> = model.services.iter().map(|s| s.name.as_str()).collect();
    let environments: Vec<&str> = model.environments.iter().map(|e| e.name.as_str()).collect();
    Ok(name_match(
        &ctx.app.config.rollout_feedback.names,
        &services,
        &environments,
        name,
    ))
}

/// The first (service, environment) whose name by the first matching template is `name`.
fn name_match(
    templates: &[String],
    services: &[&str],
    environments: &[&str],
    name: &str,
) -> Option<(String, String)> {
    templates.iter().find_map(|template| {
        services.iter().find_map(|service| {
            environments.iter().find_map(|env| {
                let rendered = template.replace("{service}", service).replace("{env}", env);
                (rendered == name).then(|| ((*service).to_owned(), (*env).to_owned()))
            })
        })
    })
}

/// The newest release of the service and environment `name` stands for whose commit is in the
/// history of `revision`.
async fn find_by_name(
    ctx: &Ctx,
    name: &str,
    revision: &str,
) -> Result<Option<(String, String, String)>, ServiceError> {
    let Some((service, env)) = service_and_env(ctx, name)? else {
        return Ok(None);
    };
    let model = ctx.model()?;
    let Some(place) = model.places.get(&env).cloned() else {
        return Ok(None);
    };
    let rows = ctx
        .app
        .releases
        .releases(&ReleaseQuery {
            service: service.clone(),
            environment: Some(env.clone()),
            limit: 10_000,
        })
        .await
        .map_err(|e| ServiceError::store(&e))?;
    let mirror = super::index::mirror_of(ctx, &place.repository).await?;
    // The cluster may have seen a commit the mirror has not fetched yet.
    super::index::tip(mirror.clone(), &place.branch, true).await?;
    let revision = revision.to_ascii_lowercase();
    let found = tokio::task::spawn_blocking(move || {
        // Newest first: the first release in the revision's history is the one it runs.
        for row in rows {
            let Some(commit) = tug_git::ObjectId::from_hex(&row.commit) else {
                continue;
            };
            if mirror.is_ancestor(commit, &revision).unwrap_or(false) {
                return Some(row.commit);
            }
        }
        None
    })
    .await
    .map_err(|e| super::internal(format!("git task failed: {e}")))?;
    Ok(found.map(|commit| (service, env, commit)))
}

/// (service, environment, full commit) of the release whose commit starts with `revision`.
async fn find_release(
    ctx: &Ctx,
    revision: &str,
) -> Result<Option<(String, String, String)>, ServiceError> {
    let model = ctx.model()?;
    sync_all(ctx, false).await?;
    let revision = revision.to_ascii_lowercase();
    for service in model.services.iter() {
        let rows = ctx
            .app
            .releases
            .releases(&ReleaseQuery {
                service: service.name.clone(),
                environment: None,
                limit: 10_000,
            })
            .await
            .map_err(|e| ServiceError::store(&e))?;
        if let Some(row) = rows.into_iter().find(|r| r.commit.starts_with(&revision)) {
            return Ok(Some((row.service, row.environment, row.commit)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn object_names_stand_for_a_service_and_an_environment() {
        let defaults = crate::config::rollout_feedback::RolloutFeedbackConfig::default().names;
        let services = ["api", "web-api"];
        let environments = ["dev", "prod"];
        let found = |templates: &[String], name: &str| {
            super::name_match(templates, &services, &environments, name)
        };
        let pair = |s: &str, e: &str| Some((s.to_owned(), e.to_owned()));
        assert_eq!(found(&defaults, "api-dev"), pair("api", "dev"));
        assert_eq!(found(&defaults, "prod-web-api"), pair("web-api", "prod"));
        assert_eq!(found(&defaults, "web-api-prod"), pair("web-api", "prod"));
        assert_eq!(found(&defaults, "api"), None);
        let custom = ["{env}.{service}".to_owned()];
        assert_eq!(found(&custom, "prod.api"), pair("api", "prod"));
        assert_eq!(found(&custom, "api-prod"), None);
    }

    #[test]
    fn flux_revisions_name_their_commit() {
        assert_eq!(flux_commit("main@sha1:abc1234"), "abc1234");
        assert_eq!(flux_commit("main/abc1234"), "abc1234");
        assert_eq!(flux_commit("abc1234"), "abc1234");
    }

    #[test]
    fn argocd_states_follow_health_and_sync() {
        let report = |h: &str, s: &str| {
            argocd_report(
                &json!({"app": "a", "revision": "abcdef0", "healthStatus": h, "syncStatus": s}),
            )
            .unwrap()
            .state
        };
        assert_eq!(report("Healthy", "Synced"), "healthy");
        assert_eq!(report("Progressing", "Synced"), "progressing");
        assert_eq!(report("Healthy", "OutOfSync"), "progressing");
        assert_eq!(report("Degraded", "Synced"), "degraded");
    }
}
