//! The gRPC API (tonic): `tug.v1.DeployService`, the standard `grpc.health.v1.Health` service and
//! server reflection (v1 and v1alpha).
//!
//! A gRPC deploy request is converted to the same [`tug_spec::DeployRequest`] a REST body parses
//! into and goes through [`App::submit`], so both front ends accept and refuse exactly the same
//! requests, with the same messages.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tug_proto::v1;
use tug_proto::v1::deploy_service_server::{DeployService, DeployServiceServer};
use tug_store::{BranchKey, Event, Job, JobState, Level, Task, TaskId, TaskState};

use tug_service::App;
use tug_service::app::JobsQuery;
use tug_service::follow::{Update, follow};

use crate::grpc_status::{job_status, status};

/// All gRPC services of the server, as one router for the gRPC listener (HTTP/2).
pub fn router(app: Arc<App>, releases: &tug_service::release::Releases) -> axum::Router {
    let limit = usize::try_from(app.config.limits.max_body_bytes).unwrap_or(usize::MAX);
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(health_service(&app));
    routes.add_service(crate::release::grpc::server(releases.ctx().clone(), limit));
    routes
        .add_service(DeployServiceServer::new(DeployApi { app }).max_decoding_message_size(limit));
    // Reflection advertises tug's services and the health service with their descriptors, so
    // `grpcurl` and friends work without a copy of the .proto files.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tug_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Only a broken descriptor set fails to build, and tug-proto's unit tests guard it; the
    // deploy service is still worth serving without reflection.
    match reflection().build_v1() {
        Ok(service) => {
            routes.add_service(service);
        }
        Err(e) => tracing::error!(error = %e, "gRPC reflection v1 is unavailable"),
    }
    match reflection().build_v1alpha() {
        Ok(service) => {
            routes.add_service(service);
        }
        Err(e) => tracing::error!(error = %e, "gRPC reflection v1alpha is unavailable"),
    }
    routes.routes().into_axum_router()
}

/// `grpc.health.v1.Health`: SERVING for the server (""), `tug.v1.DeployService`,
/// `tug.v1.ReleaseService` and `delivery` (the name the Delivery server's health checks ask for,
/// as REST's `?service=delivery` does) while the database answers; NOT_SERVING while it does not,
/// and from the start of a shutdown on, so load balancers stop sending requests.
const HEALTH_SERVICES: [&str; 3] = [
    tug_proto::DEPLOY_SERVICE_NAME,
    tug_proto::RELEASE_SERVICE_NAME,
    "delivery",
];

fn health_service(
    app: &Arc<App>,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    // The reporter is new and nobody else holds its lock, so this completes at once; doing it
    // before the listener serves means no health check ever sees the service as unknown.
    futures::executor::block_on(async {
        for name in HEALTH_SERVICES {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
    });
    let app = app.clone();
    tokio::spawn(async move {
        // The database is checked every two seconds: while it is unreachable the replica is
        // NOT_SERVING, so load balancers send requests to replicas that can store them.
        let mut shutdown = app.shutdown.clone();
        let mut serving = true;
        loop {
            let stopping = tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(2)) => false,
                () = shutdown.wait() => true,
            };
            let now_serving = !stopping && app.health().await.is_ok();
            if now_serving != serving {
                serving = now_serving;
                let status = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                for name in std::iter::once("").chain(HEALTH_SERVICES) {
                    reporter.set_service_status(name, status).await;
                }
            }
            if stopping {
                return;
            }
        }
    });
    service
}

/// `tug.v1.DeployService`.
pub struct DeployApi {
    app: Arc<App>,
}

type DeployEvents = Pin<Box<dyn Stream<Item = Result<v1::DeployEvent, Status>> + Send>>;

#[tonic::async_trait]
impl DeployService for DeployApi {
    type DeployStream = DeployEvents;

