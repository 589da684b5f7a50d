//! REST and gRPC are two adapters over one service: the same input through each gets the same
//! answer — the same refusal (REST `code` ↔ gRPC status code, the same message) or the same
//! result. A real server in process, a real SQLite file and a real bare repository.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DEPLOYMENT, KUSTOMIZATION, THREE_ENVIRONMENTS};
use serde_json::{Value, json};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tug_proto::v1;
use tug_proto::v1::deploy_service_client::DeployServiceClient;
use tug_proto::v1::release_service_client::ReleaseServiceClient;
use tug_testkit::BareRepo;

const TOKEN: &str = "parity-test-token";

fn manifests() -> BareRepo {
    let mut files: Vec<(String, &[u8])> = Vec::new();
    for env in ["dev", "staging", "prod"] {
        files.push((
            format!("apps/api/{env}/kustomization.yaml"),
            KUSTOMIZATION.as_bytes(),
        ));
        files.push((
            format!("apps/api/{env}/deployment.yaml"),
            DEPLOYMENT.as_bytes(),
        ));
    }
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (p.as_str(), *c)).collect();
    BareRepo::with_files(&files).unwrap()
}

fn artifact_json(id: &str) -> String {
    json!({
        "id": id,
        "service": "api",
        "application": {"branch": "master", "sha": format!("{id}-sha"), "authorName": "Dev",
                        "authorEmail": "dev@example.com", "message": "build"},
        "stages": [{"id": "push", "name": "Push",
                    "data": {"image": "registry.example.com/api", "tag": id}}],
    })
    .to_string()
}

struct World {
    _repo: BareRepo,
    running: tug_server::Running,
    http: reqwest::Client,
    _data: tempfile::TempDir,
}

/// What the REST API answered: status and body.
struct Rest {
    status: u16,
    body: Value,
}

impl World {
    async fn start() -> Self {
        let repo = manifests();
        let data = tempfile::tempdir().unwrap();
        let config = common::config(data.path(), &repo.file_url(), TOKEN, THREE_ENVIRONMENTS);
        let running = tug_server::start(config).await.unwrap();
        World {
            _repo: repo,
            running,
            http: reqwest::Client::new(),
            _data: data,
        }
    }

    async fn rest(&self, method: &str, path: &str, body: Option<String>) -> Rest {
        let url = format!("http://{}{path}", self.running.http_addr);
        let mut request = self
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        // A streamed answer (NDJSON) is judged by its status alone.
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Rest { status, body }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.running.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {TOKEN}")).unwrap(),
    );
    request
}

/// The gRPC code each REST refusal code stands for.
fn grpc_code(rest_code: &str) -> Code {
    match rest_code {
        "invalid_argument" => Code::InvalidArgument,
        "not_found" => Code::NotFound,
        "failed_precondition" | "conflict" => Code::FailedPrecondition,
        "policy_violation" | "permission_denied" => Code::PermissionDenied,
        "unauthenticated" => Code::Unauthenticated,
        "unavailable" => Code::Unavailable,
        "resource_exhausted" => Code::ResourceExhausted,
        other => panic!("REST code {other} has no gRPC counterpart in this test"),
    }
}

/// Both transports refused `what` the same way.
fn same_refusal<T: std::fmt::Debug>(what: &str, rest: &Rest, grpc: Result<T, tonic::Status>) {
    let status = grpc.expect_err(what);
    assert!(rest.status >= 400, "{what}: REST accepted: {}", rest.body);
    let code = rest.body["code"].as_str().unwrap_or_default();
    assert_eq!(
        status.code(),
        grpc_code(code),
        "{what}: {status:?} vs {}",
        rest.body
    );
    assert_eq!(
        status.message(),
        rest.body["message"].as_str().unwrap_or_default(),
        "{what}"
    );
}

