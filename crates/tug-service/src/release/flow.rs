//! From "release this to there" to stored jobs: resolve the artifact for each environment, check
//! policies, build the edit and the commit message, and enqueue one job per environment for the
//! per-branch writer.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use tug_release::status::{auto_release_allowed, current_release, previous_release};
use tug_release::{
    Artifact, EditKind, ImageReference, Intent, Person, RecordedRelease, ReleaseRecord,
    ServicePolicies,
};
use tug_spec::PathsAt;
use tug_store::{BranchKey, Enqueued, NewJob, NewTask, StoredArtifact};

use super::edits::{chart_update, copy_release, image_update};
use super::index::{history, sync};
use super::{Ctx, Place, ReleaseModel, conflict, internal, invalid, not_found, policies};
use crate::error::{ErrorKind, ServiceError};
use tug_deploy::{TaskChange, WholeFile};

/// What a person (or a policy) asks for, per environment.
#[derive(Debug, Clone)]
pub enum Ask {
    /// An artifact by id, or the newest of a branch.
    Release {
        artifact_id: Option<String>,
        branch: Option<String>,
    },
    /// What runs in `from_env` (default: the environment's predecessor).
    Promote { from_env: Option<String> },
    /// An explicit earlier artifact, or the one before the running one.
    Rollback { artifact_id: Option<String> },
    /// A new artifact of a branch with an auto-release policy.
    Auto { artifact_id: String },
}

/// One environment's release, ready to enqueue.
#[derive(Debug, Clone)]
pub struct Planned {
    pub environment: String,
    pub place: Place,
    pub record: ReleaseRecord,
    pub image: Option<ImageReference>,
    /// A pod-template annotation bump is part of the edit (same tag, new build).
    pub redeploy: bool,
    pub payload: TaskChange,
}

/// A planned release that was stored.
pub struct Submitted {
    pub planned: Planned,
    pub enqueued: Enqueued,
}

pub fn person_identity(by: &Person) -> tug_git::Identity {
    let name = if by.name.trim().is_empty() {
        by.email.clone()
    } else {
        by.name.clone()
    };
    let email = if by.email.trim().is_empty() {
        format!(
            "{}@tug.invalid",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        )
    } else {
        by.email.clone()
    };
    tug_git::Identity::new(name, email)
}

pub async fn load_artifact(
    ctx: &Ctx,
    service: &str,
    id: &str,
) -> Result<(StoredArtifact, Artifact), ServiceError> {
    let stored = ctx
        .app
        .releases
        .artifact(service, id)
        .await
        .map_err(|e| ServiceError::store(&e))?
        .ok_or_else(|| {
            not_found(
                "artifact",
                format!("artifact '{id}' of service '{service}' is not registered"),
            )
        })?;
    let artifact = Artifact::from_json(&stored.artifact_json).map_err(|e| {
        internal(format!(
            "stored artifact '{id}' of service '{service}' does not read back: {e}"
        ))
    })?;
    Ok((stored, artifact))
}

/// Plans the release of `service` to each of `environments`; nothing is stored. Every
/// environment must pass (authorisation, artifact, policies) or the whole request is refused.
pub async fn plan(
    ctx: &Ctx,
    token: Option<&str>,
    service: &str,
    environments: &[String],
    ask: &Ask,
    by: &Person,
) -> Result<Vec<Planned>, ServiceError> {
    let model = ctx.model()?;
    model
        .services
        .get(service)
        .map_err(|e| not_found("service", e.to_string()))?;
    if environments.is_empty() {
        return Err(invalid(
            "environments",
            "environments: name at least one environment",
        ));
    }
    let mut places = BTreeSet::new();
    let mut token_name = String::from("anonymous");
    for (i, env) in environments.iter().enumerate() {
        let field = format!("environments[{i}]");
        model
            .environments
            .get(env)
            .map_err(|e| invalid(&field, format!("{field}: {e}")))?;
        if environments[..i].contains(env) {
            return Err(invalid(
                &field,
                format!("{field}: environment '{env}' is named twice"),
            ));
        }
        model
            .services
            .target_for(service, env)
            .map_err(|e| invalid(&field, format!("{field}: {e}")))?;
        let place = model
            .places
            .get(env)
            .cloned()
            .ok_or_else(|| internal(format!("environment '{env}' has no repository branch")))?;
        token_name = ctx
            .app
            .authorizer
            .authorize(token, &place.repository, &place.branch)
            .map_err(ServiceError::from)?
            .name;
        places.insert(place);
    }
    for place in &places {
        sync(ctx, place, true, false).await?;
    }
    let (history, _) = history(ctx, service).await?;
    let policies = policies::read(ctx, service).await?;
    let mut planned = Vec::new();
    for env in environments {
        let one = plan_one(ctx, model, service, env, ask, by, &history, &policies)
            .await
            .inspect_err(|e| {
                if e.code() == "policy_violation" {
                    tracing::warn!(
                        token = %token_name, service, environment = %env,
                        reason = %e.message(), "release refused by policy"
                    );
                }
            })?;
        planned.push(one);
    }
    Ok(planned)
}

