//! From "release this to there" to stored jobs: resolve the artifact for each environment, check
//! policies, build the edit and the commit message, and enqueue one job per environment for the
//! per-branch writer.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::json;
use tug_release::decide::{Choice, Decision, Facts, Nothing, Refusal, Request, needs_redeploy};
use tug_release::status::current_release;
use tug_release::{
    Artifact, EditKind, ImageReference, Intent, Person, ReleaseRecord, ServicePolicies, Target,
};
use tug_spec::PathsAt;
use tug_store::{BranchKey, Enqueued, NewJob, NewTask, StoredArtifact};

use super::edits::{chart_update, copy_release, image_update};
use super::index::{history, sync};
use super::{Ctx, Place, ReleaseModel, conflict, internal, invalid, not_found, policies};
use crate::auth::{self, Principal, Verb};
use crate::error::{ErrorKind, ServiceError};
use tug_deploy::{TaskChange, WholeFile};

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
    principal: &Principal,
    service: &str,
    environments: &[String],
    request: &Request,
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
    let verb = match request {
        Request::Release { .. } => Verb::Release,
        Request::Promote { .. } => Verb::Promote,
        Request::Rollback { .. } => Verb::Rollback,
    };
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
        principal.check(
            verb,
            &auth::Target::new()
                .service(service)
                .environment(env.clone())
                .branch(place.repository.clone(), place.branch.clone()),
        )?;
        places.insert(place);
    }
    for place in &places {
        sync(ctx, place, true, false).await?;
    }
    let (history, unpins) = history(ctx, service).await?;
    let policies = policies::read(ctx, service).await?;
    let facts = facts(model, service, &policies).with_history(&history, &unpins);
    let mut planned = Vec::new();
    for env in environments {
        let one = plan_one(ctx, model, &facts, env, request, by)
            .await
            .inspect_err(|e| {
                if e.code() == "policy_violation" {
                    tracing::warn!(
                        token = %principal.name, service, environment = %env,
                        reason = %e.message(), "release refused by policy"
                    );
                }
            })?;
        planned.push(one);
    }
    Ok(planned)
}

/// What the decisions about `service` read, before its history is loaded.
fn facts<'a>(
    model: &'a ReleaseModel,
    service: &'a str,
    policies: &'a ServicePolicies,
) -> Facts<'a> {
    Facts {
        service,
        environments: &model.environments,
        services: &model.services,
        history: &[],
        unpins: &[],
        policies,
        global: &model.global,
    }
}

/// A refused release as the API answers it.
pub(crate) fn refused(refusal: &Refusal) -> ServiceError {
    let message = refusal.to_string();
    match refusal {
        Refusal::NoArtifactNamed => invalid("artifactId", message),
        Refusal::Environment(_) | Refusal::NoTarget { .. } => invalid("environments", message),
        Refusal::UnknownFromEnv(_) | Refusal::NoPreviousEnvironment { .. } => {
            invalid("fromEnv", message)
        }
        // 403 `policy_violation`, naming the policy.
        Refusal::BranchRestricted(violation) => {
            ServiceError::new(ErrorKind::PolicyViolation, message).with_details(json!({
                "policy": violation.policy,
                "global": violation.global,
                "environment": violation.environment,
                "branch": violation.branch,
            }))
        }
        Refusal::NothingToPromote { .. }
        | Refusal::NeverReleased { .. }
        | Refusal::NothingToRollBackTo { .. }
        | Refusal::Pinned(_)
        | Refusal::NotPinned { .. } => conflict(message),
    }
}

/// The branch an artifact was built from: as `artifact.json` names it, else as registered.
fn artifact_branch(stored: &StoredArtifact, artifact: &Artifact) -> String {
    artifact
        .branch()
        .map_or_else(|| stored.branch.clone(), str::to_owned)
}

async fn newest_of_branch(ctx: &Ctx, service: &str, branch: &str) -> Result<String, ServiceError> {
    let newest = ctx
        .app
        .releases
        .artifacts(service, Some(branch), 1)
        .await
        .map_err(|e| ServiceError::store(&e))?;
    newest.into_iter().next().map(|a| a.id).ok_or_else(|| {
        not_found(
            "artifact",
            format!("no artifact of service '{service}' was built from branch '{branch}'"),
        )
    })
}

