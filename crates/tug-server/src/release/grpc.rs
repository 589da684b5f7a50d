//! `tug.v1.ReleaseService`: the release API over gRPC. Each call maps its request to the input of
//! the same `*_core` function the REST handler calls and maps the typed answer to `tug.v1`
//! messages, so both front ends accept, refuse and do exactly the same things.

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tug_proto::v1;
use tug_proto::v1::release_service_server::{ReleaseService, ReleaseServiceServer};
use tug_release::{Artifact, Intent, Person, StageData};
use tug_service::release::api::Registration;
use tug_store::{Job, StoredArtifact, TaskState};

use tug_service::release::Ctx;
use tug_service::release::api::{
    self, ArtifactsQuery, BundleBody, Caller, DescribeQuery, EnvironmentState, HistoryEntry,
    IntentWord, KnownArtifact, PolicyChange, PolicyEffect, PolicyListing, QueuedRelease,
    ReleaseInput,
};
use tug_service::release::flow::AutoReleaseOutcome;

use crate::grpc_status::job_status;

/// The release service for the gRPC listener; `max_message_bytes` bounds a request (an
/// `artifact.json` or a bundle) as the REST body limit does.
pub(crate) fn server(ctx: Arc<Ctx>, max_message_bytes: usize) -> ReleaseServiceServer<ReleaseApi> {
    ReleaseServiceServer::new(ReleaseApi { ctx }).max_decoding_message_size(max_message_bytes)
}

/// `tug.v1.ReleaseService`.
pub(crate) struct ReleaseApi {
    ctx: Arc<Ctx>,
}

impl ReleaseApi {
    async fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        Caller::authenticate(&self.ctx, bearer(metadata))
            .await
            .map_err(|e| status(&e))
    }

    /// [`ReleaseApi::caller`] for an operation that changes state: a refusal is audited as
    /// `action`.
    async fn writer(&self, metadata: &MetadataMap, action: &'static str) -> Result<Caller, Status> {
        Caller::authenticate_write(&self.ctx, bearer(metadata), action)
            .await
            .map_err(|e| status(&e))
    }
}

/// The token of `authorization: Bearer <token>`, as the REST API reads the header.
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(tug_service::auth::bearer_token)
}

use crate::grpc_status::status;

/// proto3 has no required fields; REST's body parser refuses a missing one, so this does too.
fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field}: must not be empty"
        )));
    }
    Ok(())
}

