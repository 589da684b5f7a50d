//! The release API, once for every front end: each `*_core` function validates, authorises and
//! does the work of one operation and answers with typed values. tug-server's REST handlers
//! write those values as the JSON the REST API has always answered with, and its gRPC service
//! maps the same values to `tug.v1` messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tug_release::decide::{Request, unpin};
use tug_release::status::{Pin, RecordedRelease, environment_status};
use tug_release::{
    Artifact, AutoReleasePolicy, BranchRestrictionPolicy, Person, PolicyError, ServicePolicies,
};
use tug_store::{
    ArtifactWrite, IndexedRelease, Job, NewArtifact, ReleaseQuery, RolloutState, StoredArtifact,
};

use super::edits::check_bundle;
use super::flow::{
    AutoReleaseOutcome, Planned, auto_release, enqueue, load_artifact, person_identity, plan,
    refused, release_held_back, submit,
};
use super::index::{UNPINNED_BY, history, sync, sync_all};
use super::policies::{policies_path, policies_place, read as read_policies, read_for_change};
use super::{Ctx, Place, conflict, internal, invalid, not_found};
use crate::app::App;
use crate::audit::{self, Entry};
use crate::auth::{Principal, Target, Verb};
use crate::error::{ErrorKind, ServiceError};
use tug_deploy::{FilePrecondition, TaskChange, WholeFile};

/// How long a policy change or unpin waits for its commit before answering with the job as it is.
const WAIT_FOR_COMMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Shared by both front ends.

/// Who calls: the principal the credential authenticates as, with its grants. Every operation
/// checks its verb on what it touches before touching it.
pub struct Caller {
    principal: Principal,
}

impl Caller {
    /// Any valid credential; operations check their verb (`read` for reads) as they go.
    pub async fn authenticate(ctx: &Ctx, token: Option<&str>) -> Result<Self, ServiceError> {
        let principal = ctx.app.caller(token).await?;
        Ok(Caller { principal })
    }