async fn plan_one(
    ctx: &Ctx,
    model: &ReleaseModel,
    facts: &Facts<'_>,
    env: &str,
    request: &Request,
    by: &Person,
) -> Result<Planned, ServiceError> {
    let chosen = match facts.choose(env, request).map_err(|r| refused(&r))? {
        Choice::Artifact(decision) => decision,
        Choice::NewestOfBranch {
            environment,
            branch,
        } => Decision {
            artifact_id: newest_of_branch(ctx, facts.service, &branch).await?,
            environment,
            intent: Intent::Release,
        },
    };
    plan_release(ctx, model, facts, chosen, by).await
}

/// Loads the chosen artifact, has the decision admit it, and builds the release's edit and
/// commit.
async fn plan_release(
    ctx: &Ctx,
    model: &ReleaseModel,
    facts: &Facts<'_>,
    chosen: Decision,
    by: &Person,
) -> Result<Planned, ServiceError> {
    let service = facts.service;
    let (stored, artifact) = load_artifact(ctx, service, &chosen.artifact_id).await?;
    let decision = facts
        .admit(chosen, &artifact_branch(&stored, &artifact))
        .map_err(|r| refused(&r))?;
    let env = decision.environment.as_str();
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
    let running = current_release(facts.history, service, env).map(|r| &r.record.artifact_id);
    let edit = release_edit(
        ctx,
        model,
        &target,
        &decision,
        (&stored, &artifact),
        running,
    )
    .await?;
    let record = ReleaseRecord {
        service: service.to_owned(),
        environment: decision.environment,
        artifact_id: decision.artifact_id,
        intent: decision.intent,
        released_by: by.clone(),
        // The writer adds the Tug-Request trailer itself.
        request: None,
    };
    let mut payload = TaskChange::release(
        repo.url,
        &person_identity(by),
        &record,
        edit.segments,
        edit.files,
        edit.replace_dirs,
    )
    .map_err(|e| invalid("by", e.to_string()))?;
    payload.redeploy_value = jiff::Timestamp::now().to_string();
    Ok(Planned {
        environment: record.environment.clone(),
        place,
        record,
        image: edit.image,
        redeploy: edit.redeploy,
        payload,
    })
}

/// What a release changes at its target.
#[derive(Default)]
struct ReleaseEdit {
    segments: Vec<PathsAt>,
    files: Vec<WholeFile>,
    replace_dirs: Vec<String>,
    image: Option<ImageReference>,
    redeploy: bool,
}

