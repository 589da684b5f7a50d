//! The Helm chart in deploy/helm/tug, rendered with the default values and with an override
//! (ingress, ServiceMonitor, an existing Secret and claim), each checked by `kubectl apply
//! --dry-run=client` and by what a pod needs: labels, ports 12010/12011, the configuration
//! mounted, the Secret referenced, probes on /api/v1/health. With its default values it runs what
//! the single-replica kustomize overlay (deploy/kubernetes-single) runs, the same container the
//! three-replica base runs.
//!
//! Helm is not packaged in Debian; `go_template` renders the chart with the subset of Go
//! templates it uses. kubectl's client-side dry run still asks a cluster which kinds exist: a
//! small discovery server on loopback answers that, and that none of the objects exists yet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod go_template;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use go_template::Chart;
use serde_json::{Value, json};
use tug_testkit::{Scratch, require_binary};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart_dir() -> PathBuf {
    repo_root().join("deploy/helm/tug")
}

/// The resources a cluster with the Prometheus Operator serves, for kubectl's discovery.
const RESOURCES: [(&str, &str, &str); 7] = [
    ("v1", "services", "Service"),
    ("v1", "configmaps", "ConfigMap"),
    ("v1", "secrets", "Secret"),
    ("v1", "persistentvolumeclaims", "PersistentVolumeClaim"),
    ("apps/v1", "deployments", "Deployment"),
    ("networking.k8s.io/v1", "ingresses", "Ingress"),
    (
        "monitoring.coreos.com/v1",
        "servicemonitors",
        "ServiceMonitor",
    ),
];

/// Answers kubectl's discovery requests on 127.0.0.1 and says "not found" to everything else;
/// stopped on drop.
struct DiscoveryServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn discovery_answer(path: &str) -> Option<Value> {
    let path = path.split('?').next().unwrap_or(path);
    let group_versions: Vec<&str> = {
        let mut gv: Vec<&str> = RESOURCES.iter().map(|r| r.0).collect();
        gv.dedup();
        gv
    };
    let resources = |gv: &str| {
        let list: Vec<Value> = RESOURCES
            .iter()
            .filter(|r| r.0 == gv)
            .map(|(_, name, kind)| {
                json!({"name": name, "singularName": "", "namespaced": true, "kind": kind,
                       "verbs": ["create", "get", "list", "patch", "update"]})
            })
            .collect();
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
               "resources": list})
    };
    match path {
        "/api" => Some(json!({"kind": "APIVersions", "versions": ["v1"]})),
        "/apis" => {
            let groups: Vec<Value> = group_versions
                .iter()
                .filter_map(|gv| gv.split_once('/'))
                .map(|(group, version)| {
                    let gv = json!({"groupVersion": format!("{group}/{version}"),
                                    "version": version});
                    json!({"name": group, "versions": [gv], "preferredVersion": gv})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        "/api/v1" => Some(resources("v1")),
        _ => path
            .strip_prefix("/apis/")
            .filter(|gv| group_versions.contains(gv))
            .map(resources),
    }
}

fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // The headers; kubectl's GETs have no body.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match discovery_answer(path) {
        Some(body) => ("200 OK", body),
        None => (
            "404 Not Found",
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "NotFound", "code": 404}),
        ),
    };
    let body = body.to_string();
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

impl DiscoveryServer {
    fn start() -> DiscoveryServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    answer(stream);
                }
            }
        });
        DiscoveryServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DiscoveryServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `kubectl apply --dry-run=client -o json` on `yaml`: the objects as kubectl would send them.
