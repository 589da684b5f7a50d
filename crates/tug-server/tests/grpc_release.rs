//! `tug.v1.ReleaseService` end to end: a real server (in process) with a real SQLite file and a
//! real bare repository, driven through a tonic client — artifacts, release, promote, rollback,
//! status, history, unpin, rollout reports, policies, reindex, health — and the errors a client
//! gets for bad input, which name the field or policy at fault as the REST API's do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{DEPLOYMENT, KUSTOMIZATION, THREE_ENVIRONMENTS};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tug_proto::v1;
use tug_proto::v1::release_service_client::ReleaseServiceClient;
use tug_server::Config;
use tug_testkit::BareRepo;

const TOKEN: &str = "grpc-release-test-token";

fn config(data_dir: &Path, url: &str) -> Config {
    common::config(data_dir, url, TOKEN, THREE_ENVIRONMENTS)
}

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

/// An `artifact.json` as CI writes it, deliberately laid out by hand: the server must keep these
/// exact bytes.
fn artifact_file(id: &str, branch: &str, tag: &str) -> String {
    format!(
        r#"{{
  "id": "{id}",
  "service": "api",
  "namespace": "payments",
  "application": {{
    "branch": "{branch}", "sha": "{id}-sha",
    "authorName": "Dev Eloper", "authorEmail": "dev@example.com",
    "committerName": "Merge Bot", "committerEmail": "bot@example.com",
    "message": "build {id}", "url": "https://git.example.com/api"
  }},
  "ci": {{ "jobUrl": "https://ci.example.com/{id}" }},
  "stages": [
    {{ "id": "build", "name": "Build", "data": {{ "image": "registry.example.com/api", "tag": "{tag}" }} }},
    {{ "id": "push", "name": "Push", "data": {{ "image": "registry.example.com/api", "tag": "{tag}" }} }}
  ]
}}
"#
    )
}

type TokenFn = fn(Request<()>) -> Result<Request<()>, Status>;
type Client = ReleaseServiceClient<InterceptedService<Channel, TokenFn>>;

fn with_token(mut request: Request<()>) -> Result<Request<()>, Status> {
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {TOKEN}")).unwrap(),
    );
    Ok(request)
}

fn without_token(request: Request<()>) -> Result<Request<()>, Status> {
    Ok(request)
}