    /// [`Caller::authenticate`] for an operation that changes state: a refusal (no valid token)
    /// is recorded in the audit trail as `action`, like the operation's own refusals.
    pub async fn authenticate_write(
        ctx: &Ctx,
        token: Option<&str>,
        action: &'static str,
    ) -> Result<Self, ServiceError> {
        let caller = Self::authenticate(ctx, token).await;
        if let Err(e) = &caller {
            audit::write(
                ctx.app.audit.as_ref(),
                [Entry::new(action, audit::UNKNOWN_ACTOR).refused(e)],
            )
            .await;
        }
        caller
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    fn check(&self, verb: Verb, target: &Target) -> Result<(), ServiceError> {
        self.principal
            .check(verb, target)
            .map_err(ServiceError::from)
    }

    /// `by` of a request, or the token's name.
    fn requester(&self, by: Option<Person>) -> Person {
        match by {
            Some(by) if !(by.name.trim().is_empty() && by.email.trim().is_empty()) => by,
            _ => Person::new(self.principal.name.clone(), ""),
        }
    }
}

fn count(value: Option<u32>, default: u32) -> Result<u32, ServiceError> {
    match value {
        None => Ok(default),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(_) => Err(invalid("count", "count: must be between 1 and 1000")),
    }
}

fn known_service(ctx: &Ctx, service: &str) -> Result<(), ServiceError> {
    ctx.model()?
        .services
        .get(service)
        .map(|_| ())
        .map_err(|e| not_found("service", e.to_string()))
}

fn known_env(ctx: &Ctx, field: &str, env: &str) -> Result<(), ServiceError> {
    ctx.model()?
        .environments
        .get(env)
        .map(|_| ())
        .map_err(|e| invalid(field, format!("{field}: {e}")))
}

/// A registered artifact whose `artifact.json` reads back.
pub struct KnownArtifact {
    pub stored: StoredArtifact,
    pub artifact: Artifact,
}

/// The registered artifact behind a release, if this server knows it.
async fn known_artifact(
    ctx: &Ctx,
    service: &str,
    artifact_id: &str,
) -> Result<Option<KnownArtifact>, ServiceError> {
    let stored = ctx
        .app
        .releases
        .artifact(service, artifact_id)
        .await
        .map_err(|e| ServiceError::store(&e))?;
    Ok(stored.and_then(|stored| {
        let artifact = Artifact::from_json(&stored.artifact_json).ok()?;
        Some(KnownArtifact { stored, artifact })
    }))
}

/// Waits (bounded) for a job to end, so writes can answer with their commit.
pub async fn wait_for(app: &Arc<App>, job_id: &str) -> Result<Job, ServiceError> {
    let watch = app.signal.watch(job_id);
    let deadline = tokio::time::Instant::now() + WAIT_FOR_COMMIT;
    loop {
        let job = app
            .store
            .job(job_id)
            .await
            .map_err(|e| ServiceError::store(&e))?
            .ok_or_else(|| internal(format!("job {job_id} disappeared")))?;
        if job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
            return Ok(job);
        }
        // The signal wakes us early; the timeout covers a writer on another replica.
        let _ = tokio::time::timeout(Duration::from_millis(500), watch.changed()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Artifacts.

/// What registering an artifact did.
pub struct PushedArtifact {
    pub stored: StoredArtifact,
    pub write: Registration,
    pub auto_releases: Vec<AutoReleaseOutcome>,
}

/// A registration that was accepted: artifacts are immutable, so a known id with other content
/// is refused instead (409 naming the fields that differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Created,
    /// The id was known with the same content (however its JSON was written).
    Unchanged,
}

/// Stores an artifact and reads it back; refuses an id that exists with other content.
pub(crate) async fn store_artifact(
    ctx: &Ctx,
    artifact: NewArtifact,
) -> Result<(StoredArtifact, Registration), ServiceError> {
    let (service, id) = (artifact.service.clone(), artifact.id.clone());
    let new_json = artifact.artifact_json.clone();
    let write = ctx
        .app
        .releases
        .put_artifact(artifact)
        .await
        .map_err(|e| ServiceError::store(&e))?;
    let registration = match write {
        ArtifactWrite::Created => Registration::Created,
        ArtifactWrite::Unchanged => Registration::Unchanged,
        ArtifactWrite::Differs { existing } => {
            let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
            let fields = tug_release::differing_fields(&parse(&existing), &parse(&new_json));
            if !fields.is_empty() {
                return Err(ServiceError::conflict(format!(
                    "artifact {id} of service {service} is already registered with other content \
                     (differs in {}); an artifact never changes: build a new one with its own id",
                    fields.join(", ")
                ))
                .with_details(json!({
                    "service": service,
                    "artifactId": id,
                    "differingFields": fields,
                })));
            }
            Registration::Unchanged
        }
    };
    let stored = ctx
        .app
        .releases
        .artifact(&service, &id)
        .await
        .map_err(|e| ServiceError::store(&e))?
        .ok_or_else(|| internal("the artifact just stored went missing"))?;
    Ok((stored, registration))
}

/// Registers `artifact.json` as CI wrote it and auto-releases it where a policy says so.
async fn push_artifact_unaudited(
    ctx: &Ctx,
    caller: &Caller,
    text: &str,
) -> Result<PushedArtifact, ServiceError> {
    let artifact = Artifact::from_json(text)
        .map_err(|e| ServiceError::invalid(e.to_string()).with_field(Some(e.path())))?;
    caller.check(
        Verb::ArtifactPush,
        &Target::new().service(artifact.service.clone()),
    )?;
    ctx.model()?
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
    let (stored, write) = store_artifact(
        ctx,
        NewArtifact {
            service: artifact.service.clone(),
            id: artifact.id.clone(),
            branch,
            artifact_json: text.to_owned(),
        },
    )
    .await?;
    // Registering the same artifact again changes nothing, so it releases nothing either.
    let auto_releases = if write == Registration::Unchanged {
        Vec::new()
    } else {
        auto_release(
            ctx,
            &caller.principal,
            Verb::ArtifactPush,
            &caller.principal.name,
            &stored,
            &artifact,
            None,
        )
        .await?
    };
    Ok(PushedArtifact {
        stored,
        write,
        auto_releases,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsQuery {
    pub service: String,
    pub branch: Option<String>,
    pub count: Option<u32>,
}

/// Newest first.
pub async fn list_artifacts_core(
    ctx: &Ctx,
    caller: &Caller,
    query: &ArtifactsQuery,
) -> Result<Vec<StoredArtifact>, ServiceError> {
    caller.check(Verb::Read, &Target::new().service(query.service.clone()))?;
    ctx.app
        .releases
        .artifacts(
            &query.service,
            query.branch.as_deref().filter(|b| !b.is_empty()),
            count(query.count, 20)?,
        )
        .await
        .map_err(|e| ServiceError::store(&e))
}

pub async fn get_artifact_core(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
    id: &str,
) -> Result<StoredArtifact, ServiceError> {
    caller.check(Verb::Read, &Target::new().service(service))?;
    let (stored, _) = load_artifact(ctx, service, id).await?;
    Ok(stored)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Bundle)]
pub struct BundleBody {
    pub service: String,
    /// `<env>/<file>` → content.
    pub files: BTreeMap<String, String>,
}

/// What storing a manifest bundle did.
pub struct UploadedBundle {
    pub stored: StoredArtifact,
    pub files: usize,
    pub auto_releases: Vec<AutoReleaseOutcome>,
}

async fn upload_bundle_unaudited(
    ctx: &Ctx,
    caller: &Caller,
    id: &str,
    bundle: &BundleBody,
) -> Result<UploadedBundle, ServiceError> {
    caller.check(
        Verb::ArtifactPush,
        &Target::new().service(bundle.service.clone()),
    )?;
    let model = ctx.model()?;
    check_bundle(&bundle.files, |env| model.environments.get(env).is_ok())
        .map_err(|(field, message)| invalid(&field, format!("{field}: {message}")))?;
    let (_, artifact) = load_artifact(ctx, &bundle.service, id).await?;
    let json = serde_json::to_string(&bundle.files)
        .map_err(|e| internal(format!("bundle is not JSON: {e}")))?;
    ctx.app
        .releases
        .put_bundle(&bundle.service, id, &json)
        .await
        .map_err(|e| ServiceError::store(&e))?;
    let (stored, _) = load_artifact(ctx, &bundle.service, id).await?;
    // Auto-releases of services released by copying wait for their bundle.
    let auto_releases = auto_release(
        ctx,
        &caller.principal,
        Verb::ArtifactPush,
        &caller.principal.name,
        &stored,
        &artifact,
        None,
    )
    .await?;
    Ok(UploadedBundle {
        stored,
        files: bundle.files.len(),
        auto_releases,
    })
}

// ---------------------------------------------------------------------------------------------
// Releases.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum IntentWord {
    Release,
    Promote,
    Rollback,
}

/// "Release this to there": the body of `POST /api/v1/releases`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = ReleaseRequest)]
pub struct ReleaseInput {
    pub service: String,
    pub environments: Vec<String>,
    #[serde(default, alias = "artifact")]
    pub artifact_id: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default = "default_intent")]
    pub intent: IntentWord,
    #[serde(default)]
    pub from_env: Option<String>,
    #[serde(default)]
    pub by: Option<Person>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

fn default_intent() -> IntentWord {
    IntentWord::Release
}

/// One environment's release, stored as a job.
pub struct QueuedRelease {
    pub planned: Planned,
    pub job_id: String,
    /// False when the idempotency key matched a job stored earlier.
    pub created: bool,
}

/// Plans the release to every environment (all pass or nothing is stored) and stores one job
/// per environment.
/// What a release input asks for, as the pure decisions take it.
fn release_request(input: &ReleaseInput) -> Request {
    let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    match input.intent {
        IntentWord::Release => Request::Release {
            artifact_id: non_empty(&input.artifact_id),
            branch: non_empty(&input.branch),
        },
        IntentWord::Promote => Request::Promote {
            from_env: non_empty(&input.from_env),
        },
        IntentWord::Rollback => Request::Rollback {
            artifact_id: non_empty(&input.artifact_id),
        },
    }
}

async fn release_unaudited(
    ctx: &Ctx,
    caller: &Caller,
    input: ReleaseInput,
) -> Result<Vec<QueuedRelease>, ServiceError> {
    let request = release_request(&input);
    let by = caller.requester(input.by);
    let planned = plan(
        ctx,
        &caller.principal,
        &input.service,
        &input.environments,
        &request,
        &by,
    )
    .await?;
    let submitted = submit(
        ctx,
        &caller.principal.name,
        planned,
        input.idempotency_key.as_deref(),
    )
    .await?;
    Ok(submitted
        .into_iter()
        .map(|s| QueuedRelease {
            job_id: s.enqueued.job.id,
            created: s.enqueued.created,
            planned: s.planned,
        })
        .collect())
}

/// A release that was only planned: what it would release and what its commit would change.
pub struct PreviewedRelease {
    pub planned: Planned,
    pub preview: crate::preview::BranchPreview,
}

/// A dry run of a release, promotion or rollback: the same decisions, authorisation and edits as
/// [`release_core`], computed on each environment branch's current tip; nothing is stored or
/// pushed.
pub async fn release_preview_core(
    ctx: &Ctx,
    caller: &Caller,
    input: ReleaseInput,
) -> Result<Vec<PreviewedRelease>, ServiceError> {
    let request = release_request(&input);
    let by = caller.requester(input.by);
    let planned = plan(
        ctx,
        &caller.principal,
        &input.service,
        &input.environments,
        &request,
        &by,
    )
    .await?;
    let mut previews = Vec::with_capacity(planned.len());
    for planned in planned {
        let preview = ctx
            .app
            .preview_change(
                &planned.place.repository,
                &planned.place.branch,
                planned.payload.clone(),
            )
            .await?
            .ok_or_else(|| {
                internal(format!(
                    "repository `{}` is not configured",
                    planned.place.repository
                ))
            })?;
        previews.push(PreviewedRelease { planned, preview });
    }
    Ok(previews)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DescribeQuery {
    pub service: String,
    pub env: Option<String>,
    pub count: Option<u32>,
}

/// One release commit of the history, with its artifact when this server knows it.
pub struct HistoryEntry {
    pub release: IndexedRelease,
    pub artifact: Option<KnownArtifact>,
}

/// Newest first.
pub async fn describe_core(
    ctx: &Ctx,
    caller: &Caller,
    query: DescribeQuery,
) -> Result<Vec<HistoryEntry>, ServiceError> {
    let mut target = Target::new().service(query.service.clone());
    if let Some(env) = query.env.as_deref().filter(|e| !e.is_empty()) {
        target = target.environment(env);
    }
    caller.check(Verb::Read, &target)?;
    known_service(ctx, &query.service)?;
    let env = query.env.filter(|e| !e.is_empty());
    if let Some(env) = &env {
        known_env(ctx, "env", env)?;
    }
    sync_all(ctx, true).await?;
    let rows = ctx
        .app
        .releases
        .releases(&ReleaseQuery {
            service: query.service,
            environment: env,
            limit: count(query.count, 20)?,
        })
        .await
        .map_err(|e| ServiceError::store(&e))?;
    let mut entries = Vec::new();
    for release in rows {
        let artifact = known_artifact(ctx, &release.service, &release.artifact_id).await?;
        entries.push(HistoryEntry { release, artifact });
    }
    Ok(entries)
}

/// What runs in one environment.
pub struct EnvironmentState {
    pub environment: String,
    pub place: Option<Place>,
    /// The service's directory there, when it has a target there.
    pub path: Option<String>,
    pub current: Option<RecordedRelease>,
    /// The artifact of `current`, when this server knows it.
    pub artifact: Option<KnownArtifact>,
    pub previous_artifact_id: Option<String>,
    pub pin: Option<Pin>,
    pub rollout: Option<RolloutState>,
    /// The image the target's file names, when it is not the one `current` released (a deploy
    /// set it, or nothing was ever released there).
    pub set_outside_releases: Option<super::deployed::DeployedImage>,
}

/// One entry per environment, in promotion order.
pub async fn status_core(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
) -> Result<Vec<EnvironmentState>, ServiceError> {
    caller.check(Verb::Read, &Target::new().service(service))?;
    known_service(ctx, service)?;
    let model = ctx.model()?;
    sync_all(ctx, true).await?;
    let (history, unpins) = history(ctx, service).await?;
    let rollouts = ctx
        .app
        .releases
        .rollouts(service)
        .await
        .map_err(|e| ServiceError::store(&e))?;
    // The service's image, to find it in files releases did not write.
    let image = ctx
        .app
        .releases
        .artifacts(service, None, 1)
        .await
        .map_err(|e| ServiceError::store(&e))?
        .first()
        .and_then(|a| tug_release::Artifact::from_json(&a.artifact_json).ok())
        .and_then(|a| a.image_reference())
        .map(|i| i.image);
    let mut environments = Vec::new();
    for env in &model.environments {
        let st = environment_status(&history, &unpins, service, &env.name);
        let artifact = match st.current {
            Some(current) => known_artifact(ctx, service, &current.record.artifact_id).await?,
            None => None,
        };
        let target = model.services.target_for(service, &env.name).ok();
        let deployed = match (model.places.get(&env.name), &target) {
            (Some(place), Some(target)) => {
                super::deployed::deployed_image(ctx, place, target, image.clone()).await?
            }
            _ => None,
        };
        let released_tag = artifact
            .as_ref()
            .and_then(|k| k.artifact.image_reference())
            .map(|i| i.tag);
        let set_outside_releases = deployed
            .filter(|d| st.current.is_none() || released_tag.as_ref().is_some_and(|t| *t != d.tag));
        environments.push(EnvironmentState {
            environment: env.name.clone(),
            place: model.places.get(&env.name).cloned(),
            path: model
                .services
                .target_for(service, &env.name)
                .ok()
                .map(|t| t.path),
            current: st.current.cloned(),
            artifact,
            previous_artifact_id: st.previous.map(|p| p.record.artifact_id.clone()),
            pin: st.pin,
            rollout: rollouts.iter().find(|r| r.environment == env.name).cloned(),
            set_outside_releases,
        });
    }
    Ok(environments)
}

/// What rebuilding the index found on one branch.
pub struct ReindexedBranch {
    pub place: Place,
    pub head: Option<String>,
    pub releases: usize,
    pub unpins: usize,
}

async fn reindex_unaudited(
    ctx: &Ctx,
    caller: &Caller,
) -> Result<Vec<ReindexedBranch>, ServiceError> {
    caller.check(Verb::Reindex, &Target::new())?;
    let model = ctx.model()?;
    ctx.app
        .releases
        .clear_release_index()
        .await
        .map_err(|e| ServiceError::store(&e))?;
    let mut branches = Vec::new();
    for place in model.branches() {
        let synced = sync(ctx, &place, true, true).await?;
        branches.push(ReindexedBranch {
            place,
            head: synced.head,
            releases: synced.releases,
            unpins: synced.unpins,
        });
    }
    Ok(branches)
}

#[allow(clippy::too_many_arguments)]
/// Stores a job that commits `files` (or nothing, for a marker commit) with `message` to
/// `place`, waits for it, and answers with the job.
async fn commit_and_wait(
    ctx: &Ctx,
    caller: &Caller,
    by: &Person,
    place: &Place,
    (title, trailers): &(String, Vec<(String, String)>),
    (files, preconditions): (Vec<WholeFile>, Vec<FilePrecondition>),
    request: Value,
    kind: &str,
) -> Result<Job, ServiceError> {
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
    let payload = TaskChange::files(
        repo.url,
        &person_identity(by),
        title.clone(),
        trailers.clone(),
        files,
        preconditions,
    );
    let enqueued = enqueue(
        ctx,
        &caller.principal.name,
        kind,
        place,
        &payload,
        request,
        None,
    )
    .await?;
    let job = wait_for(&ctx.app, &enqueued.job.id).await?;
    if job.state == tug_store::JobState::Failed {
        let error = job
            .tasks
            .iter()
            .find_map(|t| t.last_error.clone())
            .unwrap_or_else(|| "the commit failed".to_owned());
        return Err(conflict(format!("job {} failed: {error}", job.id)));
    }
    Ok(job)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = Unpin)]
pub struct UnpinInput {
    pub service: String,
    pub env: String,
    #[serde(default)]
    pub by: Option<Person>,
}

/// A lifted rollback pin: the unpin commit's job and the pin it lifted.
pub struct Unpinned {
    pub job: Job,
    pub pin: Pin,
    /// The auto-release the pin held back, released now, or why nothing is.
    pub auto_release: AutoReleaseOutcome,
}

async fn unpin_unaudited(
    ctx: &Ctx,
    caller: &Caller,
    input: UnpinInput,
) -> Result<Unpinned, ServiceError> {
    known_service(ctx, &input.service)?;
    known_env(ctx, "env", &input.env)?;
    let place = ctx
        .model()?
        .places
        .get(&input.env)
        .cloned()
        .ok_or_else(|| internal("environment without a branch"))?;
    caller.check(
        Verb::Unpin,
        &Target::new()
            .service(input.service.clone())
            .environment(input.env.clone())
            .branch(place.repository.clone(), place.branch.clone()),
    )?;
    sync(ctx, &place, true, false).await?;
    let (history, unpins) = history(ctx, &input.service).await?;
    let pinned = unpin(&history, &unpins, &input.service, &input.env).map_err(|r| refused(&r))?;
    let by = caller.requester(input.by);
    let message = (
        format!("[{}/{}] unpin by {}", input.env, input.service, by.short()),
        vec![
            (
                tug_release::trailers::SERVICE.to_owned(),
                input.service.clone(),
            ),
            (
                tug_release::trailers::ENVIRONMENT.to_owned(),
                input.env.clone(),
            ),
            (UNPINNED_BY.to_owned(), by.to_string()),
        ],
    );
    let request = json!({"service": input.service, "env": input.env, "by": by});
    let job = commit_and_wait(
        ctx,
        caller,
        &by,
        &place,
        &message,
        (Vec::new(), Vec::new()),
        request,
        "unpin",
    )
    .await?;
    sync(ctx, &place, false, false).await?;
    let auto_release = if job.state == tug_store::JobState::Succeeded {
        release_held_back(ctx, &caller.principal, &input.service, &input.env).await?
    } else {
        AutoReleaseOutcome {
            environment: input.env.clone(),
            status: "skipped",
            message: "the unpin did not land; nothing is released".to_owned(),
            job_id: None,
        }
    };
    Ok(Unpinned {
        job,
        pin: pinned,
        auto_release,
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = Rollout)]
pub struct RolloutInput {
    pub service: String,
    pub env: String,
    pub revision: String,
    pub state: String,
    #[serde(default)]
    pub message: String,
}

async fn report_rollout_unaudited(
    ctx: &Ctx,
    caller: &Caller,
    input: RolloutInput,
) -> Result<(), ServiceError> {
    caller.check(
        Verb::RolloutReport,
        &Target::new()
            .service(input.service.clone())
            .environment(input.env.clone()),
    )?;
    known_service(ctx, &input.service)?;
    known_env(ctx, "env", &input.env)?;
    if input.state.trim().is_empty() {
        return Err(invalid("state", "state: must not be empty"));
    }
    ctx.app
        .releases
        .put_rollout(RolloutState {
            service: input.service,
            environment: input.env,
            revision: input.revision,
            state: input.state,
            message: input.message,
            at: jiff::Timestamp::now(),
        })
        .await
        .map_err(|e| ServiceError::store(&e))
}

// ---------------------------------------------------------------------------------------------
// Policies.

/// A service's policies with the server's global branch restrictions folded in.
pub struct PolicyListing {
    pub service: String,
    pub auto_releases: Vec<AutoReleasePolicy>,
    /// In force, with whether each is a global one.
    pub branch_restrictions: Vec<(BranchRestrictionPolicy, bool)>,
    /// Global restrictions the service's own overrides.
    pub overridden: Vec<BranchRestrictionPolicy>,
}

fn policy_listing(ctx: &Ctx, policies: &ServicePolicies) -> Result<PolicyListing, ServiceError> {
    let model = ctx.model()?;
    let list = policies.list(&model.global);
    Ok(PolicyListing {
        service: policies.service.clone(),
        auto_releases: list.auto_releases.to_vec(),
        branch_restrictions: list
            .branch_restrictions
            .iter()
            .map(|r| (r.policy.clone(), r.global))
            .collect(),
        overridden: list.overridden.iter().map(|p| (*p).clone()).collect(),
    })
}

fn policy_error(e: &PolicyError) -> ServiceError {
    match e {
        PolicyError::Conflict { new, existing, .. } => {
            ServiceError::new(ErrorKind::PolicyConflict, e.to_string())
                .with_details(json!({"policy": new, "conflictsWith": existing}))
        }
        PolicyError::GlobalNotDeletable { id, .. } => {
            ServiceError::conflict(e.to_string()).with_details(json!({"policy": id}))
        }
        PolicyError::UnknownId { id, .. } => {
            not_found("policy", e.to_string()).with_details(json!({"what": "policy", "policy": id}))
        }
        PolicyError::InvalidRegex { policy, .. } => invalid("branchRegex", e.to_string())
            .with_details(json!({
                "field": "branchRegex", "policy": policy,
            })),
        _ => ServiceError::invalid(e.to_string()),
    }
}

pub async fn list_policies_core(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
) -> Result<PolicyListing, ServiceError> {
    caller.check(Verb::Read, &Target::new().service(service))?;
    known_service(ctx, service)?;
    let policies = read_policies(ctx, service).await?;
    policy_listing(ctx, &policies)
}

/// What a policy change did besides committing the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEffect {
    /// The id of the policy applied.
    Applied(String),
    /// The ids of the policies deleted.
    Deleted(Vec<String>),
}

/// A committed policy change.
pub struct PolicyChange {
    pub job: Job,
    pub policies: PolicyListing,
    pub effect: PolicyEffect,
}

/// Applies `change` to the service's policies and commits the file.
async fn change_policies(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
    env: Option<&str>,
    by: Option<Person>,
    describe: &str,
    change: impl Fn(&mut ServicePolicies) -> Result<PolicyEffect, ServiceError>,
) -> Result<PolicyChange, ServiceError> {
    known_service(ctx, service)?;
    let place = policies_place(ctx)?;
    let mut target = Target::new()
        .service(service)
        .branch(place.repository.clone(), place.branch.clone());
    if let Some(env) = env {
        target = target.environment(env);
    }
    caller.check(Verb::PolicyWrite, &target)?;
    let by = caller.requester(by);
    let message = (
        format!("[policies/{service}] {describe} by {}", by.short()),
        vec![(
            tug_release::trailers::SERVICE.to_owned(),
            service.to_owned(),
        )],
    );
    let request = json!({"service": service, "change": describe, "by": by});
    // Read, change, commit with the bytes read as the precondition: when another policy change
    // landed in between, the commit is refused and the change is made again on a fresh read, so
    // concurrent changes all land and none is lost.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut policies, read) = read_for_change(ctx, service, attempt > 1).await?;
        let effect = change(&mut policies)?;
        let content = policies.to_json().map_err(|e| internal(e.to_string()))?;
        let path = policies_path(service);
        let file = WholeFile {
            path: path.clone(),
            content: content.into_bytes(),
        };
        let precondition = FilePrecondition {
            path,
            content: read,
        };
        let committed = commit_and_wait(
            ctx,
            caller,
            &by,
            &place,
            &message,
            (vec![file], vec![precondition]),
            request.clone(),
            "policy",
        )
        .await;
        match committed {
            Ok(job) => {
                return Ok(PolicyChange {
                    job,
                    policies: policy_listing(ctx, &policies)?,
                    effect,
                });
            }
            Err(e)
                if attempt < POLICY_CHANGE_ATTEMPTS
                    && e.message().contains(tug_deploy::CHANGED_CONCURRENTLY) => {}
            Err(e) => return Err(e),
        }
    }
}

/// How often a policy change is made again after another change landed first.
const POLICY_CHANGE_ATTEMPTS: u32 = 5;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = AutoRelease)]
pub struct AutoReleaseInput {
    pub branch: String,
    pub env: String,
    #[serde(default)]
    pub by: Option<Person>,
}