fn dry_run(yaml: &str) -> Vec<Value> {
    let kubectl = require_binary("kubectl", "kubernetes-client").unwrap();
    let scratch = Scratch::new().unwrap();
    let server = DiscoveryServer::start();
    let kubeconfig = scratch.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: test, cluster: {{server: \"http://127.0.0.1:{}\"}}}}]\n\
             contexts: [{{name: test, context: {{cluster: test, namespace: tug}}}}]\n\
             current-context: test\nusers: [{{name: test, user: {{}}}}]\n",
            server.port
        ),
    )
    .unwrap();
    // Validation would need the cluster's OpenAPI schemas, which the discovery server lacks.
    let mut child = Command::new(kubectl)
        .env_remove("KUBECONFIG")
        .env("HOME", scratch.path())
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(scratch.join("cache"))
        .args([
            "apply",
            "--dry-run=client",
            "--validate=false",
            "-o",
            "json",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply --dry-run=client refused:\n{}\n--- input\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    match list["kind"].as_str() {
        Some("List") => list["items"].as_array().unwrap().clone(),
        _ => vec![list],
    }
}

fn render(overrides: &Value) -> Vec<Value> {
    let chart =
        Chart::load(&chart_dir(), "tug", "tug", overrides).unwrap_or_else(|e| panic!("{e}"));
    let yaml = chart.render().unwrap_or_else(|e| panic!("{e}"));
    dry_run(&yaml)
}

fn kustomize_base() -> Vec<Value> {
    let kubectl = require_binary("kubectl", "kubernetes-client").unwrap();
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(repo_root().join("deploy/kubernetes-single"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dry_run(&String::from_utf8(out.stdout).unwrap())
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected: {objects:#?}");
    found[0]
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

/// What every rendering must have, whatever the values: the pod's labels select it, the ports,
/// probes, configuration, data and Secret are wired as tug needs them.
fn check_server(objects: &[Value], secret: &str) {
    let deployment = one(objects, "Deployment");
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");
    let selector = spec["selector"]["matchLabels"].as_object().unwrap();
    let pod_labels = &spec["template"]["metadata"]["labels"];
    for (key, value) in selector {
        assert_eq!(&pod_labels[key], value, "the selector selects the pod");
    }
    assert_eq!(selector["app.kubernetes.io/name"], "tug");
    assert_eq!(selector["app.kubernetes.io/instance"], "tug");
    for object in objects {
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "tug", "{object:#}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{object:#}");
    }

    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/tug-gitops/tug:0.1.0");
    assert_eq!(
        container["args"],
        json!(["server", "--config", "/etc/tug/tug.yaml"])
    );
    assert_eq!(
        container["ports"],
        json!([{"name": "grpc", "containerPort": 12010}, {"name": "http", "containerPort": 12011}])
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"],
            json!({"path": "/api/v1/health", "port": "http"}),
            "{probe}"
        );
    }
    assert_eq!(
        container["envFrom"],
        json!([{"secretRef": {"name": secret}}])
    );
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}: {mounts:#?}"))
    };
    let volume = |name: &Value| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == *name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    // The configuration: the ConfigMap's tug.yaml at /etc/tug/tug.yaml, as the server's
    // --config names it.
    let config = volume(&mount("/etc/tug")["name"]);
    let config_map = one(objects, "ConfigMap");
    assert_eq!(config["configMap"]["name"], config_map["metadata"]["name"]);
    assert_eq!(
        config_map["data"]["tug.yaml"].as_str().unwrap(),
        std::fs::read_to_string(repo_root().join("deploy/kubernetes-single/tug.yaml")).unwrap(),
        "the chart's default configuration is deploy/kubernetes-single/tug.yaml"
    );
    assert!(
        volume(&mount("/var/lib/tug")["name"])
            .get("persistentVolumeClaim")
            .is_some()
    );
    assert!(volume(&mount("/tmp")["name"]).get("emptyDir").is_some());

    let service = one(objects, "Service");
    let ports: Vec<(Value, Value)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].clone(), p["targetPort"].clone()))
        .collect();
    assert_eq!(
        ports,
        [(json!(12011), json!("http")), (json!(12010), json!("grpc"))]
    );
    for (key, value) in selector {
        assert_eq!(&service["spec"]["selector"][key], value);
    }
}

