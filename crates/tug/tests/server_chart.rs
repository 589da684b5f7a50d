//! Chart version bumps through a real `tug server`: over REST (a kustomization's `helmCharts`),
//! over gRPC (a Flux HelmRelease in a multi-document file), and with `tug deploy --chart` (a
//! Chart.yaml dependency). Each lands one commit whose file differs from the original only in the
//! version scalar, and whose `Tug-Change` trailer describes the bump.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_server;

use serde_json::json;
use support_server::{CI_TOKEN, sha256_hex, tug_binary};
use tonic::transport::Channel;
use tug_proto::v1;
use tug_proto::v1::deploy_event::Event;
use tug_proto::v1::deploy_service_client::DeployServiceClient;
use tug_testkit::{BareRepo, Scratch, TugServer};

const KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: web
helmCharts:
  - name: podinfo
    repo: https://stefanprodan.github.io/podinfo
    version: 6.5.0  # bumped by CI
    releaseName: podinfo
";

const RELEASES: &str = "\
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: bitnami
spec:
  url: https://charts.bitnami.com/bitnami
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: cache
spec:
  chart:
    spec:
      chart: redis
      version: \"18.1.0\" # cache
      sourceRef: {kind: HelmRepository, name: bitnami}
";

const CHART: &str = "\
apiVersion: v2
name: shop
version: 1.4.0
dependencies:
  - name: postgresql
    version: 15.2.0
    repository: https://charts.bitnami.com/bitnami
";

struct Fixture {
    server: TugServer,
    repo: BareRepo,
    client_dir: Scratch,
}