    async fn deploy(
        &self,
        request: Request<v1::DeployRequest>,
    ) -> Result<Response<Self::DeployStream>, Status> {
        let token = bearer(request.metadata()).map(str::to_owned);
        let idempotency_key = idempotency_key(request.metadata())?;
        let deploy = tug_spec::DeployRequest::from(request.into_inner());
        // Every gRPC deploy streams: its place among the waiting streams comes first.
        let slot = self
            .app
            .waiting
            .reserve(1)
            .map_err(|e| status(&e))?
            .pop()
            .ok_or_else(|| Status::internal("no stream slot"))?;
        let submitted = self
            .app
            .submit_to_follow(token.as_deref(), deploy, idempotency_key)
            .await
            .map_err(|e| status(&e))?;
        let enqueued = submitted.enqueued;
        let branches = task_branches(&enqueued.job);
        let created = enqueued.created;
        let updates = follow(
            self.app.clone(),
            enqueued.job.id.clone(),
            created,
            slot,
            submitted.head_start,
        );
        let events = updates.map(move |update| deploy_event(update, created, &branches));
        Ok(Response::new(Box::pin(events)))
    }

    async fn preview_deploy(
        &self,
        request: Request<v1::DeployRequest>,
    ) -> Result<Response<v1::DeployPreview>, Status> {
        let token = bearer(request.metadata()).map(str::to_owned);
        let deploy = tug_spec::DeployRequest::from(request.into_inner());
        let previews = self
            .app
            .preview(token.as_deref(), deploy)
            .await
            .map_err(|e| status(&e))?;
        let branches: Vec<v1::BranchPreview> = previews
            .into_iter()
            .map(|p| v1::BranchPreview {
                repository: p.repository,
                url: p.url,
                branch: p.branch,
                tip: p.tip.unwrap_or_default(),
                status: p.status.to_owned(),
                commit_message: p.commit_message.unwrap_or_default(),
                files: p
                    .files
                    .into_iter()
                    .map(|f| v1::FilePreview {
                        path: f.path,
                        diff: f.diff,
                    })
                    .collect(),
                created: p.created,
                error: p.error.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(v1::DeployPreview {
            ok: branches.iter().all(|b| b.status != "failed"),
            branches,
        }))
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::Job>, Status> {
        let token = bearer(request.metadata()).map(str::to_owned);
        let v1::GetJobRequest { id, include_events } = request.into_inner();
        let (job, events) = self
            .app
            .job(token.as_deref(), &id, include_events)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(job_message(&job, &events)))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let token = bearer(request.metadata()).map(str::to_owned);
        let v1::ListJobsRequest {
            repository,
            status: job_state,
            limit,
        } = request.into_inner();
        // Authenticate before reading the request: an anonymous caller learns nothing of it.
        self.app
            .caller(token.as_deref())
            .await
            .map_err(|e| status(&e))?;
        let state = match v1::JobStatus::try_from(job_state) {
            Ok(v1::JobStatus::Unspecified) => None,
            Ok(v1::JobStatus::Queued) => Some(JobState::Queued),
            Ok(v1::JobStatus::Running) => Some(JobState::Running),
            Ok(v1::JobStatus::Pending) => Some(JobState::Pending),
            Ok(v1::JobStatus::Succeeded) => Some(JobState::Succeeded),
            Ok(v1::JobStatus::Failed) => Some(JobState::Failed),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "status: unknown job status {job_state}"
                )));
            }
        };
        let query = JobsQuery {
            repository: Some(repository),
            state,
            // proto3 has no absent number: 0 asks for the default, as an absent `?limit=` does.
            limit: Some(limit).filter(|l| *l > 0),
        };
        let jobs = self
            .app
            .list_jobs(token.as_deref(), query)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(v1::ListJobsResponse {
            jobs: jobs.iter().map(|job| job_message(job, &[])).collect(),
        }))
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(tug_service::auth::bearer_token)
}

/// The `idempotency-key` metadata entry, which wins over the request's field as the REST
/// `Idempotency-Key` header wins over the body's.
fn idempotency_key(metadata: &MetadataMap) -> Result<Option<String>, Status> {
    metadata
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| Status::invalid_argument("Idempotency-Key is not text"))
        })
        .transpose()
}

fn task_branches(job: &Job) -> HashMap<TaskId, BranchKey> {
    job.tasks.iter().map(|t| (t.id, t.branch.clone())).collect()
}