#[test]
fn the_default_chart_runs_the_container_the_kustomize_base_runs() {
    let objects = render(&json!({}));
    assert_eq!(
        kinds(&objects),
        [
            "ConfigMap",
            "Deployment",
            "PersistentVolumeClaim",
            "Secret",
            "Service"
        ]
    );
    check_server(&objects, "tug-secrets");
    let secret = one(&objects, "Secret");
    assert_eq!(secret["metadata"]["name"], "tug-secrets");
    assert!(secret["stringData"]["GIT_TOKEN"].is_string());
    let claim = one(&objects, "PersistentVolumeClaim");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "5Gi");

    // The same container as the kustomize base's, and the same pod around it: only the
    // ConfigMap's name (kustomize appends a hash of its content; the chart rolls the pod with a
    // checksum annotation instead) and the chart's labels differ.
    let base = kustomize_base();
    let chart_deployment = one(&objects, "Deployment");
    let base_deployment = one(&base, "Deployment");
    let chart_pod = &chart_deployment["spec"]["template"]["spec"];
    let base_pod = &base_deployment["spec"]["template"]["spec"];
    let mut chart_container = chart_pod["containers"][0].clone();
    chart_container
        .as_object_mut()
        .unwrap()
        .remove("imagePullPolicy");
    assert_eq!(chart_container, base_pod["containers"][0]);
    for key in ["securityContext", "terminationGracePeriodSeconds"] {
        assert_eq!(chart_pod[key], base_pod[key], "{key}");
    }
    let volumes = |pod: &Value| {
        let mut volumes = pod["volumes"].clone();
        volumes[0]["configMap"]["name"] = json!("tug-config");
        volumes
    };
    assert_eq!(volumes(chart_pod), volumes(base_pod));
    assert_eq!(
        chart_deployment["spec"]["strategy"],
        base_deployment["spec"]["strategy"]
    );
    let annotations = &chart_deployment["spec"]["template"]["metadata"]["annotations"];
    for (key, value) in base_deployment["spec"]["template"]["metadata"]["annotations"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&annotations[key], value, "pod annotation {key}");
    }
    assert!(
        annotations["checksum/config"]
            .as_str()
            .is_some_and(|c| c.len() == 64)
    );
    let base_service = one(&base, "Service");
    assert_eq!(
        one(&objects, "Service")["spec"]["ports"],
        base_service["spec"]["ports"]
    );
}

#[test]
fn the_chart_with_ingress_service_monitor_and_existing_secret_and_claim() {
    let objects = render(&json!({
        "image": {"tag": "0.1.0"},
        "secret": {"existingSecret": "tug-credentials"},
        "persistence": {"existingClaim": "tug-store"},
        "ingress": {"enabled": true, "className": "nginx",
                    "tls": [{"secretName": "tug-tls", "hosts": ["tug.example.com"]}]},
        "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
        "extraVolumes": [{"name": "ssh", "secret": {"secretName": "tug-ssh", "defaultMode": 256}}],
        "extraVolumeMounts": [{"name": "ssh", "mountPath": "/etc/tug/ssh", "readOnly": true}],
    }));
    assert_eq!(
        kinds(&objects),
        [
            "ConfigMap",
            "Deployment",
            "Ingress",
            "Service",
            "ServiceMonitor"
        ],
        "no Secret and no claim: they exist already"
    );
    check_server(&objects, "tug-credentials");
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let data = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap();
    assert_eq!(data["persistentVolumeClaim"]["claimName"], "tug-store");
    assert!(
        pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/tug/ssh")
    );

    let service_name = one(&objects, "Service")["metadata"]["name"].clone();
    let ingress = one(&objects, "Ingress");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "tug-tls");
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "tug.example.com");
    assert_eq!(
        rule["http"]["paths"][0]["backend"]["service"],
        json!({"name": service_name, "port": {"name": "http"}})
    );

    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let service_labels = &one(&objects, "Service")["metadata"]["labels"];
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service_labels[key], value,
            "the ServiceMonitor selects the Service"
        );
    }
}
