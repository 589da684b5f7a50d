//! The gRPC API of a real `tug server` process, through real tonic clients over 127.0.0.1:
//! `tug.v1.DeployService`, the standard health service and server reflection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_server;

use support_server::{APPS_TOKEN, CI_TOKEN, DEV_KUSTOMIZATION, DEV_PATH, IMAGE, World};
use tonic::Code;
use tonic::transport::Channel;
use tug_proto::v1;
use tug_proto::v1::deploy_event::Event;
use tug_proto::v1::deploy_service_client::DeployServiceClient;

async fn channel(world: &World) -> Channel {
    Channel::from_shared(format!("http://{}", world.server.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn deploy_client(world: &World) -> DeployServiceClient<Channel> {
    DeployServiceClient::new(channel(world).await)
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// One kustomize image update of `apps/demo/dev` in `repository`'s `main`.
fn image_request(repository: &str, tag: &str) -> v1::DeployRequest {
    v1::DeployRequest {
        commit_spec: Some(v1::CommitSpec {
            message: format!("update image tag to {tag}"),
            project: "shop/demo".into(),
            branch: "main".into(),
            short_sha: "0a1b2c3".into(),
            ..Default::default()
        }),
        deploy_specs: vec![v1::DeploySpec {
            repository: repository.into(),
            updates: vec![v1::BranchUpdate {
                branch: "main".into(),
                paths: vec![v1::PathUpdate {
                    path: DEV_PATH.into(),
                    kustomize: Some(v1::KustomizeEdit {
                        images: vec![v1::KustomizeImage {
                            name: IMAGE.into(),
                            new_tag: tag.into(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Every event of a deploy stream, which must end with a result.
async fn deploy_events(
    client: &mut DeployServiceClient<Channel>,
    request: tonic::Request<v1::DeployRequest>,
) -> Vec<Event> {
    let mut stream = client.deploy(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        events.push(message.event.expect("every DeployEvent carries an event"));
    }
    events
}

fn result_of(events: &[Event]) -> &v1::DeployResult {
    match events.last() {
        Some(Event::Result(result)) => result,
        other => panic!("the stream ended with {other:?}, not a result"),
    }
}

fn commit_of(branch: &v1::BranchResult) -> &str {
    match &branch.outcome {
        Some(v1::branch_result::Outcome::CommitSha(sha)) => sha,
        other => panic!("branch {} has no commit: {other:?}", branch.branch),
    }
}

#[tokio::test]
async fn deploy_streams_progress_then_the_result_with_the_landed_commit() {
    let world = World::start();
    let before = world.gitops.tip("main").unwrap().unwrap();
    let mut client = deploy_client(&world).await;

    let events = deploy_events(
        &mut client,
        with_token(image_request("gitops", "v1.2.3"), Some(CI_TOKEN)),
    )
    .await;

    let Some(Event::Accepted(accepted)) = events.first() else {
        panic!(
            "the stream starts with {:?}, not `accepted`",
            events.first()
        );
    };
    assert!(accepted.created);
    let progress: Vec<&v1::Progress> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(
        progress
            .iter()
            .any(|p| p.message.contains("push") && p.branch == "main" && p.repository == "gitops"),
        "no progress line about the push: {progress:#?}"
    );
    assert!(progress.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(progress.iter().all(|p| p.at.is_some() && p.level != 0));

    let result = result_of(&events);
    assert_eq!(result.job_id, accepted.job_id);
    assert_eq!(result.status(), v1::JobStatus::Succeeded);
    assert!(result.created);
    assert_eq!(result.branches.len(), 1);
    let branch = &result.branches[0];
    assert_eq!(
        (branch.repository.as_str(), branch.branch.as_str()),
        ("gitops", "main")
    );
    assert_eq!(branch.url, world.gitops.file_url());
    let tip = world.gitops.tip("main").unwrap().unwrap();
    assert_ne!(tip, before);
    assert_eq!(commit_of(branch), tip);

    let kustomization = String::from_utf8(
        world
            .gitops
            .read_file(&tip, DEV_KUSTOMIZATION)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(
        kustomization.contains("newTag: \"v1.2.3\"  # release tag"),
        "{kustomization}"
    );
    let log = world.gitops.log("main").unwrap();
    assert_eq!(log[0].subject, "update image tag to v1.2.3");
    for trailer in [
        ("Source-Project", "shop/demo"),
        ("Source-Commit", "0a1b2c3"),
    ] {
        assert!(
            log[0]
                .trailers
                .contains(&(trailer.0.to_owned(), trailer.1.to_owned())),
            "{trailer:?} missing from {:?}",
            log[0].trailers
        );
    }
    assert!(
        log[0]
            .trailers
            .contains(&("Tug-Actor".to_owned(), "ci".to_owned())),
        "{:?}",
        log[0].trailers
    );

    // A deploy over gRPC is audited like one over REST, with its request id.
    let (status, audit) = world
        .server
        .get_json("/api/v1/audit?action=deploy", Some(CI_TOKEN))
        .unwrap();
    assert_eq!(status, 200, "{audit}");
    let records = audit["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{audit:#}");
    let record = &records[0];
    assert_eq!(
        (&record["actor"], &record["result"], &record["repository"]),
        (
            &serde_json::json!("ci"),
            &serde_json::json!("accepted"),
            &serde_json::json!("gitops")
        ),
        "{record}"
    );
    assert!(
        record["message"]
            .as_str()
            .unwrap()
            .contains(&accepted.job_id),
        "{record}"
    );
    assert!(
        record["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_job_and_makes_one_commit() {
    let world = World::start();
    let commits_before = world.gitops.commit_count("main").unwrap();
    let mut client = deploy_client(&world).await;

    // The key in the request field the first time, in metadata the second: both name the job.
    let mut first = image_request("gitops", "v2.0.0");
    first.idempotency_key = "pipeline-77".into();
    let first = deploy_events(&mut client, with_token(first, Some(CI_TOKEN))).await;
    let mut retry = with_token(image_request("gitops", "v2.0.0"), Some(CI_TOKEN));
    retry
        .metadata_mut()
        .insert("idempotency-key", "pipeline-77".parse().unwrap());
    let second = deploy_events(&mut client, retry).await;

    let (first, second) = (result_of(&first), result_of(&second));
    assert_eq!(first.job_id, second.job_id);
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(
        commit_of(&first.branches[0]),
        commit_of(&second.branches[0])
    );
    assert_eq!(
        world.gitops.commit_count("main").unwrap(),
        commits_before + 1
    );

    let job = client
        .get_job(with_token(
            v1::GetJobRequest {
                id: first.job_id.clone(),
                include_events: false,
            },
            Some(CI_TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.idempotency_key, "pipeline-77");
}

/// The message REST answers for the same request, to compare with the gRPC status.
fn rest_refusal(world: &World, body: &serde_json::Value, token: Option<&str>) -> (u16, String) {
    let (status, lines) = world
        .server
        .post_deploy(body.to_string().as_bytes(), token, None)
        .unwrap();
    let message = lines[0]["message"].as_str().unwrap().to_owned();
    (status, message)
}

fn rest_body(repository: &str) -> serde_json::Value {
    serde_json::json!({"deploySpecs": [{"repository": repository, "updates": [{"branch": "main",
        "paths": [{"path": DEV_PATH, "kustomize": {"images": [{"name": IMAGE, "newTag": "v9"}]}}]}]}]})
}

#[tokio::test]
async fn refusals_carry_the_status_and_message_of_the_rest_api() {
    let world = World::start();
    let commits_before = world.gitops.commit_count("main").unwrap();
    let mut client = deploy_client(&world).await;
    let deploy =
        |repository: &str, token: Option<&str>| with_token(image_request(repository, "v9"), token);

    let cases = [
        ("gitops", None, Code::Unauthenticated, 401),
        ("gitops", Some("not-a-token"), Code::Unauthenticated, 401),
        ("gitops", Some(APPS_TOKEN), Code::PermissionDenied, 403),
        ("nowhere", Some(CI_TOKEN), Code::InvalidArgument, 400),
    ];
    for (repository, token, code, http_status) in cases {
        let status = client.deploy(deploy(repository, token)).await.unwrap_err();
        assert_eq!(status.code(), code, "{repository} {token:?}: {status:?}");
        let (rest_status, rest_message) = rest_refusal(&world, &rest_body(repository), token);
        assert_eq!(rest_status, http_status);
        assert_eq!(status.message(), rest_message);
    }

    let unknown = client
        .deploy(deploy("nowhere", Some(CI_TOKEN)))
        .await
        .unwrap_err();
    let message = unknown.message();
    assert!(
        message.contains("deploySpecs[0].repository")
            && message.contains("\"nowhere\"")
            && message.contains("gitops, apps"),
        "{message}"
    );
    let denied = client
        .deploy(deploy("gitops", Some(APPS_TOKEN)))
        .await
        .unwrap_err();
    assert!(denied.message().contains("apps-ci"), "{}", denied.message());

    let invalid = v1::DeployRequest {
        deploy_specs: vec![v1::DeploySpec {
            repository: "gitops".into(),
            updates: vec![v1::BranchUpdate {
                branch: "main".into(),
                paths: vec![v1::PathUpdate {
                    path: "../outside".into(),
                    kustomize: Some(v1::KustomizeEdit {
                        images: vec![v1::KustomizeImage {
                            name: IMAGE.into(),
                            new_tag: "v9".into(),
                            ..Default::default()
                        }],
                    }),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let status = client
        .deploy(with_token(invalid, Some(CI_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("deploySpecs[0].updates[0].paths[0].path"),
        "{status:?}"
    );

    assert_eq!(world.gitops.commit_count("main").unwrap(), commits_before);
}

#[tokio::test]
async fn get_job_and_list_jobs_report_what_deploy_did() {
    let world = World::start();
    let mut client = deploy_client(&world).await;
    let gitops_events = deploy_events(
        &mut client,
        with_token(image_request("gitops", "v3.0.0"), Some(CI_TOKEN)),
    )
    .await;
    let gitops_job = result_of(&gitops_events).job_id.clone();
    let apps_events = deploy_events(
        &mut client,
        with_token(image_request("apps", "v3.0.0"), Some(APPS_TOKEN)),
    )
    .await;
    let apps_job = result_of(&apps_events).job_id.clone();

    let job = client
        .get_job(with_token(
            v1::GetJobRequest {
                id: gitops_job.clone(),
                include_events: true,
            },
            Some(CI_TOKEN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.id, gitops_job);
    assert_eq!(job.kind, "deploy");
    assert_eq!(job.requested_by, "ci");
    assert_eq!(job.status(), v1::JobStatus::Succeeded);
    assert!(job.created_at.is_some() && job.updated_at.is_some());
    assert_eq!(
        commit_of(&job.branches[0]),
        world.gitops.tip("main").unwrap().unwrap()
    );
    assert!(!job.events.is_empty());
    assert!(
        job.events
            .iter()
            .any(|e| e.repository == "gitops" && e.branch == "main")
    );

    let list = |repository: &str, status: v1::JobStatus, limit: u32| {
        with_token(
            v1::ListJobsRequest {
                repository: repository.into(),
                status: status.into(),
                limit,
            },
            Some(CI_TOKEN),
        )
    };
    let ids = |response: v1::ListJobsResponse| -> Vec<String> {
        response.jobs.into_iter().map(|j| j.id).collect()
    };
    let all = client
        .list_jobs(list("", v1::JobStatus::Unspecified, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(all), [apps_job.clone(), gitops_job.clone()]);
    let only_apps = client
        .list_jobs(list("apps", v1::JobStatus::Succeeded, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(only_apps), std::slice::from_ref(&apps_job));
    let none_failed = client
        .list_jobs(list("", v1::JobStatus::Failed, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(none_failed.jobs.is_empty());
    let newest = client
        .list_jobs(list("", v1::JobStatus::Unspecified, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(newest), [apps_job]);

    let too_many = client
        .list_jobs(list("", v1::JobStatus::Unspecified, 1001))
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(too_many.message().starts_with("limit:"), "{too_many:?}");
    let missing = client
        .get_job(with_token(
            v1::GetJobRequest {
                id: "0190a000-0000-7000-8000-000000000000".into(),
                include_events: false,
            },
            Some(CI_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let anonymous = client
        .get_job(with_token(
            v1::GetJobRequest {
                id: gitops_job,
                include_events: false,
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn health_reports_serving_for_the_server_the_deploy_service_and_delivery() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let world = World::start();
    let mut health = HealthClient::new(channel(&world).await);
    // `delivery` is what the Delivery server's health checks ask for.
    for service in ["", tug_proto::DEPLOY_SERVICE_NAME, "delivery"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "tug.v1.NoSuchService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_the_deploy_service_in_v1_and_v1alpha() {
    use tonic_reflection::pb::v1 as reflection;
    use tonic_reflection::pb::v1alpha as reflection_alpha;

    let world = World::start();
    let channel = channel(&world).await;

    let mut v1_client =
        reflection::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let requests = tokio_stream::iter([
        reflection::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                reflection::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        },
        reflection::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                reflection::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "tug.v1.DeployService".into(),
                ),
            ),
        },
    ]);
    let mut responses = v1_client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let listed = responses.message().await.unwrap().unwrap();
    let Some(reflection::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("not a service list: {listed:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "tug.v1.DeployService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    let file = responses.message().await.unwrap().unwrap();
    let Some(reflection::server_reflection_response::MessageResponse::FileDescriptorResponse(
        files,
    )) = file.message_response
    else {
        panic!("not a file descriptor: {file:?}");
    };
    let descriptor = <prost_types::FileDescriptorProto as prost::Message>::decode(
        files.file_descriptor_proto[0].as_slice(),
    )
    .unwrap();
    assert_eq!(descriptor.package(), "tug.v1");

    let mut alpha_client =
        reflection_alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let requests = tokio_stream::iter([reflection_alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection_alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    }]);
    let mut responses = alpha_client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    let listed = responses.message().await.unwrap().unwrap();
    let Some(reflection_alpha::server_reflection_response::MessageResponse::ListServicesResponse(
        list,
    )) = listed.message_response
    else {
        panic!("not a service list: {listed:?}");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == tug_proto::DEPLOY_SERVICE_NAME),
        "{list:?}"
    );
}

#[tokio::test]
async fn a_branch_whose_edit_fails_reports_its_error_in_the_result() {
    let world = World::start();
    let commits_before = world.gitops.commit_count("main").unwrap();
    let mut client = deploy_client(&world).await;
    let mut request = image_request("gitops", "v4.0.0");
    request.deploy_specs[0].updates[0].paths[0].path = "apps/missing".into();

    let events = deploy_events(&mut client, with_token(request, Some(CI_TOKEN))).await;

    let result = result_of(&events);
    assert_eq!(result.status(), v1::JobStatus::Failed);
    assert!(result.message.ends_with("failed"), "{}", result.message);
    let branch = &result.branches[0];
    assert_eq!(branch.status(), v1::JobStatus::Failed);
    let Some(v1::branch_result::Outcome::Error(error)) = &branch.outcome else {
        panic!("no error outcome: {branch:?}");
    };
    assert!(error.contains("apps/missing"), "{error}");
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Progress(p) if p.level() == v1::Level::Error && p.message.contains("apps/missing")
    )));
    assert_eq!(world.gitops.commit_count("main").unwrap(), commits_before);
}

/// A yq key that does not exist: without `strict` the key is added, a WARN progress line and
/// the branch's `created` say so; with `strict` the request fails and nothing is pushed.
#[tokio::test]
async fn strict_refuses_an_edit_that_only_adds_and_without_it_created_reports_it() {
    let world = World::start();
    let mut client = deploy_client(&world).await;
    let typo = |strict: Option<bool>, value: &str| {
        let mut request = image_request("gitops", "v5");
        let path = &mut request.deploy_specs[0].updates[0].paths[0];
        path.kustomize = None;
        path.yq = vec![v1::YqEdit {
            file: "deployment.yaml".into(),
            key: ".spec.replica".into(),
            value: value.into(),
            ..Default::default()
        }];
        request.strict = strict;
        request
    };
    let before = world.gitops.tip("main").unwrap();
    let events = deploy_events(
        &mut client,
        with_token(typo(Some(true), "3"), Some(CI_TOKEN)),
    )
    .await;
    let result = result_of(&events);
    assert_eq!(result.status(), v1::JobStatus::Failed);
    let Some(v1::branch_result::Outcome::Error(error)) = &result.branches[0].outcome else {
        panic!("no error outcome: {result:?}");
    };
    assert!(
        error.contains("refused (strict): the edit would only add key .spec.replica (.spec has no key replica; its keys: template)"),
        "{error}"
    );
    assert_eq!(world.gitops.tip("main").unwrap(), before);

    let events = deploy_events(&mut client, with_token(typo(None, "3"), Some(CI_TOKEN))).await;
    let result = result_of(&events);
    assert_eq!(result.status(), v1::JobStatus::Succeeded);
    assert_eq!(
        result.branches[0].created,
        [
            "deploySpecs[0].updates[0].paths[0].yq[0]: apps/demo/dev/deployment.yaml: key .spec.replica (.spec has no key replica; its keys: template)"
        ]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Progress(p) if p.level() == v1::Level::Warn && p.message.contains("key .spec.replica")
    )));
}

#[tokio::test]
async fn preview_deploy_answers_what_the_rest_dry_run_answers_and_pushes_nothing() {
    let world = World::start();
    let commits_before = world.gitops.commit_count("main").unwrap();
    let mut client = deploy_client(&world).await;
    let preview = client
        .preview_deploy(with_token(image_request("gitops", "v9"), Some(CI_TOKEN)))
        .await
        .unwrap()
        .into_inner();
    assert!(preview.ok, "{preview:?}");
    let branch = &preview.branches[0];
    assert_eq!(
        (branch.repository.as_str(), branch.branch.as_str()),
        ("gitops", "main")
    );
    assert_eq!(branch.status, "would_commit");
    assert_eq!(branch.files[0].path, DEV_KUSTOMIZATION);
    assert!(
        branch.files[0]
            .diff
            .contains("+    newTag: \"v9\"  # release tag"),
        "{branch:?}"
    );

    // The same request as a REST dry run: the same commit message and diff.
    let response = world
        .server
        .post_deploy_to(
            "/api/v1/deploy?dryRun=true",
            &serde_json::to_vec(&tug_spec::DeployRequest::from(image_request(
                "gitops", "v9",
            )))
            .unwrap(),
            Some(CI_TOKEN),
            None,
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let rest = response.json().unwrap();
    let update = &rest["updates"][0];
    assert_eq!(update["commitMessage"], branch.commit_message.as_str());
    assert_eq!(update["files"][0]["diff"], branch.files[0].diff.as_str());

    // Refusals are the deploy's refusals.
    let status = client
        .preview_deploy(with_token(image_request("gitops", "v9"), Some(APPS_TOKEN)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(world.gitops.commit_count("main").unwrap(), commits_before);
}