fn deploy_event(
    update: Update,
    created: bool,
    branches: &HashMap<TaskId, BranchKey>,
) -> Result<v1::DeployEvent, Status> {
    let event = match update {
        Update::Accepted { job_id, created } => {
            v1::deploy_event::Event::Accepted(v1::Accepted { job_id, created })
        }
        Update::Progress(e) => v1::deploy_event::Event::Progress(progress(&e, branches)),
        Update::Broken(message) => return Err(Status::unavailable(message)),
        Update::ShuttingDown => {
            return Err(Status::unavailable(
                "the server is shutting down; the job stays queued and resumes when it is back",
            ));
        }
        Update::Finished(job) => v1::deploy_event::Event::Result(deploy_result(&job, created)),
    };
    Ok(v1::DeployEvent { event: Some(event) })
}

fn deploy_result(job: &Job, created: bool) -> v1::DeployResult {
    let level = if job.state == JobState::Succeeded {
        "INFO"
    } else {
        "ERROR"
    };
    v1::DeployResult {
        job_id: job.id.clone(),
        status: job_status(job.state).into(),
        branches: job.tasks.iter().map(branch_result).collect(),
        created,
        message: format!("[{level}] job {} {}", job.id, job.state.as_str()),
    }
}

fn job_message(job: &Job, events: &[Event]) -> v1::Job {
    let branches = task_branches(job);
    v1::Job {
        id: job.id.clone(),
        idempotency_key: job.idempotency_key.clone().unwrap_or_default(),
        kind: job.kind.clone(),
        requested_by: job.requested_by.clone(),
        status: job_status(job.state).into(),
        created_at: Some(timestamp(job.created_at)),
        updated_at: Some(timestamp(job.updated_at)),
        branches: job.tasks.iter().map(branch_result).collect(),
        events: events.iter().map(|e| progress(e, &branches)).collect(),
    }
}

fn branch_result(task: &Task) -> v1::BranchResult {
    let result = task.result.as_ref();
    let field = |name: &str| {
        result
            .and_then(|r| r.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let outcome = if task.state == TaskState::Failed {
        Some(v1::branch_result::Outcome::Error(
            task.last_error
                .clone()
                .or_else(|| field("error"))
                .unwrap_or_else(|| "failed".to_owned()),
        ))
    } else if let Some(commit) = field("commit") {
        Some(v1::branch_result::Outcome::CommitSha(commit))
    } else if field("status").as_deref() == Some("up_to_date") {
        Some(v1::branch_result::Outcome::UpToDate(true))
    } else {
        None
    };
    let url = field("url").or_else(|| {
        task.payload
            .get("url")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    });
    v1::BranchResult {
        repository: task.branch.repository.clone(),
        url: url.unwrap_or_default(),
        branch: task.branch.branch.clone(),
        status: task_status(task.state).into(),
        attempts: task.attempts,
        last_error: task.last_error.clone().unwrap_or_default(),
        outcome,
        created: result
            .and_then(|r| r.get("created"))
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect(),
    }
}

fn progress(event: &Event, branches: &HashMap<TaskId, BranchKey>) -> v1::Progress {
    let branch = event.task_id.and_then(|id| branches.get(&id));
    v1::Progress {
        level: match event.level {
            Level::Info => v1::Level::Info,
            Level::Warn => v1::Level::Warn,
            Level::Error => v1::Level::Error,
        }
        .into(),
        message: event.message.clone(),
        seq: event.seq,
        at: Some(timestamp(event.at)),
        repository: branch.map(|b| b.repository.clone()).unwrap_or_default(),
        branch: branch.map(|b| b.branch.clone()).unwrap_or_default(),
    }
}

fn task_status(state: TaskState) -> v1::JobStatus {
    match state {
        TaskState::Queued => v1::JobStatus::Queued,
        TaskState::Running => v1::JobStatus::Running,
        TaskState::Pending => v1::JobStatus::Pending,
        TaskState::Succeeded => v1::JobStatus::Succeeded,
        TaskState::Failed => v1::JobStatus::Failed,
    }
}

fn timestamp(at: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.as_second(),
        nanos: at.subsec_nanosecond(),
    }
}