/// A release a branch restriction refuses: 403 `policy_violation`, naming the policy.
fn policy_refusal(
    violation: &tug_release::PolicyViolation,
    env: &str,
    branch: &str,
) -> ServiceError {
    ServiceError::new(ErrorKind::PolicyViolation, violation.to_string()).with_details(json!({
        "policy": violation.policy,
        "global": violation.global,
        "environment": env,
        "branch": branch,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn plan_one(
    ctx: &Ctx,
    model: &ReleaseModel,
    service: &str,
    env: &str,
    ask: &Ask,
    by: &Person,
    history: &[RecordedRelease],
    policies: &ServicePolicies,
) -> Result<Planned, ServiceError> {
    let current = current_release(history, service, env);
    let (artifact_id, intent) = match ask {
        Ask::Release {
            artifact_id: Some(id),
            ..
        } => (id.clone(), Intent::Release),
        Ask::Release {
            artifact_id: None,
            branch: Some(branch),
        } => {
            // A branch the environment does not take is refused as such, whether or not an
            // artifact of it exists.
            policies
                .check_release(&model.global, env, branch)
                .map_err(|violation| policy_refusal(&violation, env, branch))?;
            let newest = ctx
                .app
                .releases
                .artifacts(service, Some(branch), 1)
                .await
                .map_err(|e| ServiceError::store(&e))?;
            let id = newest.into_iter().next().map(|a| a.id).ok_or_else(|| {
                not_found(
                    "artifact",
                    format!("no artifact of service '{service}' was built from branch '{branch}'"),
                )
            })?;
            (id, Intent::Release)
        }
        Ask::Release { .. } => {
            return Err(invalid(
                "artifactId",
                "a release names the artifact (artifactId) or a branch whose newest artifact to release",
            ));
        }
        Ask::Promote { from_env } => {
            let from = match from_env {
                Some(from) => {
                    model
                        .environments
                        .get(from)
                        .map_err(|e| invalid("fromEnv", format!("fromEnv: {e}")))?;
                    from.clone()
                }
                None => model
                    .environments
                    .predecessor(env)
                    .map_err(|e| invalid("environments", e.to_string()))?
                    .map(|p| p.name.clone())
                    .ok_or_else(|| {
                        invalid(
                            "fromEnv",
                            format!(
                                "environment '{env}' is not promoted from another environment; release to it, or name fromEnv"
                            ),
                        )
                    })?,
            };
            let running = current_release(history, service, &from).ok_or_else(|| {
                conflict(format!(
                    "nothing of service '{service}' runs in '{from}' to promote to '{env}'"
                ))
            })?;
            (
                running.record.artifact_id.clone(),
                Intent::Promote { from_env: from },
            )
        }
        Ask::Rollback { artifact_id } => {
            let running = current.ok_or_else(|| {
                conflict(format!(
                    "service '{service}' was never released to '{env}'; there is nothing to roll back"
                ))
            })?;
            let to = match artifact_id {
                Some(id) => id.clone(),
                None => previous_release(history, service, env)
                    .map(|r| r.record.artifact_id.clone())
                    .ok_or_else(|| {
                        conflict(format!(
                            "service '{service}' has no earlier artifact in '{env}' to roll back to from '{}'",
                            running.record.artifact_id
                        ))
                    })?,
            };
            (
                to,
                Intent::Rollback {
                    of_artifact: running.record.artifact_id.clone(),
                },
            )
        }
        Ask::Auto { artifact_id } => (artifact_id.clone(), Intent::AutoRelease),
    };
    let (stored, artifact) = load_artifact(ctx, service, &artifact_id).await?;
    let branch = artifact
        .branch()
        .map_or_else(|| stored.branch.clone(), str::to_owned);
    policies
        .check_release(&model.global, env, &branch)
        .map_err(|violation| policy_refusal(&violation, env, &branch))?;
    let target = model
        .services
        .target_for(service, env)
        .map_err(|e| invalid("environments", e.to_string()))?;
    let place = model
        .places
        .get(env)
        .cloned()
        .ok_or_else(|| internal(format!("environment '{env}' has no repository branch")))?;
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
    let mut segments = Vec::new();
    let mut files: Vec<WholeFile> = Vec::new();
    let mut replace_dirs = Vec::new();
    let mut image = None;
    let mut redeploy = false;
    if target.edit == EditKind::Copy {
        let bundle = ctx
            .app
            .releases
            .bundle(service, &artifact_id)
            .await
            .map_err(|e| ServiceError::store(&e))?
            .ok_or_else(|| {
                conflict(format!(
                    "artifact '{artifact_id}' has no manifest bundle; service '{service}' is released by copying one (POST /api/v1/artifacts/{artifact_id}/bundle)"
                ))
            })?;
        let bundle: BTreeMap<String, String> = serde_json::from_str(&bundle).map_err(|e| {
            internal(format!(
                "stored bundle of '{artifact_id}' is unreadable: {e}"
            ))
        })?;
        let namespace = model
            .services
            .get(service)
            .ok()
            .and_then(|s| s.namespace.clone())
            .or_else(|| (!artifact.namespace.is_empty()).then(|| artifact.namespace.clone()))
            .unwrap_or_else(|| env.to_owned());
        let copy = copy_release(
            &target,
            &namespace,
            &artifact_id,
            &stored.artifact_json,
            &bundle,
        )
        .map_err(conflict)?;
        files = copy.files;
        replace_dirs = copy.replace_dirs;
    } else if matches!(target.edit, EditKind::Chart { .. }) {
        let chart = artifact.chart_reference().ok_or_else(|| {
            conflict(format!(
                "artifact '{artifact_id}' has no chart stage naming a chart version to release (tug artifact add chart)"
            ))
        })?;
        let update = chart_update(&target, &chart).map_err(conflict)?;
        segments.push(PathsAt {
            field: format!("release of {service} to {env}"),
            paths: vec![update],
        });
        image = artifact.image_reference();
    } else {
        let reference = artifact.image_reference().ok_or_else(|| {
            conflict(format!(
                "artifact '{artifact_id}' has no build or push stage naming an image to release"
            ))
        })?;
        if let Some(running) = current
            && let Ok((_, running_artifact)) =
                load_artifact(ctx, service, &running.record.artifact_id).await
            && let Some(running_image) = running_artifact.image_reference()
        {
            // Same tag, another build: the image reference alone may not change, so the
            // pods would keep running the old build.
            redeploy = running_image.tag == reference.tag
                && (running.record.artifact_id != artifact_id
                    || running_image.digest != reference.digest);
        }
        let update = image_update(&target, &reference, redeploy).map_err(conflict)?;
        segments.push(PathsAt {
            field: format!("release of {service} to {env}"),
            paths: vec![update],
        });
        image = Some(reference);
    }
    let record = ReleaseRecord {
        service: service.to_owned(),
        environment: env.to_owned(),
        artifact_id,
        intent,
        released_by: by.clone(),
        // The writer adds the Tug-Request trailer itself.
        request: None,
    };
    let mut payload = TaskChange::release(
        repo.url,
        &person_identity(by),
        &record,
        segments,
        files,
        replace_dirs,
    )
    .map_err(|e| invalid("by", e.to_string()))?;
    payload.redeploy_value = jiff::Timestamp::now().to_string();
    Ok(Planned {
        environment: env.to_owned(),
        place,
        record,
        image,
        redeploy,
        payload,
    })
}

/// Stores one job per planned release and wakes the writers.
pub async fn submit(
    ctx: &Ctx,
    requested_by: &str,
    planned: Vec<Planned>,
    idempotency_key: Option<&str>,
) -> Result<Vec<Submitted>, ServiceError> {
    let mut submitted = Vec::new();
    for p in planned {
        let enqueued = enqueue(
            ctx,
            requested_by,
            "release",
            &p.place,
            &p.payload,
            release_json(&p),
            idempotency_key.map(|k| format!("{k}/{}", p.environment)),
        )
        .await?;
        tracing::info!(
            service = %p.record.service, environment = %p.record.environment,
            artifact = %p.record.artifact_id, intent = ?p.record.intent,
            requested_by, job = %enqueued.job.id, created = enqueued.created,
            "release stored"
        );
        submitted.push(Submitted {
            planned: p,
            enqueued,
        });
    }
    Ok(submitted)
}

pub async fn enqueue(
    ctx: &Ctx,
    requested_by: &str,
    kind: &str,
    place: &Place,
    payload: &TaskChange,
    request: serde_json::Value,
    idempotency_key: Option<String>,
) -> Result<Enqueued, ServiceError> {
    let branch = BranchKey {
        repository: place.repository.clone(),
        branch: place.branch.clone(),
    };
    let payload = serde_json::to_value(payload)
        .map_err(|e| internal(format!("task payload is not JSON: {e}")))?;
    let enqueued = ctx
        .app
        .store
        .enqueue(NewJob {
            idempotency_key,
            kind: kind.to_owned(),
            requested_by: requested_by.to_owned(),
            request,
            tasks: vec![NewTask {
                branch: branch.clone(),
                payload,
            }],
        })
        .await
        .map_err(|e| ServiceError::store(&e))?;
    if enqueued.created {
        ctx.app.writers.wake(&branch).await;
    }
    Ok(enqueued)
}

/// The public shape of a planned release (also the job's stored request).
pub fn release_json(p: &Planned) -> serde_json::Value {
    let mut v = json!({
        "service": p.record.service,
        "environment": p.record.environment,
        "artifactId": p.record.artifact_id,
        "intent": p.record.intent,
        "releasedBy": p.record.released_by,
        "repository": p.place.repository,
        "branch": p.place.branch,
        "redeploy": p.redeploy,
    });
    if let Some(image) = &p.image {
        v["image"] = json!(image.to_string());
    }
    v
}

/// What an auto-release did for one environment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoReleaseOutcome {
    pub environment: String,
    /// `queued`, `blocked` (a rollback pin), `refused` (a policy or the token's scope) or
    /// `skipped` (nothing to release there yet).
    pub status: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// After an unpin: the newest artifact of a branch that an auto-release policy sends to `env`,
/// released there — the artifact the pin held back — or why nothing is released.
pub async fn release_held_back(
    ctx: &Ctx,
    token: Option<&str>,
    requested_by: &str,
    service: &str,
    env: &str,
) -> Result<AutoReleaseOutcome, ServiceError> {
    let skipped = |message: String| AutoReleaseOutcome {
        environment: env.to_owned(),
        status: "skipped",
        message,
        job_id: None,
    };
    let policies = policies::read(ctx, service).await?;
    let branches: Vec<&str> = policies
        .auto_releases
        .iter()
        .filter(|p| p.environment == env)
        .map(|p| p.branch.as_str())
        .collect();
    if branches.is_empty() {
        return Ok(skipped(format!(
            "no auto-release policy of service '{service}' targets '{env}'; nothing is released"
        )));
    }
    let mut newest: Option<StoredArtifact> = None;
    for branch in &branches {
        let found = ctx
            .app
            .releases
            .artifacts(service, Some(branch), 1)
            .await
            .map_err(|e| ServiceError::store(&e))?;
        if let Some(candidate) = found.into_iter().next()
            && newest
                .as_ref()
                .is_none_or(|n| candidate.created_at > n.created_at)
        {
            newest = Some(candidate);
        }
    }
    let Some(candidate) = newest else {
        return Ok(skipped(format!(
            "no artifact of branch {} is registered; nothing is released",
            branches.join(", ")
        )));
    };
    let (history, _) = history(ctx, service).await?;
    if current_release(&history, service, env).is_some_and(|c| c.record.artifact_id == candidate.id)
    {
        return Ok(skipped(format!(
            "'{env}' already runs '{}', the newest auto-release candidate; nothing is released",
            candidate.id
        )));
    }
    let (stored, artifact) = load_artifact(ctx, service, &candidate.id).await?;
    let outcomes = auto_release(ctx, token, requested_by, &stored, &artifact, Some(env)).await?;
    Ok(outcomes.into_iter().next().unwrap_or_else(|| {
        skipped(format!(
            "artifact '{}' is not auto-released to '{env}'; nothing is released",
            stored.id
        ))
    }))
}

/// Releases a newly registered artifact to every environment an auto-release policy of its
/// branch names (only to `only_env`, when given), unless a branch restriction forbids it or a
/// rollback pins the environment.
pub async fn auto_release(
    ctx: &Ctx,
    token: Option<&str>,
    requested_by: &str,
    stored: &StoredArtifact,
    artifact: &Artifact,
    only_env: Option<&str>,
) -> Result<Vec<AutoReleaseOutcome>, ServiceError> {
    let model = ctx.model()?;
    let service = stored.service.as_str();
    if model.services.get(service).is_err() {
        return Ok(Vec::new());
    }
    let branch = artifact
        .branch()
        .map_or_else(|| stored.branch.clone(), str::to_owned);
    let policies = policies::read(ctx, service).await?;
    let by = match (
        artifact.application.author_name.trim(),
        artifact.application.author_email.trim(),
    ) {
        ("", "") => Person::new(
            ctx.app.config.commit.committer_name.clone(),
            ctx.app.config.commit.committer_email.clone(),
        ),
        (name, email) => Person::new(name, email),
    };
    let mut outcomes = Vec::new();
    for env in policies.auto_release_targets(&branch) {
        if only_env.is_some_and(|only| only != env) {
            continue;
        }
        let outcome = |status, message: String| AutoReleaseOutcome {
            environment: env.clone(),
            status,
            message,
            job_id: None,
        };
        if model.environments.get(&env).is_err()
            || model.services.target_for(service, &env).is_err()
        {
            outcomes.push(outcome(
                "skipped",
                format!("service '{service}' has no target in environment '{env}'"),
            ));
            continue;
        }
        if let Err(violation) = policies.check_release(&model.global, &env, &branch) {
            outcomes.push(outcome("refused", violation.to_string()));
            continue;
        }
        let Some(place) = model.places.get(&env) else {
            continue;
        };
        if let Err(e) = ctx
            .app
            .authorizer
            .authorize(token, &place.repository, &place.branch)
        {
            outcomes.push(outcome("refused", e.to_string()));
            continue;
        }
        sync(ctx, place, true, false).await?;
        let (history, unpins) = history(ctx, service).await?;
        if let Err(blocked) = auto_release_allowed(&history, &unpins, service, &env) {
            outcomes.push(outcome("blocked", blocked.to_string()));
            continue;
        }
        let ask = Ask::Auto {
            artifact_id: stored.id.clone(),
        };
        match plan_one(ctx, model, service, &env, &ask, &by, &history, &policies).await {
            Ok(planned) => {
                let submitted = submit(ctx, requested_by, vec![planned], None).await?;
                let job_id = submitted.first().map(|s| s.enqueued.job.id.clone());
                outcomes.push(AutoReleaseOutcome {
                    environment: env.clone(),
                    status: "queued",
                    message: format!("auto-release of '{}' to '{env}' queued", stored.id),
                    job_id,
                });
            }
            Err(e) => outcomes.push(outcome("skipped", e.message().to_owned())),
        }
    }
    Ok(outcomes)
}