struct World {
    repo: BareRepo,
    running: tug_server::Running,
    _data: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let repo = manifests();
        let data = tempfile::tempdir().unwrap();
        let running = tug_server::start(config(data.path(), &repo.file_url()))
            .await
            .unwrap();
        World {
            repo,
            running,
            _data: data,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.running.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(&self) -> Client {
        ReleaseServiceClient::with_interceptor(self.channel().await, with_token as TokenFn)
    }

    async fn anonymous_client(&self) -> Client {
        ReleaseServiceClient::with_interceptor(self.channel().await, without_token as TokenFn)
    }

    fn file(&self, path: &str) -> String {
        String::from_utf8(self.repo.read_file("main", path).unwrap().unwrap()).unwrap()
    }
}

fn alice() -> Option<v1::Person> {
    Some(v1::Person {
        name: "Alice Example".into(),
        email: "alice@example.com".into(),
    })
}

async fn push(client: &mut Client, id: &str, branch: &str, tag: &str) -> v1::PushArtifactResponse {
    client
        .push_artifact(v1::PushArtifactRequest {
            artifact_json: artifact_file(id, branch, tag).into_bytes(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Releases with `wait`, so the answer carries the commit; the job must have succeeded.
async fn release(client: &mut Client, request: v1::ReleaseRequest) -> v1::QueuedRelease {
    let mut answer = client
        .release(v1::ReleaseRequest {
            wait: true,
            requested_by: alice(),
            ..request
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.releases.len(), 1, "{answer:?}");
    let queued = answer.releases.remove(0);
    let outcome = queued.outcome.clone().unwrap();
    assert_eq!(outcome.status(), v1::JobStatus::Succeeded, "{queued:?}");
    assert_eq!(outcome.job_id, queued.job_id);
    queued
}

async fn status(client: &mut Client) -> v1::ServiceStatus {
    client
        .get_status(v1::GetStatusRequest {
            service: "api".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn env<'a>(status: &'a v1::ServiceStatus, name: &str) -> &'a v1::EnvironmentStatus {
    status
        .environments
        .iter()
        .find(|e| e.environment == name)
        .unwrap_or_else(|| panic!("no {name} in {status:?}"))
}

/// Polls the status until `env` runs `artifact` (a deadline, not a sleep).
async fn wait_running(client: &mut Client, name: &str, artifact: &str) -> v1::EnvironmentStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = status(client).await;
        let found = env(&status, name);
        if found.artifact_id == artifact {
            return found.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never ran {artifact}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn intent(kind: v1::ReleaseIntent, from_env: &str, of_artifact: &str) -> Option<v1::Intent> {
    Some(v1::Intent {
        r#type: kind.into(),
        from_env: from_env.into(),
        of_artifact: of_artifact.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_service_takes_artifacts_from_ci_to_environments_and_back() {
    let world = World::start().await;
    let mut client = world.client().await;

    // The artifact file travels as bytes and is stored as CI wrote it.
    let pushed = push(&mut client, "main-1", "main", "1.0.0").await;
    assert_eq!(
        pushed.registration(),
        v1::ArtifactRegistration::Created,
        "{pushed:?}"
    );
    assert!(pushed.auto_releases.is_empty(), "{pushed:?}");
    // Nothing released yet: the status shows what the files name, set outside releases.
    assert_eq!(
        env(&status(&mut client).await, "prod").set_outside_releases,
        Some(v1::DeployedImage {
            image: "registry.example.com/api".into(),
            tag: "0.0.1".into(),
            file: "apps/api/prod/kustomization.yaml".into(),
        })
    );
    let summary = pushed.artifact.unwrap();
    assert_eq!(
        summary.artifact_json,
        artifact_file("main-1", "main", "1.0.0")
    );
    assert_eq!(
        (
            summary.id.as_str(),
            summary.service.as_str(),
            summary.namespace.as_str(),
            summary.branch.as_str(),
            summary.sha.as_str(),
            summary.message.as_str(),
            summary.url.as_str(),
            summary.ci_job_url.as_str(),
        ),
        (
            "main-1",
            "api",
            "payments",
            "main",
            "main-1-sha",
            "build main-1",
            "https://git.example.com/api",
            "https://ci.example.com/main-1",
        )
    );
    assert_eq!(summary.author.unwrap().email, "dev@example.com");
    assert_eq!(summary.committer.unwrap().name, "Merge Bot");
    let stages: Vec<(&str, &str)> = summary
        .images
        .iter()
        .map(|i| (i.stage.as_str(), i.tag.as_str()))
        .collect();
    assert_eq!(stages, [("build", "1.0.0"), ("push", "1.0.0")]);
    assert_eq!(summary.image.unwrap().image, "registry.example.com/api");
    assert!(summary.created_at.is_some());
    // The same bytes again change nothing.
    let again = push(&mut client, "main-1", "main", "1.0.0").await;
    assert_eq!(again.registration(), v1::ArtifactRegistration::Unchanged);

    let got = client
        .get_artifact(v1::GetArtifactRequest {
            service: "api".into(),
            id: "main-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.sha, "main-1-sha");

    // Release main-1 to dev: the answer carries the commit that holds it.
    let released = release(
        &mut client,
        v1::ReleaseRequest {
            service: "api".into(),
            environments: vec!["dev".into()],
            artifact_id: "main-1".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(released.image, "registry.example.com/api:1.0.0");
    assert_eq!(released.intent, intent(v1::ReleaseIntent::Release, "", ""));
    assert_eq!(
        (released.repository.as_str(), released.branch.as_str()),
        ("platform", "main")
    );
    let commit = released.outcome.unwrap().commit_sha;
    assert_eq!(world.repo.tip("main").unwrap().unwrap(), commit);
    assert!(
        world
            .file("apps/api/dev/kustomization.yaml")
            .contains("newTag: 1.0.0")
    );

    // A second build released by branch name, then promoted to staging from dev.
    push(&mut client, "main-2", "main", "1.0.1").await;
    let listed = client
        .list_artifacts(v1::ListArtifactsRequest {
            service: "api".into(),
            branch: "main".into(),
            count: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.artifacts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["main-2"]);
    let released = release(
        &mut client,
        v1::ReleaseRequest {
            service: "api".into(),
            environments: vec!["dev".into()],
            branch: "main".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(released.artifact_id, "main-2");
    let promoted = release(
        &mut client,
        v1::ReleaseRequest {
            service: "api".into(),
            environments: vec!["staging".into()],
            intent: v1::ReleaseIntent::Promote.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(promoted.artifact_id, "main-2");
    assert_eq!(
        promoted.intent,
        intent(v1::ReleaseIntent::Promote, "dev", "")
    );
    assert!(
        world
            .file("apps/api/staging/kustomization.yaml")
            .contains("newTag: 1.0.1")
    );

    // Roll dev back to the artifact before: dev is pinned there.
    let rolled = release(
        &mut client,
        v1::ReleaseRequest {
            service: "api".into(),
            environments: vec!["dev".into()],
            intent: v1::ReleaseIntent::Rollback.into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rolled.artifact_id, "main-1");
    let rollback_commit = rolled.outcome.unwrap().commit_sha;

    // Status: what runs where, who put it there, and which commit did.
    let now = status(&mut client).await;
    let names: Vec<&str> = now
        .environments
        .iter()
        .map(|e| e.environment.as_str())
        .collect();
    assert_eq!(names, ["dev", "staging", "prod"]);
    let dev = env(&now, "dev");
    assert!(dev.released);
    assert_eq!(dev.artifact_id, "main-1");
    assert_eq!(
        dev.intent,
        intent(v1::ReleaseIntent::Rollback, "", "main-2")
    );
    assert_eq!(dev.commit, rollback_commit);
    assert_eq!(dev.released_by.as_ref().unwrap().email, "alice@example.com");
    assert_eq!(dev.path, "apps/api/dev");
    assert_eq!(dev.artifact.as_ref().unwrap().sha, "main-1-sha");
    assert_eq!(dev.pin.as_ref().unwrap().artifact_id, "main-1");
    let staging = env(&now, "staging");
    assert_eq!(staging.artifact_id, "main-2");
    assert_eq!(staging.previous_artifact_id, "");
    assert!(staging.pin.is_none());
    let prod = env(&now, "prod");
    assert!(!prod.released);
    assert_eq!(prod.artifact_id, "");
    assert!(prod.artifact.is_none());

    // The REST API reports the same state: both front ends read one core.
    let rest: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v1/status/api",
            world.running.http_addr
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for e in &now.environments {
        let json = rest["environments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["environment"] == e.environment.as_str())
            .unwrap();
        assert_eq!(json["released"], e.released, "{json}");
        if e.released {
            assert_eq!(json["artifactId"], e.artifact_id.as_str(), "{json}");
            assert_eq!(json["commit"], e.commit.as_str(), "{json}");
        }
    }

    // History of dev, newest first, as git records it.
    let history = client
        .describe_releases(v1::DescribeReleasesRequest {
            service: "api".into(),
            env: "dev".into(),
            count: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let facts: Vec<(&str, i32)> = history
        .releases
        .iter()
        .map(|r| (r.artifact_id.as_str(), r.intent.as_ref().unwrap().r#type))
        .collect();
    assert_eq!(
        facts,
        [
            ("main-1", v1::ReleaseIntent::Rollback as i32),
            ("main-2", v1::ReleaseIntent::Release as i32),
            ("main-1", v1::ReleaseIntent::Release as i32),
        ]
    );
    let newest = &history.releases[0];
    assert_eq!(newest.commit, rollback_commit);
    assert_eq!(newest.request, rolled.job_id);
    assert_eq!(
        newest.artifact.as_ref().unwrap().ci_job_url,
        "https://ci.example.com/main-1"
    );
    let all = client
        .describe_releases(v1::DescribeReleasesRequest {
            service: "api".into(),
            env: String::new(),
            count: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.releases.len(), 2);
    assert_eq!(all.releases[0].environment, "dev");
    assert_eq!(all.releases[1].environment, "staging");

    // Lift the pin; the unpin commit is the branch's new tip.
    let unpinned = client
        .unpin(v1::UnpinRequest {
            service: "api".into(),
            env: "dev".into(),
            requested_by: alice(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unpinned.unpinned_artifact_id, "main-1");
    assert_eq!(unpinned.rolled_back_by.unwrap().email, "alice@example.com");
    // No auto-release policy targets dev here: the answer says that nothing is released.
    let held_back = unpinned.auto_release.unwrap();
    assert_eq!(held_back.status(), v1::AutoReleaseStatus::Skipped);
    assert_eq!(
        held_back.message,
        "no auto-release policy of service 'api' targets 'dev'; nothing is released"
    );
    let outcome = unpinned.outcome.unwrap();
    assert_eq!(outcome.status(), v1::JobStatus::Succeeded);
    assert_eq!(world.repo.tip("main").unwrap().unwrap(), outcome.commit_sha);
    assert!(env(&status(&mut client).await, "dev").pin.is_none());

    // A cluster's rollout report shows in the status.
    let recorded = client
        .report_rollout(v1::ReportRolloutRequest {
            service: "api".into(),
            env: "staging".into(),
            revision: promoted.outcome.unwrap().commit_sha.clone(),
            state: "succeeded".into(),
            message: "healthy".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(recorded.recorded);
    let now = status(&mut client).await;
    let rollout = env(&now, "staging").rollout.clone().unwrap();
    assert_eq!(
        (rollout.state.as_str(), rollout.message.as_str()),
        ("succeeded", "healthy")
    );

    // Rebuilding the index from git alone finds the four releases and the unpin.
    let reindexed = client
        .reindex(v1::ReindexRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reindexed.branches.len(), 1, "{reindexed:?}");
    let branch = &reindexed.branches[0];
    assert_eq!(
        (branch.repository.as_str(), branch.branch.as_str()),
        ("platform", "main")
    );
    assert_eq!((branch.releases, branch.unpins), (4, 1));
    assert_eq!(branch.head, world.repo.tip("main").unwrap().unwrap());
    assert_eq!(env(&status(&mut client).await, "dev").artifact_id, "main-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_service_applies_lists_and_deletes_policies() {
    let world = World::start().await;
    let mut client = world.client().await;

    let applied = client
        .apply_auto_release(v1::ApplyAutoReleaseRequest {
            service: "api".into(),
            branch: "main".into(),
            env: "dev".into(),
            requested_by: alice(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.id, "auto-release-main-dev");
    let outcome = applied.outcome.unwrap();
    assert_eq!(outcome.status(), v1::JobStatus::Succeeded);
    assert_eq!(world.repo.tip("main").unwrap().unwrap(), outcome.commit_sha);
    assert!(
        world
            .file("policies/api.json")
            .contains("auto-release-main-dev")
    );

    let restricted = client
        .apply_branch_restriction(v1::ApplyBranchRestrictionRequest {
            service: "api".into(),
            env: "staging".into(),
            branch_regex: "^(main|release/.*)$".into(),
            requested_by: alice(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restricted.id, "branch-restriction-staging");

    let listed = client
        .list_policies(v1::ListPoliciesRequest {
            service: "api".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let autos: Vec<(&str, &str, &str)> = listed
        .auto_releases
        .iter()
        .map(|p| (p.id.as_str(), p.branch.as_str(), p.environment.as_str()))
        .collect();
    assert_eq!(autos, [("auto-release-main-dev", "main", "dev")]);
    let mut restrictions: Vec<(&str, &str, bool)> = listed
        .branch_restrictions
        .iter()
        .map(|p| (p.id.as_str(), p.branch_regex.as_str(), p.global))
        .collect();
    restrictions.sort_unstable();
    assert_eq!(
        restrictions,
        [
            ("branch-restriction-staging", "^(main|release/.*)$", false),
            ("global-branch-restriction-prod", "^main$", true),
        ]
    );
    assert!(listed.overridden.is_empty());

    // The auto-release policy works: a new artifact of main reaches dev by itself.
    let pushed = push(&mut client, "main-1", "main", "1.0.0").await;
    let autos: Vec<(&str, v1::AutoReleaseStatus)> = pushed
        .auto_releases
        .iter()
        .map(|a| (a.environment.as_str(), a.status()))
        .collect();
    assert_eq!(
        autos,
        [("dev", v1::AutoReleaseStatus::Queued)],
        "{pushed:?}"
    );
    assert!(!pushed.auto_releases[0].job_id.is_empty());
    let dev = wait_running(&mut client, "dev", "main-1").await;
    assert_eq!(dev.intent, intent(v1::ReleaseIntent::AutoRelease, "", ""));

    let deleted = client
        .delete_policies(v1::DeletePoliciesRequest {
            service: "api".into(),
            ids: vec!["auto-release-main-dev".into()],
            requested_by: alice(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    let after = deleted.policies.unwrap();
    assert!(after.auto_releases.is_empty(), "{after:?}");
    assert_eq!(after.branch_restrictions.len(), 2);
    assert!(
        !world
            .file("policies/api.json")
            .contains("auto-release-main-dev")
    );
}

fn assert_refused(result: Result<impl std::fmt::Debug, Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "`{}` should name `{needle}`",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_service_refuses_bad_input_naming_what_is_wrong() {
    let world = World::start().await;
    let mut client = world.client().await;

    // No token, or a wrong one: nothing is read or written.
    let mut anonymous = world.anonymous_client().await;
    assert_refused(
        anonymous
            .get_status(v1::GetStatusRequest {
                service: "api".into(),
            })
            .await,
        Code::Unauthenticated,
        "Bearer",
    );
    assert_refused(
        anonymous
            .push_artifact(v1::PushArtifactRequest {
                artifact_json: artifact_file("main-1", "main", "1.0.0").into_bytes(),
            })
            .await,
        Code::Unauthenticated,
        "Bearer",
    );
    let mut wrong = ReleaseServiceClient::new(world.channel().await);
    let mut request = Request::new(v1::ListPoliciesRequest {
        service: "api".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Bearer not-the-token"),
    );
    assert_refused(
        wrong.list_policies(request).await,
        Code::Unauthenticated,
        "token",
    );

    // Unknown service.
    assert_refused(
        client
            .get_status(v1::GetStatusRequest {
                service: "nope".into(),
            })
            .await,
        Code::NotFound,
        "service 'nope'",
    );
    assert_refused(
        client
            .release(v1::ReleaseRequest {
                service: "nope".into(),
                environments: vec!["dev".into()],
                artifact_id: "main-1".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "service 'nope'",
    );
    assert_refused(
        client
            .push_artifact(v1::PushArtifactRequest {
                artifact_json: artifact_file("main-1", "main", "1.0.0")
                    .replace("\"api\"", "\"nope\"")
                    .into_bytes(),
            })
            .await,
        Code::NotFound,
        "service: service 'nope'",
    );
    // A required field left empty.
    assert_refused(
        client
            .get_status(v1::GetStatusRequest {
                service: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "service: must not be empty",
    );

    // An artifact file that is not one: the message names the JSON path.
    assert_refused(
        client
            .push_artifact(v1::PushArtifactRequest {
                artifact_json: artifact_file("main-1", "main", "1.0.0")
                    .replace("\"tag\": \"1.0.0\"", "\"tag\": \"not a tag\"")
                    .into_bytes(),
            })
            .await,
        Code::InvalidArgument,
        "stages[0].data.tag",
    );
    assert_refused(
        client
            .push_artifact(v1::PushArtifactRequest {
                artifact_json: vec![0xff, 0xfe],
            })
            .await,
        Code::InvalidArgument,
        "artifact_json",
    );

    push(&mut client, "main-1", "main", "1.0.0").await;
    // Unknown environment, named by its position in the request.
    assert_refused(
        client
            .release(v1::ReleaseRequest {
                service: "api".into(),
                environments: vec!["dev".into(), "qa".into()],
                artifact_id: "main-1".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "environments[1]",
    );
    assert_refused(
        client
            .describe_releases(v1::DescribeReleasesRequest {
                service: "api".into(),
                env: "qa".into(),
                count: 0,
            })
            .await,
        Code::InvalidArgument,
        "env: ",
    );
    assert_refused(
        client
            .describe_releases(v1::DescribeReleasesRequest {
                service: "api".into(),
                env: String::new(),
                count: 5000,
            })
            .await,
        Code::InvalidArgument,
        "count",
    );
    // Unknown artifact.
    assert_refused(
        client
            .release(v1::ReleaseRequest {
                service: "api".into(),
                environments: vec!["dev".into()],
                artifact_id: "main-404".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "artifact 'main-404'",
    );
    assert_refused(
        client
            .get_artifact(v1::GetArtifactRequest {
                service: "api".into(),
                id: "main-404".into(),
            })
            .await,
        Code::NotFound,
        "main-404",
    );
    // Intents only tug itself records.
    assert_refused(
        client
            .release(v1::ReleaseRequest {
                service: "api".into(),
                environments: vec!["dev".into()],
                artifact_id: "main-1".into(),
                intent: v1::ReleaseIntent::AutoRelease.into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "intent: RELEASE_INTENT_AUTO_RELEASE",
    );
    // Nothing runs in dev yet, so there is nothing to promote.
    assert_refused(
        client
            .release(v1::ReleaseRequest {
                service: "api".into(),
                environments: vec!["staging".into()],
                intent: v1::ReleaseIntent::Promote.into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        "nothing of service 'api' runs in 'dev'",
    );
    // A branch restriction refuses a feature branch in prod, naming itself.
    push(&mut client, "feature-1", "feature/login", "f.1").await;
    assert_refused(
        client
            .release(v1::ReleaseRequest {
                service: "api".into(),
                environments: vec!["prod".into()],
                artifact_id: "feature-1".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "global-branch-restriction-prod",
    );
    // An invalid regular expression names the policy it would have become.
    assert_refused(
        client
            .apply_branch_restriction(v1::ApplyBranchRestrictionRequest {
                service: "api".into(),
                env: "staging".into(),
                branch_regex: "(unclosed".into(),
                requested_by: None,
            })
            .await,
        Code::InvalidArgument,
        "branch-restriction-staging",
    );
    assert_refused(
        client
            .apply_auto_release(v1::ApplyAutoReleaseRequest {
                service: "api".into(),
                branch: "main".into(),
                env: "qa".into(),
                requested_by: None,
            })
            .await,
        Code::InvalidArgument,
        "env: ",
    );
    assert_refused(
        client
            .delete_policies(v1::DeletePoliciesRequest {
                service: "api".into(),
                ids: vec!["auto-release-main-qa".into()],
                requested_by: None,
            })
            .await,
        Code::NotFound,
        "auto-release-main-qa",
    );
    assert_refused(
        client
            .delete_policies(v1::DeletePoliciesRequest {
                service: "api".into(),
                ids: Vec::new(),
                requested_by: None,
            })
            .await,
        Code::InvalidArgument,
        "ids",
    );
    assert_refused(
        client
            .unpin(v1::UnpinRequest {
                service: "api".into(),
                env: "dev".into(),
                requested_by: None,
            })
            .await,
        Code::FailedPrecondition,
        "not pinned in 'dev'",
    );
    assert_refused(
        client
            .report_rollout(v1::ReportRolloutRequest {
                service: "api".into(),
                env: "dev".into(),
                revision: "abc".into(),
                state: " ".into(),
                message: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "state",
    );
    // None of the refused writes reached the repository.
    assert_eq!(world.repo.commit_count("main").unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reports_the_release_service_as_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let world = World::start().await;
    let mut health = HealthClient::new(world.channel().await);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: tug_proto::RELEASE_SERVICE_NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
}