/// The edit releasing `artifact` at `target`: its manifests copied, its chart version, or its
/// image (with a redeploy when the tag alone would not roll the pods over `running`).
async fn release_edit(
    ctx: &Ctx,
    model: &ReleaseModel,
    target: &Target,
    decision: &Decision,
    (stored, artifact): (&StoredArtifact, &Artifact),
    running: Option<&String>,
) -> Result<ReleaseEdit, ServiceError> {
    let service = target.service.as_str();
    let env = decision.environment.as_str();
    let artifact_id = decision.artifact_id.as_str();
    let field = format!("release of {service} to {env}");
    match &target.edit {
        EditKind::Copy => {
            let bundle = ctx
                .app
                .releases
                .bundle(service, artifact_id)
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
                target,
                &namespace,
                artifact_id,
                &stored.artifact_json,
                &bundle,
            )
            .map_err(conflict)?;
            Ok(ReleaseEdit {
                files: copy.files,
                replace_dirs: copy.replace_dirs,
                ..ReleaseEdit::default()
            })
        }
        EditKind::Chart { .. } => {
            let chart = artifact.chart_reference().ok_or_else(|| {
                conflict(format!(
                    "artifact '{artifact_id}' has no chart stage naming a chart version to release (tug artifact add chart)"
                ))
            })?;
            let update = chart_update(target, &chart).map_err(conflict)?;
            Ok(ReleaseEdit {
                segments: vec![PathsAt {
                    field,
                    paths: vec![update],
                }],
                image: artifact.image_reference(),
                ..ReleaseEdit::default()
            })
        }
        _ => {
            let reference = artifact.image_reference().ok_or_else(|| {
                conflict(format!(
                    "artifact '{artifact_id}' has no build or push stage naming an image to release"
                ))
            })?;
            let running_image = match running {
                Some(id) => load_artifact(ctx, service, id)
                    .await
                    .ok()
                    .and_then(|(_, a)| a.image_reference())
                    .map(|image| (id.as_str(), image)),
                None => None,
            };
            let redeploy = needs_redeploy(
                running_image.as_ref().map(|(id, image)| (*id, image)),
                artifact_id,
                &reference,
            );
            let update = image_update(target, &reference, redeploy).map_err(conflict)?;
            Ok(ReleaseEdit {
                segments: vec![PathsAt {
                    field,
                    paths: vec![update],
                }],
                image: Some(reference),
                redeploy,
                ..ReleaseEdit::default()
            })
        }
    }
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
    let payload = serde_json::to_value(payload.clone().by_actor(requested_by))
        .map_err(|e| internal(format!("task payload is not JSON: {e}")))?;
    let enqueued = ctx
        .app
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
    principal: &Principal,
    service: &str,
    env: &str,
) -> Result<AutoReleaseOutcome, ServiceError> {
    let skipped = |nothing: &Nothing| AutoReleaseOutcome {
        environment: env.to_owned(),
        status: "skipped",
        message: nothing.to_string(),
        job_id: None,
    };
    let model = ctx.model()?;
    let policies = policies::read(ctx, service).await?;
    let facts = facts(model, service, &policies);
    let branches = match facts.auto_release_branches(env) {
        Ok(branches) => branches,
        Err(nothing) => return Ok(skipped(&nothing)),
    };
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
    let (history, unpins) = history(ctx, service).await?;
    let facts = facts.with_history(&history, &unpins);
    let candidate = match facts.held_back(env, &branches, newest.as_ref().map(|n| n.id.as_str())) {
        Ok(candidate) => candidate,
        Err(nothing) => return Ok(skipped(&nothing)),
    };
    let (stored, artifact) = load_artifact(ctx, service, candidate).await?;
    let outcomes = auto_release(
        ctx,
        principal,
        Verb::Unpin,
        &principal.name,
        &stored,
        &artifact,
        Some(env),
    )
    .await?;
    Ok(outcomes.into_iter().next().unwrap_or_else(|| {
        skipped(&Nothing::NotAutoReleased {
            environment: env.to_owned(),
            artifact_id: stored.id.clone(),
        })
    }))
}

/// How an auto-release outcome names a refusal.
fn auto_release_status(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::NoTarget { .. } => "skipped",
        Refusal::Pinned(_) => "blocked",
        _ => "refused",
    }
}

/// Releases a newly registered artifact to every environment an auto-release policy of its
/// branch names (only to `only_env`, when given), unless a branch restriction forbids it or a
/// rollback pins the environment.
/// `principal` asked for it (registering the artifact, or lifting a pin: `verb`); its grant must
/// cover each environment released to, as if it released there itself with `verb`.
pub async fn auto_release(
    ctx: &Ctx,
    principal: &Principal,
    verb: Verb,
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
    let branch = artifact_branch(stored, artifact);
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
    let facts = facts(model, service, &policies);
    let mut outcomes = Vec::new();
    for (env, allowed) in facts.auto_release_targets(&branch, only_env) {
        let outcome = |status, message: String| AutoReleaseOutcome {
            environment: env.clone(),
            status,
            message,
            job_id: None,
        };
        if let Err(refusal) = allowed {
            outcomes.push(outcome(auto_release_status(&refusal), refusal.to_string()));
            continue;
        }
        let Some(place) = model.places.get(&env) else {
            continue;
        };
        if let Err(e) = principal.check(
            verb,
            &auth::Target::new()
                .service(service)
                .environment(env.clone())
                .branch(place.repository.clone(), place.branch.clone()),
        ) {
            outcomes.push(outcome("refused", e.to_string()));
            continue;
        }
        // Pins are decided on the environment's branch as it is now.
        sync(ctx, place, true, false).await?;
        let (history, unpins) = history(ctx, service).await?;
        let facts = facts.with_history(&history, &unpins);
        let decision = match facts.auto_release_to(&env, &stored.id, &branch) {
            Ok(decision) => decision,
            Err(refusal) => {
                outcomes.push(outcome(auto_release_status(&refusal), refusal.to_string()));
                continue;
            }
        };
        match plan_release(ctx, model, &facts, decision, &by).await {
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