#[tokio::test]
async fn each_operation_answers_the_same_over_rest_and_grpc() {
    let world = World::start().await;
    let mut releases = ReleaseServiceClient::new(world.channel().await);
    let mut deploys = DeployServiceClient::new(world.channel().await);

    // Artifacts: a malformed artifact.json, then a good one (created, then unchanged).
    let rest = world
        .rest("POST", "/api/v1/artifacts", Some("{\"id\": 1}".into()))
        .await;
    let grpc = releases
        .push_artifact(authed(v1::PushArtifactRequest {
            artifact_json: b"{\"id\": 1}".to_vec(),
        }))
        .await;
    same_refusal("malformed artifact", &rest, grpc);

    let rest = world
        .rest("POST", "/api/v1/artifacts", Some(artifact_json("a-1")))
        .await;
    assert_eq!(rest.status, 201, "{}", rest.body);
    let grpc = releases
        .push_artifact(authed(v1::PushArtifactRequest {
            artifact_json: artifact_json("a-1").into_bytes(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.body["created"], true);
    assert_eq!(
        grpc.registration(),
        v1::ArtifactRegistration::Unchanged,
        "the second push of the same bytes is not new"
    );

    // Artifacts are immutable: the same content written another way is the same artifact; other
    // content under a known id is refused, naming what differs, and nothing is replaced.
    let rewritten: Value = serde_json::from_str(&artifact_json("a-1")).unwrap();
    let rewritten = serde_json::to_string_pretty(&rewritten).unwrap();
    let rest = world
        .rest("POST", "/api/v1/artifacts", Some(rewritten))
        .await;
    assert_eq!(rest.status, 200, "{}", rest.body);
    assert_eq!(rest.body["created"], false);
    let mut other: Value = serde_json::from_str(&artifact_json("a-1")).unwrap();
    other["application"]["sha"] = json!("another-sha");
    other["stages"][0]["data"]["tag"] = json!("other");
    let rest = world
        .rest("POST", "/api/v1/artifacts", Some(other.to_string()))
        .await;
    let grpc = releases
        .push_artifact(authed(v1::PushArtifactRequest {
            artifact_json: other.to_string().into_bytes(),
        }))
        .await;
    same_refusal(
        "an artifact id registered again with other content",
        &rest,
        grpc,
    );
    assert_eq!(rest.status, 409, "{}", rest.body);
    assert_eq!(
        rest.body["details"]["differingFields"],
        json!(["application.sha", "stages"]),
        "{}",
        rest.body
    );
    let stored = world
        .rest("GET", "/api/v1/artifacts/a-1?service=api", None)
        .await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert!(
        stored.body.to_string().contains("a-1-sha"),
        "the first content stays: {}",
        stored.body
    );

    let rest = world
        .rest("GET", "/api/v1/artifacts/nope?service=api", None)
        .await;
    let grpc = releases
        .get_artifact(authed(v1::GetArtifactRequest {
            service: "api".into(),
            id: "nope".into(),
        }))
        .await;
    same_refusal("unknown artifact", &rest, grpc);

    // Releases: unknown service, unknown environment, unknown artifact, nothing to promote.
    let cases = [
        (
            "unknown service",
            json!({"service": "web", "environments": ["dev"], "artifactId": "a-1"}),
            v1::ReleaseRequest {
                service: "web".into(),
                environments: vec!["dev".into()],
                artifact_id: "a-1".into(),
                ..Default::default()
            },
        ),
        (
            "unknown environment",
            json!({"service": "api", "environments": ["qa"], "artifactId": "a-1"}),
            v1::ReleaseRequest {
                service: "api".into(),
                environments: vec!["qa".into()],
                artifact_id: "a-1".into(),
                ..Default::default()
            },
        ),
        (
            "unknown artifact",
            json!({"service": "api", "environments": ["dev"], "artifactId": "zz-9"}),
            v1::ReleaseRequest {
                service: "api".into(),
                environments: vec!["dev".into()],
                artifact_id: "zz-9".into(),
                ..Default::default()
            },
        ),
        (
            "nothing to promote",
            json!({"service": "api", "environments": ["staging"], "intent": "promote"}),
            v1::ReleaseRequest {
                service: "api".into(),
                environments: vec!["staging".into()],
                intent: v1::ReleaseIntent::Promote.into(),
                ..Default::default()
            },
        ),
    ];
    for (what, body, message) in cases {
        let rest = world
            .rest("POST", "/api/v1/releases", Some(body.to_string()))
            .await;
        let grpc = releases.release(authed(message)).await;
        same_refusal(what, &rest, grpc);
    }

    // Status, unpin, policies, describe of a service that does not exist.
    let rest = world.rest("GET", "/api/v1/status/web", None).await;
    let grpc = releases
        .get_status(authed(v1::GetStatusRequest {
            service: "web".into(),
        }))
        .await;
    same_refusal("status of an unknown service", &rest, grpc);

    let rest = world
        .rest(
            "POST",
            "/api/v1/unpin",
            Some(json!({"service": "api", "env": "dev"}).to_string()),
        )
        .await;
    let grpc = releases
        .unpin(authed(v1::UnpinRequest {
            service: "api".into(),
            env: "dev".into(),
            ..Default::default()
        }))
        .await;
    same_refusal("unpin of an unpinned environment", &rest, grpc);

    let rest = world.rest("GET", "/api/v1/policies/web", None).await;
    let grpc = releases
        .list_policies(authed(v1::ListPoliciesRequest {
            service: "web".into(),
        }))
        .await;
    same_refusal("policies of an unknown service", &rest, grpc);

    let rest = world
        .rest(
            "POST",
            "/api/v1/policies/api/auto-release",
            Some(json!({"branch": "master", "env": "qa"}).to_string()),
        )
        .await;
    let grpc = releases
        .apply_auto_release(authed(v1::ApplyAutoReleaseRequest {
            service: "api".into(),
            branch: "master".into(),
            env: "qa".into(),
            ..Default::default()
        }))
        .await;
    same_refusal("auto-release to an unknown environment", &rest, grpc);

    // Jobs and deploys.
    let rest = world.rest("GET", "/api/v1/jobs/no-such-job", None).await;
    let grpc = deploys
        .get_job(authed(v1::GetJobRequest {
            id: "no-such-job".into(),
            include_events: false,
        }))
        .await;
    same_refusal("unknown job", &rest, grpc);

    let rest = world.rest("GET", "/api/v1/jobs?limit=5000", None).await;
    let grpc = deploys
        .list_jobs(authed(v1::ListJobsRequest {
            limit: 5000,
            ..Default::default()
        }))
        .await;
    same_refusal("a listing over the limit", &rest, grpc);

    let request = v1::DeployRequest {
        deploy_specs: vec![v1::DeploySpec {
            repository: "nowhere".into(),
            updates: vec![v1::BranchUpdate {
                branch: "main".into(),
                paths: vec![v1::PathUpdate {
                    path: "apps/api/dev".into(),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let body = serde_json::to_string(&tug_spec::DeployRequest::from(request.clone())).unwrap();
    let rest = world.rest("POST", "/api/v1/deploy", Some(body)).await;
    let grpc = deploys.deploy(authed(request)).await;
    same_refusal("a deploy to an unknown repository", &rest, grpc);

    // A good release answers with the same plan over both.
    let rest = world
        .rest(
            "POST",
            "/api/v1/releases?wait=false",
            Some(
                json!({"service": "api", "environments": ["dev"], "artifactId": "a-1"}).to_string(),
            ),
        )
        .await;
    assert_eq!(rest.status, 202, "{}", rest.body);
    let grpc = releases
        .release(authed(v1::ReleaseRequest {
            service: "api".into(),
            environments: vec!["dev".into()],
            artifact_id: "a-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let queued = &grpc.releases[0];
    assert_eq!(rest.body["releases"][0]["environment"], "dev");
    assert_eq!(queued.environment, "dev");
    assert_eq!(rest.body["releases"][0]["artifactId"], queued.artifact_id);

    world.running.shutdown().await.unwrap();
}