async fn apply_auto_release_unaudited(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
    input: AutoReleaseInput,
) -> Result<PolicyChange, ServiceError> {
    let model = ctx.model()?;
    known_env(ctx, "env", &input.env)?;
    if let Err(e) = model.services.target_for(service, &input.env)
        && model.services.get(service).is_ok()
    {
        return Err(invalid("env", format!("env: {e}")));
    }
    let describe = format!(
        "apply auto-release of branch {} to {}",
        input.branch, input.env
    );
    let global = model.global.clone();
    change_policies(
        ctx,
        caller,
        service,
        Some(&input.env),
        input.by,
        &describe,
        |p| {
            p.apply_auto_release(&global, &input.branch, &input.env)
                .map(PolicyEffect::Applied)
                .map_err(|e| policy_error(&e))
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = BranchRestriction)]
pub struct BranchRestrictionInput {
    pub env: String,
    pub branch_regex: String,
    #[serde(default)]
    pub by: Option<Person>,
}

async fn apply_branch_restriction_unaudited(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
    input: BranchRestrictionInput,
) -> Result<PolicyChange, ServiceError> {
    known_env(ctx, "env", &input.env)?;
    let describe = format!(
        "apply branch restriction {} to {}",
        input.branch_regex, input.env
    );
    let global = ctx.model()?.global.clone();
    change_policies(
        ctx,
        caller,
        service,
        Some(&input.env),
        input.by,
        &describe,
        |p| {
            p.apply_branch_restriction(&global, &input.env, &input.branch_regex)
                .map(PolicyEffect::Applied)
                .map_err(|e| policy_error(&e))
        },
    )
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = DeletePolicies)]
pub struct DeletePoliciesInput {
    pub ids: Vec<String>,
    #[serde(default)]
    pub by: Option<Person>,
}