/// 0 means "the default", as an absent query parameter does.
fn count(count: u32) -> Option<u32> {
    (count > 0).then_some(count)
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn person_in(person: Option<v1::Person>) -> Option<Person> {
    person.map(|p| Person::new(p.name, p.email))
}

fn person(person: &Person) -> v1::Person {
    v1::Person {
        name: person.name.clone(),
        email: person.email.clone(),
    }
}

fn timestamp(at: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}

fn intent(intent: &Intent) -> v1::Intent {
    let (kind, from_env, of_artifact) = match intent {
        Intent::Release => (v1::ReleaseIntent::Release, "", ""),
        Intent::Promote { from_env } => (v1::ReleaseIntent::Promote, from_env.as_str(), ""),
        Intent::Rollback { of_artifact } => (v1::ReleaseIntent::Rollback, "", of_artifact.as_str()),
        Intent::AutoRelease => (v1::ReleaseIntent::AutoRelease, "", ""),
        Intent::Redeploy => (v1::ReleaseIntent::Redeploy, "", ""),
    };
    v1::Intent {
        r#type: kind.into(),
        from_env: from_env.to_owned(),
        of_artifact: of_artifact.to_owned(),
    }
}

/// The index keeps intents as JSON; one written by a newer tug reads as unspecified.
fn indexed_intent(value: &serde_json::Value) -> v1::Intent {
    serde_json::from_value::<Intent>(value.clone())
        .map_or_else(|_| v1::Intent::default(), |parsed| intent(&parsed))
}

fn artifact_summary(stored: &StoredArtifact, artifact: Option<&Artifact>) -> v1::ArtifactSummary {
    let mut summary = v1::ArtifactSummary {
        id: stored.id.clone(),
        service: stored.service.clone(),
        branch: stored.branch.clone(),
        created_at: Some(timestamp(stored.created_at)),
        has_bundle: stored.has_bundle,
        artifact_json: stored.artifact_json.clone(),
        ..Default::default()
    };
    let Some(artifact) = artifact else {
        return summary;
    };
    let app = &artifact.application;
    summary.namespace.clone_from(&artifact.namespace);
    summary.sha.clone_from(&app.sha);
    summary.author = Some(person(&Person::new(
        app.author_name.clone(),
        app.author_email.clone(),
    )));
    summary.committer = Some(person(&Person::new(
        app.committer_name.clone(),
        app.committer_email.clone(),
    )));
    summary.message.clone_from(&app.message);
    summary.url.clone_from(&app.url);
    summary.ci_job_url.clone_from(&artifact.ci.job_url);
    summary.image = artifact.image_reference().map(|r| v1::Image {
        image: r.image,
        tag: r.tag,
        digest: r.digest.unwrap_or_default(),
        stage: String::new(),
    });
    summary.images = artifact
        .stages
        .iter()
        .filter_map(|stage| match &stage.data {
            StageData::Build(d) | StageData::Push(d) => Some(v1::Image {
                image: d.image.clone(),
                tag: d.tag.clone(),
                digest: d.digest.clone().unwrap_or_default(),
                stage: stage.id().to_owned(),
            }),
            _ => None,
        })
        .collect();
    summary
}

/// A stored artifact whose JSON no longer reads back still answers with what the store knows.
fn stored_summary(stored: &StoredArtifact) -> v1::ArtifactSummary {
    let artifact = Artifact::from_json(&stored.artifact_json).ok();
    artifact_summary(stored, artifact.as_ref())
}

fn known_summary(known: &KnownArtifact) -> v1::ArtifactSummary {
    artifact_summary(&known.stored, Some(&known.artifact))
}

fn auto_releases(outcomes: &[AutoReleaseOutcome]) -> Vec<v1::AutoReleaseOutcome> {
    outcomes
        .iter()
        .map(|o| v1::AutoReleaseOutcome {
            environment: o.environment.clone(),
            status: match o.status {
                "queued" => v1::AutoReleaseStatus::Queued,
                "blocked" => v1::AutoReleaseStatus::Blocked,
                "refused" => v1::AutoReleaseStatus::Refused,
                "skipped" => v1::AutoReleaseStatus::Skipped,
                _ => v1::AutoReleaseStatus::Unspecified,
            }
            .into(),
            message: o.message.clone(),
            job_id: o.job_id.clone().unwrap_or_default(),
        })
        .collect()
}

/// A release, unpin or policy job writes one branch: its only task holds the outcome.
fn job_outcome(job: &Job) -> v1::JobOutcome {
    let mut outcome = v1::JobOutcome {
        job_id: job.id.clone(),
        status: job_status(job.state).into(),
        ..Default::default()
    };
    let Some(task) = job.tasks.first() else {
        return outcome;
    };
    let field = |name: &str| {
        task.result
            .as_ref()
            .and_then(|r| r.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    outcome.repository.clone_from(&task.branch.repository);
    outcome.branch.clone_from(&task.branch.branch);
    outcome.commit_sha = field("commit").unwrap_or_default();
    outcome.up_to_date =
        task.state == TaskState::Succeeded && field("status").as_deref() == Some("up_to_date");
    outcome.error = task
        .last_error
        .clone()
        .or_else(|| field("error"))
        .unwrap_or_default();
    outcome
}

fn queued_release(queued: &QueuedRelease, outcome: Option<v1::JobOutcome>) -> v1::QueuedRelease {
    let record = &queued.planned.record;
    v1::QueuedRelease {
        service: record.service.clone(),
        environment: record.environment.clone(),
        artifact_id: record.artifact_id.clone(),
        intent: Some(intent(&record.intent)),
        released_by: Some(person(&record.released_by)),
        repository: queued.planned.place.repository.clone(),
        branch: queued.planned.place.branch.clone(),
        image: queued
            .planned
            .image
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        redeploy: queued.planned.redeploy,
        job_id: queued.job_id.clone(),
        created: queued.created,
        outcome,
    }
}

fn release_entry(entry: &HistoryEntry) -> v1::ReleaseEntry {
    let row = &entry.release;
    v1::ReleaseEntry {
        service: row.service.clone(),
        environment: row.environment.clone(),
        artifact_id: row.artifact_id.clone(),
        intent: Some(indexed_intent(&row.intent)),
        released_by: Some(v1::Person {
            name: row.released_by_name.clone(),
            email: row.released_by_email.clone(),
        }),
        released_at: Some(timestamp(row.released_at)),
        commit: row.commit.clone(),
        repository: row.repository.clone(),
        branch: row.branch.clone(),
        request: row.request.clone().unwrap_or_default(),
        artifact: entry.artifact.as_ref().map(known_summary),
    }
}

fn environment_status(st: &EnvironmentState) -> v1::EnvironmentStatus {
    let mut status = v1::EnvironmentStatus {
        environment: st.environment.clone(),
        repository: st
            .place
            .as_ref()
            .map(|p| p.repository.clone())
            .unwrap_or_default(),
        branch: st
            .place
            .as_ref()
            .map(|p| p.branch.clone())
            .unwrap_or_default(),
        path: st.path.clone().unwrap_or_default(),
        released: st.current.is_some(),
        artifact: st.artifact.as_ref().map(known_summary),
        previous_artifact_id: st.previous_artifact_id.clone().unwrap_or_default(),
        pin: st.pin.as_ref().map(|p| v1::ReleasePin {
            artifact_id: p.artifact.clone(),
            by: Some(person(&p.by)),
            at: Some(timestamp(p.at)),
        }),
        rollout: st.rollout.as_ref().map(|r| v1::RolloutReport {
            revision: r.revision.clone(),
            state: r.state.clone(),
            message: r.message.clone(),
            at: Some(timestamp(r.at)),
        }),
        set_outside_releases: st.set_outside_releases.as_ref().map(|d| v1::DeployedImage {
            image: d.image.clone(),
            tag: d.tag.clone(),
            file: d.file.clone(),
        }),
        ..Default::default()
    };
    if let Some(current) = &st.current {
        status.artifact_id.clone_from(&current.record.artifact_id);
        status.intent = Some(intent(&current.record.intent));
        status.released_by = Some(person(&current.record.released_by));
        status.released_at = Some(timestamp(current.at));
        status.commit.clone_from(&current.commit);
    }
    status
}

fn policies(listing: &PolicyListing) -> v1::Policies {
    let restriction =
        |p: &tug_release::BranchRestrictionPolicy, global: bool| v1::BranchRestrictionPolicy {
            id: p.id.clone(),
            branch_regex: p.branch_regex.clone(),
            environment: p.environment.clone(),
            global,
        };
    v1::Policies {
        service: listing.service.clone(),
        auto_releases: listing
            .auto_releases
            .iter()
            .map(|p| v1::AutoReleasePolicy {
                id: p.id.clone(),
                branch: p.branch.clone(),
                environment: p.environment.clone(),
            })
            .collect(),
        branch_restrictions: listing
            .branch_restrictions
            .iter()
            .map(|(p, global)| restriction(p, *global))
            .collect(),
        // Overridden restrictions are the server's global ones.
        overridden: listing
            .overridden
            .iter()
            .map(|p| restriction(p, true))
            .collect(),
    }
}

fn policy_change(change: &PolicyChange) -> v1::PolicyChange {
    let (id, deleted) = match &change.effect {
        PolicyEffect::Applied(id) => (id.clone(), 0),
        PolicyEffect::Deleted(ids) => (String::new(), u32::try_from(ids.len()).unwrap_or(u32::MAX)),
    };
    v1::PolicyChange {
        outcome: Some(job_outcome(&change.job)),
        policies: Some(policies(&change.policies)),
        id,
        deleted,
    }
}

#[tonic::async_trait]
impl ReleaseService for ReleaseApi {
    async fn push_artifact(
        &self,
        request: Request<v1::PushArtifactRequest>,
    ) -> Result<Response<v1::PushArtifactResponse>, Status> {
        let caller = self.writer(request.metadata(), "artifact.push").await?;
        let file = request.into_inner().artifact_json;
        let text = std::str::from_utf8(&file)
            .map_err(|e| Status::invalid_argument(format!("artifact_json: not UTF-8 ({e})")))?;
        let pushed = api::push_artifact_core(&self.ctx, &caller, text)
            .await
            .map_err(|e| status(&e))?;
        let registration = match pushed.write {
            Registration::Created => v1::ArtifactRegistration::Created,
            Registration::Unchanged => v1::ArtifactRegistration::Unchanged,
        };
        Ok(Response::new(v1::PushArtifactResponse {
            artifact: Some(stored_summary(&pushed.stored)),
            registration: registration.into(),
            auto_releases: auto_releases(&pushed.auto_releases),
        }))
    }

    async fn get_artifact(
        &self,
        request: Request<v1::GetArtifactRequest>,
    ) -> Result<Response<v1::ArtifactSummary>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let v1::GetArtifactRequest { service, id } = request.into_inner();
        required("service", &service)?;
        required("id", &id)?;
        let stored = api::get_artifact_core(&self.ctx, &caller, &service, &id)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(stored_summary(&stored)))
    }

    async fn list_artifacts(
        &self,
        request: Request<v1::ListArtifactsRequest>,
    ) -> Result<Response<v1::ListArtifactsResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let v1::ListArtifactsRequest {
            service,
            branch,
            count: n,
        } = request.into_inner();
        required("service", &service)?;
        let query = ArtifactsQuery {
            service,
            branch: non_empty(branch),
            count: count(n),
        };
        let found = api::list_artifacts_core(&self.ctx, &caller, &query)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::ListArtifactsResponse {
            artifacts: found.iter().map(stored_summary).collect(),
        }))
    }

    async fn upload_bundle(
        &self,
        request: Request<v1::UploadBundleRequest>,
    ) -> Result<Response<v1::UploadBundleResponse>, Status> {
        let caller = self.writer(request.metadata(), "artifact.bundle").await?;
        let v1::UploadBundleRequest {
            service,
            artifact_id,
            files,
        } = request.into_inner();
        required("service", &service)?;
        required("artifact_id", &artifact_id)?;
        let mut texts = BTreeMap::new();
        for (path, content) in files {
            let text = String::from_utf8(content)
                .map_err(|_| Status::invalid_argument(format!("files[{path}]: not UTF-8 text")))?;
            texts.insert(path, text);
        }
        let bundle = BundleBody {
            service,
            files: texts,
        };
        let uploaded = api::upload_bundle_core(&self.ctx, &caller, &artifact_id, &bundle)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::UploadBundleResponse {
            artifact: Some(stored_summary(&uploaded.stored)),
            files: u32::try_from(uploaded.files).unwrap_or(u32::MAX),
            auto_releases: auto_releases(&uploaded.auto_releases),
        }))
    }

    async fn release(
        &self,
        request: Request<v1::ReleaseRequest>,
    ) -> Result<Response<v1::ReleaseResponse>, Status> {
        let caller = self.writer(request.metadata(), "release").await?;
        let r = request.into_inner();
        let intent = match v1::ReleaseIntent::try_from(r.intent) {
            Ok(v1::ReleaseIntent::Unspecified | v1::ReleaseIntent::Release) => IntentWord::Release,
            Ok(v1::ReleaseIntent::Promote) => IntentWord::Promote,
            Ok(v1::ReleaseIntent::Rollback) => IntentWord::Rollback,
            Ok(other) => {
                return Err(Status::invalid_argument(format!(
                    "intent: {} is recorded by tug itself; ask for RELEASE, PROMOTE or ROLLBACK",
                    other.as_str_name()
                )));
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "intent: unknown release intent {}",
                    r.intent
                )));
            }
        };
        let input = ReleaseInput {
            service: r.service,
            environments: r.environments,
            artifact_id: non_empty(r.artifact_id),
            branch: non_empty(r.branch),
            intent,
            from_env: non_empty(r.from_env),
            by: person_in(r.requested_by),
            idempotency_key: non_empty(r.idempotency_key),
        };
        let queued = api::release_core(&self.ctx, &caller, input)
            .await
            .map_err(|e| status(&e))?;
        let mut releases = Vec::with_capacity(queued.len());
        for q in &queued {
            let outcome = if r.wait {
                let job = api::wait_for(&self.ctx.app, &q.job_id)
                    .await
                    .map_err(|e| status(&e))?;
                Some(job_outcome(&job))
            } else {
                None
            };
            releases.push(queued_release(q, outcome));
        }
        Ok(Response::new(v1::ReleaseResponse { releases }))
    }

    async fn describe_releases(
        &self,
        request: Request<v1::DescribeReleasesRequest>,
    ) -> Result<Response<v1::DescribeReleasesResponse>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let v1::DescribeReleasesRequest {
            service,
            env,
            count: n,
        } = request.into_inner();
        required("service", &service)?;
        let query = DescribeQuery {
            service: service.clone(),
            env: non_empty(env),
            count: count(n),
        };
        let entries = api::describe_core(&self.ctx, &caller, query)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::DescribeReleasesResponse {
            service,
            releases: entries.iter().map(release_entry).collect(),
        }))
    }

    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::ServiceStatus>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let service = request.into_inner().service;
        required("service", &service)?;
        let states = api::status_core(&self.ctx, &caller, &service)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::ServiceStatus {
            service,
            environments: states.iter().map(environment_status).collect(),
        }))
    }

    async fn reindex(
        &self,
        request: Request<v1::ReindexRequest>,
    ) -> Result<Response<v1::ReindexResponse>, Status> {
        let caller = self.writer(request.metadata(), "reindex").await?;
        let branches = api::reindex_core(&self.ctx, &caller)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::ReindexResponse {
            branches: branches
                .into_iter()
                .map(|b| v1::ReindexedBranch {
                    repository: b.place.repository,
                    branch: b.place.branch,
                    head: b.head.unwrap_or_default(),
                    releases: b.releases as u64,
                    unpins: b.unpins as u64,
                })
                .collect(),
        }))
    }

    async fn unpin(
        &self,
        request: Request<v1::UnpinRequest>,
    ) -> Result<Response<v1::UnpinResponse>, Status> {
        let caller = self.writer(request.metadata(), "unpin").await?;
        let v1::UnpinRequest {
            service,
            env,
            requested_by,
        } = request.into_inner();
        required("service", &service)?;
        required("env", &env)?;
        let input = api::UnpinInput {
            service,
            env,
            by: person_in(requested_by),
        };
        let unpinned = api::unpin_core(&self.ctx, &caller, input)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::UnpinResponse {
            outcome: Some(job_outcome(&unpinned.job)),
            unpinned_artifact_id: unpinned.pin.artifact.clone(),
            rolled_back_by: Some(person(&unpinned.pin.by)),
            auto_release: auto_releases(std::slice::from_ref(&unpinned.auto_release))
                .into_iter()
                .next(),
        }))
    }

    async fn report_rollout(
        &self,
        request: Request<v1::ReportRolloutRequest>,
    ) -> Result<Response<v1::ReportRolloutResponse>, Status> {
        let caller = self.writer(request.metadata(), "rollout.report").await?;
        let v1::ReportRolloutRequest {
            service,
            env,
            revision,
            state,
            message,
        } = request.into_inner();
        required("service", &service)?;
        required("env", &env)?;
        let input = api::RolloutInput {
            service,
            env,
            revision,
            state,
            message,
        };
        api::report_rollout_core(&self.ctx, &caller, input)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::ReportRolloutResponse { recorded: true }))
    }

    async fn list_policies(
        &self,
        request: Request<v1::ListPoliciesRequest>,
    ) -> Result<Response<v1::Policies>, Status> {
        let caller = self.caller(request.metadata()).await?;
        let service = request.into_inner().service;
        required("service", &service)?;
        let listing = api::list_policies_core(&self.ctx, &caller, &service)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(policies(&listing)))
    }

    async fn apply_auto_release(
        &self,
        request: Request<v1::ApplyAutoReleaseRequest>,
    ) -> Result<Response<v1::PolicyChange>, Status> {
        let caller = self.writer(request.metadata(), "policy.write").await?;
        let v1::ApplyAutoReleaseRequest {
            service,
            branch,
            env,
            requested_by,
        } = request.into_inner();
        required("service", &service)?;
        let input = api::AutoReleaseInput {
            branch,
            env,
            by: person_in(requested_by),
        };
        let change = api::apply_auto_release_core(&self.ctx, &caller, &service, input)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(policy_change(&change)))
    }

    async fn apply_branch_restriction(
        &self,
        request: Request<v1::ApplyBranchRestrictionRequest>,
    ) -> Result<Response<v1::PolicyChange>, Status> {
        let caller = self.writer(request.metadata(), "policy.write").await?;
        let v1::ApplyBranchRestrictionRequest {
            service,
            env,
            branch_regex,
            requested_by,
        } = request.into_inner();
        required("service", &service)?;
        let input = api::BranchRestrictionInput {
            env,
            branch_regex,
            by: person_in(requested_by),
        };
        let change = api::apply_branch_restriction_core(&self.ctx, &caller, &service, input)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(policy_change(&change)))
    }

    async fn delete_policies(
        &self,
        request: Request<v1::DeletePoliciesRequest>,
    ) -> Result<Response<v1::PolicyChange>, Status> {
        let caller = self.writer(request.metadata(), "policy.write").await?;
        let v1::DeletePoliciesRequest {
            service,
            ids,
            requested_by,
        } = request.into_inner();
        required("service", &service)?;
        let input = api::DeletePoliciesInput {
            ids,
            by: person_in(requested_by),
        };
        let change = api::delete_policies_core(&self.ctx, &caller, &service, input)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(policy_change(&change)))
    }
}
