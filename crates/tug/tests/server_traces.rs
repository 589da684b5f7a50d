//! Traces of a real `tug server` process, received by an OTLP/gRPC collector in the test: the
//! CI's `TRACEPARENT` goes through `tug deploy` to the server's request span; the store, the
//! task and its edit share that trace; the writer's batch links to it and its push is in the
//! batch's trace; spans carry repository and branch; the collector's header arrives but never
//! shows in the log; the last spans are sent at shutdown. A gRPC deploy's `traceparent`
//! metadata is honoured the same way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use support_server::{CI_TOKEN, DEV_PATH, IMAGE, World};
use tug_proto::v1;
use tug_proto::v1::deploy_service_client::DeployServiceClient;

const CI_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CI_SPAN: &str = "00f067aa0ba902b7";
const FAILED_TRACE: &str = "1e2d3c4b5a69788796a5b4c3d2e1f001";
const GRPC_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const GRPC_SPAN: &str = "b7ad6b7169203331";
const COLLECTOR_SECRET: &str = "collector-secret-5f1e";

#[derive(Default)]
struct Received {
    spans: Vec<(String, Span)>,
    authorizations: Vec<String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().unwrap();
        if let Some(value) = request.metadata().get("authorization") {
            received
                .authorizations
                .push(value.to_str().unwrap().to_owned());
        }
        for resource in &request.get_ref().resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    received.spans.push((service.clone(), span.clone()));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The collector on a free loopback port, served by `runtime`.
fn start_collector(runtime: &tokio::runtime::Runtime) -> (Collector, u16) {
    let collector = Collector::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = TraceServiceServer::new(collector.clone());
    runtime.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (collector, port)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn named<'a>(spans: &'a [(String, Span)], name: &str, trace: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == name && hex(&s.trace_id) == trace)
        .collect()
}