fn start() -> Fixture {
    let repo = BareRepo::with_files(&[
        ("apps/web/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
        // A Flux layout: the kustomization lists the releases and pins no chart itself.
        (
            "clusters/dev/kustomization.yaml",
            b"resources:\n  - releases.yaml\n",
        ),
        ("clusters/dev/releases.yaml", RELEASES.as_bytes()),
        ("charts/shop/Chart.yaml", CHART.as_bytes()),
    ])
    .unwrap();
    let config = format!(
        r#"repositories:
  - name: gitops
    url: "{url}"
auth:
  tokens:
    - name: ci
      sha256: "{ci}"
      repositories: ["gitops"]
"#,
        url = repo.file_url(),
        ci = sha256_hex(CI_TOKEN),
    );
    let server = TugServer::start(tug_binary(), &config).unwrap();
    Fixture {
        server,
        repo,
        client_dir: Scratch::new().unwrap(),
    }
}

fn file_at_tip(f: &Fixture, path: &str) -> String {
    let tip = f.repo.tip("main").unwrap().unwrap();
    String::from_utf8(f.repo.read_file(&tip, path).unwrap().unwrap()).unwrap()
}

fn changes_of_tip(f: &Fixture) -> Vec<String> {
    f.repo.log("main").unwrap()[0]
        .trailers
        .iter()
        .filter(|(k, _)| k == "Tug-Change")
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn a_chart_bump_over_rest_lands_with_the_version_quoted() {
    let f = start();
    let body = json!({
        "commitSpec": {"CommitMessage": "bump podinfo"},
        "deploySpecs": [{"repository": "gitops", "updates": [{"branch": "main", "paths": [
            {"path": "apps/web/dev", "chart": [{"name": "podinfo", "version": "6.10"}]}]}]}]
    });
    let (status, lines) = f
        .server
        .post_deploy(body.to_string().as_bytes(), Some(CI_TOKEN), None)
        .unwrap();
    assert_eq!(status, 200, "{lines:?}");
    let result = &lines.last().unwrap()["result"];
    assert_eq!(result["status"], "succeeded", "{lines:?}");
    assert_eq!(
        file_at_tip(&f, "apps/web/dev/kustomization.yaml"),
        KUSTOMIZATION.replace("6.5.0", "\"6.10\"")
    );
    assert_eq!(
        changes_of_tip(&f),
        ["set chart podinfo version 6.10 in apps/web/dev"]
    );

    // No such chart: the job fails naming the field and what the kustomization has; nothing is
    // pushed.
    let tip = f.repo.tip("main").unwrap();
    let body = json!({
        "deploySpecs": [{"repository": "gitops", "updates": [{"branch": "main", "paths": [
            {"path": "apps/web/dev", "chart": [{"name": "podinf", "version": "6.11.0"}]}]}]}]
    });
    let (_, lines) = f
        .server
        .post_deploy(body.to_string().as_bytes(), Some(CI_TOKEN), None)
        .unwrap();
    let result = &lines.last().unwrap()["result"];
    assert_eq!(result["status"], "failed", "{lines:?}");
    let text = result.to_string();
    assert!(
        text.contains("deploySpecs[0].updates[0].paths[0].chart[0]")
            && text.contains("no chart podinf in the kustomization's helmCharts (found podinfo)"),
        "{text}"
    );
    assert_eq!(f.repo.tip("main").unwrap(), tip);

    // A version that is no version is refused before anything is stored.
    let body = json!({
        "deploySpecs": [{"repository": "gitops", "updates": [{"branch": "main", "paths": [
            {"path": "apps/web/dev", "chart": [{"name": "podinfo", "version": ""}]}]}]}]
    });
    let (status, lines) = f
        .server
        .post_deploy(body.to_string().as_bytes(), Some(CI_TOKEN), None)
        .unwrap();
    assert_eq!(status, 400, "{lines:?}");
    assert!(
        lines[0].to_string().contains(
            "deploySpecs[0].updates[0].paths[0].chart[0].version: \\\"\\\" is not a chart version"
        ),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_chart_bump_over_grpc_edits_the_helm_release_the_path_holds() {
    let f = start();
    let channel = Channel::from_shared(format!("http://{}", f.server.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = DeployServiceClient::new(channel);
    let request = v1::DeployRequest {
        deploy_specs: vec![v1::DeploySpec {
            repository: "gitops".into(),
            updates: vec![v1::BranchUpdate {
                branch: "main".into(),
                paths: vec![v1::PathUpdate {
                    path: "clusters/dev".into(),
                    chart: vec![v1::ChartEdit {
                        name: "redis".into(),
                        repository: "bitnami".into(),
                        version: "19.0.1".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {CI_TOKEN}").parse().unwrap(),
    );
    let mut stream = client.deploy(request).await.unwrap().into_inner();
    let mut last = None;
    while let Some(message) = stream.message().await.unwrap() {
        last = message.event;
    }
    let Some(Event::Result(result)) = last else {
        panic!("the stream ended with {last:?}");
    };
    assert_eq!(result.status(), v1::JobStatus::Succeeded, "{result:?}");
    assert_eq!(
        file_at_tip(&f, "clusters/dev/releases.yaml"),
        RELEASES.replace("\"18.1.0\"", "\"19.0.1\"")
    );
    assert_eq!(
        file_at_tip(&f, "clusters/dev/kustomization.yaml"),
        "resources:\n  - releases.yaml\n"
    );
    assert_eq!(
        changes_of_tip(&f),
        ["set chart redis from bitnami version 19.0.1 in clusters/dev"]
    );
}

#[test]
fn tug_deploy_pins_a_chart_dependency_with_the_chart_shorthand() {
    let f = start();
    let server = f.server.http_url();
    let out = TugServer::clean_command(
        tug_binary(),
        f.client_dir.path(),
        &[("TUG_TOKEN", CI_TOKEN)],
    )
    .current_dir(f.client_dir.path())
    .args([
        "deploy",
        "--server",
        &server,
        "--repository",
        "gitops",
        "--branch",
        "main",
        "--path",
        "charts/shop",
        "--chart",
        "postgresql=15.5.1",
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        file_at_tip(&f, "charts/shop/Chart.yaml"),
        CHART.replace("15.2.0", "15.5.1")
    );
    assert_eq!(
        f.repo.log("main").unwrap()[0].subject,
        "deploy(charts/shop): set chart postgresql version 15.5.1"
    );
}