async fn delete_policies_unaudited(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
    input: DeletePoliciesInput,
) -> Result<PolicyChange, ServiceError> {
    if input.ids.is_empty() {
        return Err(invalid("ids", "ids: name at least one policy id"));
    }
    let global = ctx.model()?.global.clone();
    let describe = format!("delete policies {}", input.ids.join(", "));
    change_policies(ctx, caller, service, None, input.by, &describe, |p| {
        p.delete(&global, &input.ids)
            .map(|_| {
                let mut ids = input.ids.clone();
                ids.sort();
                ids.dedup();
                PolicyEffect::Deleted(ids)
            })
            .map_err(|e| policy_error(&e))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The audited operations: each state-changing call records who did what and how it ended (see
// `crate::audit`), whichever transport it came through.

impl Caller {
    fn entry(&self, action: &'static str) -> Entry {
        Entry::for_caller(action, Some(&self.principal))
    }
}

fn log(ctx: &Ctx) -> &dyn tug_store::AuditLog {
    ctx.app.audit.as_ref()
}

/// Registers `artifact.json` as CI wrote it and auto-releases it where a policy says so.
pub async fn push_artifact_core(
    ctx: &Ctx,
    caller: &Caller,
    text: &str,
) -> Result<PushedArtifact, ServiceError> {
    let result = push_artifact_unaudited(ctx, caller, text).await;
    let mut entry = caller.entry("artifact.push");
    if let Ok(artifact) = Artifact::from_json(text) {
        entry = entry.service(artifact.service);
    }
    audit::record(log(ctx), entry, result, |p| {
        format!(
            "artifact {} {}, {} auto-release(s)",
            p.stored.id,
            match p.write {
                Registration::Created => "registered",
                Registration::Unchanged => "unchanged",
            },
            p.auto_releases.len()
        )
    })
    .await
}

/// Stores the manifest bundle of an artifact and auto-releases it where a policy says so.
pub async fn upload_bundle_core(
    ctx: &Ctx,
    caller: &Caller,
    id: &str,
    bundle: &BundleBody,
) -> Result<UploadedBundle, ServiceError> {
    let result = upload_bundle_unaudited(ctx, caller, id, bundle).await;
    let entry = caller.entry("artifact.bundle").service(&bundle.service);
    audit::record(log(ctx), entry, result, |u| {
        format!(
            "bundle of artifact {id}: {} file(s), {} auto-release(s)",
            u.files,
            u.auto_releases.len()
        )
    })
    .await
}

/// Plans the release to every environment (all pass or nothing is stored) and stores one job
/// per environment. Recorded once per environment: accepted with the job, or refused.
pub async fn release_core(
    ctx: &Ctx,
    caller: &Caller,
    input: ReleaseInput,
) -> Result<Vec<QueuedRelease>, ServiceError> {
    let action = match input.intent {
        IntentWord::Release => "release",
        IntentWord::Promote => "promote",
        IntentWord::Rollback => "rollback",
    };
    let service = input.service.clone();
    let environments = input.environments.clone();
    let result = release_unaudited(ctx, caller, input).await;
    let records: Vec<_> = match &result {
        Ok(queued) => queued
            .iter()
            .map(|q| {
                caller
                    .entry(action)
                    .service(&service)
                    .environment(&q.planned.environment)
                    .branch(&q.planned.place.repository, &q.planned.place.branch)
                    .accepted(format!(
                        "artifact {}: job {}{}",
                        q.planned.record.artifact_id,
                        q.job_id,
                        if q.created {
                            ""
                        } else {
                            " (idempotency key seen before)"
                        }
                    ))
            })
            .collect(),
        Err(e) if environments.is_empty() => {
            vec![caller.entry(action).service(&service).refused(e)]
        }
        Err(e) => environments
            .iter()
            .map(|env| {
                caller
                    .entry(action)
                    .service(&service)
                    .environment(env)
                    .refused(e)
            })
            .collect(),
    };
    audit::write(log(ctx), records).await;
    result
}

/// Rebuilds the release index from git alone.
pub async fn reindex_core(
    ctx: &Ctx,
    caller: &Caller,
) -> Result<Vec<ReindexedBranch>, ServiceError> {
    let result = reindex_unaudited(ctx, caller).await;
    audit::record(log(ctx), caller.entry("reindex"), result, |branches| {
        format!("{} branch(es) read", branches.len())
    })
    .await
}

/// Lifts a rollback pin with an empty commit on the environment's branch.
pub async fn unpin_core(
    ctx: &Ctx,
    caller: &Caller,
    input: UnpinInput,
) -> Result<Unpinned, ServiceError> {
    let entry = caller
        .entry("unpin")
        .service(&input.service)
        .environment(&input.env);
    let result = unpin_unaudited(ctx, caller, input).await;
    audit::record(log(ctx), entry, result, |u| format!("job {}", u.job.id)).await
}

/// Records a rollout state a cluster reported.
pub async fn report_rollout_core(
    ctx: &Ctx,
    caller: &Caller,
    input: RolloutInput,
) -> Result<(), ServiceError> {
    let entry = caller
        .entry("rollout.report")
        .service(&input.service)
        .environment(&input.env);
    let message = format!("revision {}: {}", input.revision, input.state);
    let result = report_rollout_unaudited(ctx, caller, input).await;
    audit::record(log(ctx), entry, result, |()| message).await
}

fn policy_message(change: &PolicyChange) -> String {
    format!("job {}", change.job.id)
}

pub async fn apply_auto_release_core(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
    input: AutoReleaseInput,
) -> Result<PolicyChange, ServiceError> {
    let entry = caller
        .entry("policy.write")
        .service(service)
        .environment(&input.env);
    let result = apply_auto_release_unaudited(ctx, caller, service, input).await;
    audit::record(log(ctx), entry, result, policy_message).await
}

pub async fn apply_branch_restriction_core(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
    input: BranchRestrictionInput,
) -> Result<PolicyChange, ServiceError> {
    let entry = caller
        .entry("policy.write")
        .service(service)
        .environment(&input.env);
    let result = apply_branch_restriction_unaudited(ctx, caller, service, input).await;
    audit::record(log(ctx), entry, result, policy_message).await
}

pub async fn delete_policies_core(
    ctx: &Ctx,
    caller: &Caller,
    service: &str,
    input: DeletePoliciesInput,
) -> Result<PolicyChange, ServiceError> {
    let entry = caller.entry("policy.write").service(service);
    let result = delete_policies_unaudited(ctx, caller, service, input).await;
    audit::record(log(ctx), entry, result, policy_message).await
}