fn grpc_request(tag: &str) -> tonic::Request<v1::DeployRequest> {
    let message = v1::DeployRequest {
        commit_spec: Some(v1::CommitSpec {
            message: format!("update image tag to {tag}"),
            ..Default::default()
        }),
        deploy_specs: vec![v1::DeploySpec {
            repository: "gitops".into(),
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
    };
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {CI_TOKEN}").parse().unwrap(),
    );
    metadata.insert(
        "traceparent",
        format!("00-{GRPC_TRACE}-{GRPC_SPAN}-01").parse().unwrap(),
    );
    request
}

#[test]
fn a_deploy_is_traced_from_the_ci_job_through_the_push() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (collector, port) = start_collector(&runtime);
    let mut world = World::start_with(&format!(
        "telemetry:\n  endpoint: \"http://127.0.0.1:{port}\"\n  service_name: tug-test\n  headers:\n    authorization: \"Bearer {COLLECTOR_SECRET}\"\n"
    ));

    // `tug deploy` in a CI job whose own span is CI_SPAN.
    let server = world.server.http_url();
    let out = world
        .tug(
            &[
                "deploy",
                "--server",
                &server,
                "--repository",
                "gitops",
                "--branch",
                "main",
                "--path",
                DEV_PATH,
                "--image",
                &format!("{IMAGE}:v9.9.9"),
            ],
            &[
                ("TUG_TOKEN", CI_TOKEN),
                ("TRACEPARENT", &format!("00-{CI_TRACE}-{CI_SPAN}-01")),
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A deploy whose edit fails: the writer's line about it carries the request's trace id.
    let out = world
        .tug(
            &[
                "deploy",
                "--server",
                &server,
                "--repository",
                "gitops",
                "--branch",
                "main",
                "--path",
                "apps/missing",
                "--image",
                &format!("{IMAGE}:v9.9.9"),
            ],
            &[
                ("TUG_TOKEN", CI_TOKEN),
                ("TRACEPARENT", &format!("00-{FAILED_TRACE}-{CI_SPAN}-01")),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // The same over gRPC, with the trace context in the metadata.
    let grpc = world.server.grpc_addr();
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = DeployServiceClient::new(channel);
        let mut stream = client
            .deploy(grpc_request("v9.9.10"))
            .await
            .unwrap()
            .into_inner();
        while stream.message().await.unwrap().is_some() {}
    });

    // The last spans are sent when the server stops.
    let status = world.server.terminate().unwrap();
    assert!(status.success(), "{status}");
    let log = world.server.logs();

    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = collector.0.lock().unwrap().spans.clone();
        let done = |trace: &str| !named(&spans, "edit", trace).is_empty();
        if done(CI_TRACE) && done(GRPC_TRACE) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the collector never got the edit spans; got {:?}\nlog:\n{log}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(spans.iter().all(|(service, _)| service == "tug-test"));

    for (trace, parent) in [(CI_TRACE, CI_SPAN), (GRPC_TRACE, GRPC_SPAN)] {
        // The request's span is the child of the caller's.
        let requests = named(&spans, "request", trace);
        let request = requests
            .iter()
            .find(|s| {
                attribute(s, "path").is_some_and(|p| p.ends_with("deploy") || p.ends_with("Deploy"))
            })
            .unwrap_or_else(|| panic!("no deploy request span in trace {trace}"));
        assert_eq!(hex(&request.parent_span_id), parent);

        // Stored, then written by the task whose parent is the request.
        let enqueue = named(&spans, "store.enqueue", trace);
        assert_eq!(enqueue.len(), 1, "{trace}");
        assert_eq!(
            attribute(enqueue[0], "repository").as_deref(),
            Some("gitops")
        );
        let tasks = named(&spans, "task", trace);
        assert_eq!(tasks.len(), 1, "{trace}");
        let task = tasks[0];
        assert_eq!(task.parent_span_id, request.span_id, "{trace}");
        assert_eq!(attribute(task, "repository").as_deref(), Some("gitops"));
        assert_eq!(attribute(task, "branch").as_deref(), Some("main"));
        assert_eq!(attribute(task, "attempt").as_deref(), Some("1"));
        let edits = named(&spans, "edit", trace);
        assert!(edits.iter().all(|e| e.parent_span_id == task.span_id));

        // The batch that pushed it links to the request; its push is in the batch's trace.
        let batch = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| {
                s.name == "writer.batch"
                    && s.links
                        .iter()
                        .any(|l| hex(&l.trace_id) == trace && l.span_id == request.span_id)
            })
            .unwrap_or_else(|| panic!("no batch links to the request of trace {trace}"));
        assert_eq!(attribute(batch, "repository").as_deref(), Some("gitops"));
        assert_eq!(attribute(batch, "branch").as_deref(), Some("main"));
        assert!(attribute(batch, "batch_size").is_some());
        let push = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == "git.push" && s.parent_span_id == batch.span_id)
            .expect("the batch's push span");
        assert_eq!(push.trace_id, batch.trace_id);
        assert_eq!(attribute(push, "branch").as_deref(), Some("main"));
        assert_eq!(attribute(push, "attempt").as_deref(), Some("1"));
        assert_eq!(attribute(push, "outcome").as_deref(), Some("accepted"));

        // Log lines carry the trace id.
        assert!(log.contains(&format!("trace_id={trace}")), "{log}");
    }

    let failed = log
        .lines()
        .find(|l| l.contains("job failed"))
        .unwrap_or_else(|| panic!("no failed job logged:\n{log}"));
    assert!(
        failed.contains(&format!("trace_id={FAILED_TRACE}")),
        "{failed}"
    );

    let received = collector.0.lock().unwrap();
    assert!(
        received
            .authorizations
            .iter()
            .all(|a| a == &format!("Bearer {COLLECTOR_SECRET}"))
            && !received.authorizations.is_empty()
    );
    assert!(!log.contains(COLLECTOR_SECRET), "{log}");
}

#[test]
fn without_an_endpoint_nothing_is_exported_and_the_callers_trace_id_is_still_logged() {
    let world = World::start_with("log:\n  format: json\n");
    let server = world.server.http_url();
    let out = world
        .tug(
            &[
                "deploy",
                "--server",
                &server,
                "--repository",
                "gitops",
                "--branch",
                "main",
                "--path",
                DEV_PATH,
                "--image",
                &format!("{IMAGE}:v9.9.11"),
            ],
            &[
                ("TUG_TOKEN", CI_TOKEN),
                ("TRACEPARENT", &format!("00-{CI_TRACE}-{CI_SPAN}-01")),
            ],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without TRACEPARENT, `tug deploy` starts a trace of its own.
    let out = world
        .tug(
            &[
                "deploy",
                "--server",
                &server,
                "--repository",
                "gitops",
                "--branch",
                "main",
                "--path",
                DEV_PATH,
                "--image",
                &format!("{IMAGE}:v9.9.12"),
            ],
            &[("TUG_TOKEN", CI_TOKEN)],
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = world.server.logs();
    let accepted: Vec<&str> = log.lines().filter(|l| l.contains("job accepted")).collect();
    assert_eq!(accepted.len(), 2, "{log}");
    let own = accepted[1];
    assert!(own.contains("\"trace_id\":\""), "{own}");
    assert!(!own.contains(CI_TRACE), "{own}");
    assert!(!log.contains("exporting traces"), "{log}");
    assert!(
        log.contains(&format!("\"trace_id\":\"{CI_TRACE}\"")),
        "{log}"
    );
}
