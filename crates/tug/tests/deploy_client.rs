//! `tug deploy` against a real `tug server` (and a real `tug quickstart`) process, as a CI job
//! runs it: the binary, a clean environment, the token in `TUG_TOKEN`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support_server;

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use support_server::{CI_TOKEN, DEV_KUSTOMIZATION, DEV_PATH, IMAGE, World, tug_binary};
use tug_testkit::{Scratch, ServerProcess, TugServer, free_port, http_request};

fn run(world: &World, args: &[&str], env: &[(&str, &str)]) -> Output {
    let server = world.server.http_url();
    let mut full = vec!["deploy", "--server", server.as_str()];
    full.extend_from_slice(args);
    world.tug(&full, env).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn shorthand(tag: &str) -> Vec<String> {
    [
        "--repository",
        "gitops",
        "--branch",
        "main",
        "--path",
        DEV_PATH,
        "--image",
        &format!("{IMAGE}:{tag}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn kustomization_at_tip(world: &World) -> String {
    let tip = world.gitops.tip("main").unwrap().unwrap();
    String::from_utf8(
        world
            .gitops
            .read_file(&tip, DEV_KUSTOMIZATION)
            .unwrap()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn shorthand_deploy_lands_a_commit_with_source_trailers() {
    let world = World::start();
    let mut args = shorthand("v2.0.0");
    args.extend(
        [
            "--project",
            "shop/demo",
            "--source-branch",
            "main",
            "--short-sha",
            "0a1b2c3",
            "-m",
            "built by pipeline 7",
        ]
        .map(str::to_owned),
    );

    let out = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);

    assert!(out.status.success(), "{out:?}");
    let tip = world.gitops.tip("main").unwrap().unwrap();
    assert_eq!(stdout(&out), format!("gitops main {tip}\n"));
    let progress = stderr(&out);
    assert!(progress.contains("[INFO] accepted job"), "{progress}");
    assert!(progress.contains("was successful"), "{progress}");
    assert!(progress.trim_end().ends_with("succeeded"), "{progress}");
    assert!(kustomization_at_tip(&world).contains("newTag: \"v2.0.0\"  # release tag"));

    let commit = &world.gitops.log("main").unwrap()[0];
    assert_eq!(commit.subject, "deploy shop/demo main@0a1b2c3");
    assert!(
        commit.message.contains("\n\nbuilt by pipeline 7\n"),
        "{}",
        commit.message
    );
    assert_eq!(commit.author_name, "ci");
    for (key, value) in [
        ("Source-Project", "shop/demo"),
        ("Source-Branch", "main"),
        ("Source-Commit", "0a1b2c3"),
    ] {
        assert!(
            commit
                .trailers
                .contains(&(key.to_owned(), value.to_owned())),
            "{key}: {value} missing from {:?}",
            commit.trailers
        );
    }
}

#[test]
fn specs_from_a_file_and_from_the_environment() {
    let world = World::start();
    let specs_file = world.client_dir.join("specs.yaml");
    std::fs::write(
        &specs_file,
        format!(
            "# what the pipeline deploys\n- url: {url}\n  updates:\n    - branch: main\n      paths:\n        - path: charts/demo\n          yq:\n            - file: values.yaml\n              key: .image.tag\n              value: v3.1.0\n            - file: values.yaml\n              key: .replicas\n              value: 3\n",
            url = world.gitops.file_url()
        ),
    )
    .unwrap();
    let file = specs_file.display().to_string();

    let out = run(&world, &["--specs-file", &file], &[("TUG_TOKEN", CI_TOKEN)]);
    assert!(out.status.success(), "{out:?}");
    let tip = world.gitops.tip("main").unwrap().unwrap();
    let values = String::from_utf8(
        world
            .gitops
            .read_file(&tip, "charts/demo/values.yaml")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        values,
        "image:\n  repository: registry.example.com/demo/app\n  tag: \"v3.1.0\"\nreplicas: 3\n"
    );

    // The Delivery client's DELIVERY_SPECS becomes TUG_SPECS: JSON text in the environment, and
    // TUG_SERVER instead of --server.
    let specs = serde_json::json!([{"repository": "gitops", "updates": [{"branch": "main",
        "paths": [{"path": DEV_PATH, "kustomize": {"images": [{"name": IMAGE, "newTag": "v3.2.0"}]}}]}]}])
    .to_string();
    let server = world.server.http_url();
    let out = world
        .tug(
            &["deploy"],
            &[
                ("TUG_TOKEN", CI_TOKEN),
                ("TUG_SPECS", &specs),
                ("TUG_SERVER", &server),
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(kustomization_at_tip(&world).contains("newTag: \"v3.2.0\""));
}

#[test]
fn no_wait_prints_a_job_id_the_server_knows() {
    let world = World::start();
    let args = shorthand("v4.0.0");
    let mut with_no_wait = strs(&args);
    with_no_wait.push("--no-wait");

    let out = run(&world, &with_no_wait, &[("TUG_TOKEN", CI_TOKEN)]);

    assert!(out.status.success(), "{out:?}");
    let job_id = stdout(&out).trim().to_owned();
    assert!(
        !job_id.is_empty() && !job_id.contains(char::is_whitespace),
        "{job_id:?}"
    );
    let (status, job) = world
        .server
        .get_json(&format!("/api/v1/jobs/{job_id}"), Some(CI_TOKEN))
        .unwrap();
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["jobId"], job_id.as_str());
    assert_eq!(job["updates"][0]["repository"], "gitops");
}

#[test]
fn a_wrong_token_fails_with_the_servers_401_message() {
    let world = World::start();
    let commits = world.gitops.commit_count("main").unwrap();
    let args = shorthand("v5.0.0");

    let out = run(&world, &strs(&args), &[("TUG_TOKEN", "not-the-token")]);

    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(stdout(&out), "");
    let (status, lines) = world
        .server
        .post_deploy(b"{}", Some("not-the-token"), None)
        .unwrap();
    assert_eq!(status, 401);
    let message = lines[0]["message"].as_str().unwrap();
    let err = stderr(&out);
    assert!(err.contains("401"), "{err}");
    assert!(
        err.contains(&format!("unauthenticated: {message}")),
        "{err}"
    );
    assert_eq!(world.gitops.commit_count("main").unwrap(), commits);

    // The token comes from a file as well; never from a flag value.
    let token_file = world.client_dir.join("token");
    std::fs::write(&token_file, format!("{CI_TOKEN}\n")).unwrap();
    let mut with_file = strs(&args);
    let token_path = token_file.display().to_string();
    with_file.extend(["--token-file", &token_path]);
    let out = run(&world, &with_file, &[]);
    assert!(out.status.success(), "{out:?}");
    let usage = run(&world, &["--token", CI_TOKEN], &[]);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
}

#[test]
fn json_output_is_the_final_result_object() {
    let world = World::start();
    let mut args = shorthand("v6.0.0");
    args.extend(["-o", "json"].map(str::to_owned));

    let out = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);

    assert!(out.status.success(), "{out:?}");
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let tip = world.gitops.tip("main").unwrap().unwrap();
    assert!(result["jobId"].is_string(), "{result}");
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["requestedBy"], "ci");
    let job_id = result["jobId"].as_str().unwrap();
    assert_eq!(
        result["message"],
        format!("[INFO] job {job_id} succeeded").as_str()
    );
    let updates = result["updates"].as_array().unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["repository"], "gitops");
    assert_eq!(updates[0]["branch"], "main");
    assert_eq!(updates[0]["status"], "succeeded");
    assert_eq!(updates[0]["commit"], tip.as_str());
}

#[test]
fn a_failed_job_exits_1_and_names_the_error() {
    let world = World::start();
    let out = run(
        &world,
        &[
            "--repository",
            "gitops",
            "--branch",
            "main",
            "--path",
            "apps/missing",
            "--image",
            &format!("{IMAGE}:v7"),
        ],
        &[("TUG_TOKEN", CI_TOKEN)],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let summary = stdout(&out);
    assert!(summary.starts_with("gitops main failed: "), "{summary}");
    assert!(stderr(&out).contains("[ERROR]"), "{}", stderr(&out));
}

#[test]
fn a_retried_ci_job_deploys_once() {
    let world = World::start();
    let commits = world.gitops.commit_count("main").unwrap();
    let mut args = shorthand("v8.0.0");
    args.extend(["--project", "shop/demo", "--short-sha", "feedbee"].map(str::to_owned));

    let first = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);
    let retry = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);

    assert!(first.status.success(), "{first:?}");
    assert!(retry.status.success(), "{retry:?}");
    assert_eq!(stdout(&first), stdout(&retry));
    assert!(
        stderr(&retry).contains("was already accepted under this Idempotency-Key"),
        "{}",
        stderr(&retry)
    );
    assert_eq!(world.gitops.commit_count("main").unwrap(), commits + 1);
}

#[test]
fn usage_and_transport_errors_exit_2() {
    let scratch = Scratch::new().unwrap();
    // Nothing listens on this port: a usage error must be reported without trying it.
    let server = format!("http://127.0.0.1:{}", free_port().unwrap());
    let out = TugServer::clean_command(tug_binary(), scratch.path(), &[])
        .args([
            "deploy",
            "--server",
            &server,
            "--repository",
            "gitops",
            "--path",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("--branch"), "{}", stderr(&out));

    let out = TugServer::clean_command(tug_binary(), scratch.path(), &[])
        .args(["deploy", "--server", &server, "--specs", "[]"])
        .args(["--timeout", "30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("cannot reach the tug server"),
        "{}",
        stderr(&out)
    );
}

/// `tug quickstart` on ports chosen now; killed with its process group on drop.
struct Quickstart {
    dir: Scratch,
    http_port: u16,
    _process: ServerProcess,
}

impl Quickstart {
    fn start() -> Quickstart {
        const ATTEMPTS: usize = 5;
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let dir = Scratch::new().unwrap();
            let (http_port, grpc_port) = (free_port().unwrap(), free_port().unwrap());
            if http_port == grpc_port {
                continue;
            }
            let mut cmd = TugServer::clean_command(
                tug_binary(),
                dir.path(),
                &[("TUG_LISTEN_GRPC", &format!("127.0.0.1:{grpc_port}"))],
            );
            cmd.arg("quickstart")
                .arg(dir.join("qs"))
                .args(["--http", &format!("127.0.0.1:{http_port}")])
                .current_dir(dir.path());
            let mut process =
                ServerProcess::spawn("tug quickstart", cmd, &dir.join("log")).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(exit) = process.exited() {
                    last = exit;
                    break;
                }
                let health = http_request(
                    ([127, 0, 0, 1], http_port).into(),
                    "GET",
                    "/api/v1/health",
                    &[],
                    b"",
                );
                if health.is_ok_and(|r| r.status == 200 && r.text().contains("SERVING")) {
                    return Quickstart {
                        dir,
                        http_port,
                        _process: process,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "quickstart not healthy in time:\n{}",
                    process.log_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("quickstart did not start: {last}");
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("qs/token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn remote(&self) -> std::path::PathBuf {
        self.dir.join("qs/gitops.git")
    }
}

#[test]
fn the_delivery_curl_body_streams_ndjson_lines_from_the_quickstart() {
    let quickstart = Quickstart::start();
    let token = quickstart.token();
    let url = format!("file://{}", quickstart.remote().display());
    // The body of the Delivery user guide's `curl` example, pointed at the quickstart's repository.
    let body = serde_json::json!({
        "commitSpec": {"CommitMessage": "update image tag to v1.2.3"},
        "deploySpecs": [{"url": url, "updates": [{"branch": "main", "paths": [{
            "path": "apps/demo/dev",
            "kustomize": {"images": [{"name": IMAGE, "newName": IMAGE, "newTag": "v1.2.3"}]}
        }]}]}]
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (content_type, text) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/api/v1/deploy",
                quickstart.http_port
            ))
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        (content_type, response.text().await.unwrap())
    });

    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() >= 3, "{text}");
    for line in &lines {
        let message = line["result"]["message"].as_str();
        assert!(
            message.is_some_and(|m| m.starts_with("[INFO] ")),
            "no .result.message in {line}"
        );
    }
    let last = &lines[lines.len() - 1]["result"];
    assert_eq!(last["status"], "succeeded", "{text}");
    let tip = tug_testkit::run_git(
        None,
        &[
            "--git-dir",
            &quickstart.remote().display().to_string(),
            "rev-parse",
            "main",
        ],
    )
    .unwrap();
    assert_eq!(
        last["updates"][0]["commit"],
        String::from_utf8(tip).unwrap().trim()
    );

    // The quickstart's `tug deploy` suggestion works as printed.
    let out = TugServer::clean_command(
        tug_binary(),
        quickstart.dir.path(),
        &[("TUG_TOKEN", &token)],
    )
    .args([
        "deploy",
        "--server",
        &format!("http://127.0.0.1:{}", quickstart.http_port),
        "--repository",
        "gitops",
        "--branch",
        "main",
        "--path",
        "apps/demo/dev",
        "--image",
        "registry.example.com/demo/app:v1.2.4",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).starts_with("gitops main "), "{}", stdout(&out));
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
fn certificates(dir: &Scratch) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let openssl = tug_testkit::require_binary("openssl", "openssl").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=tug test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    run(&ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A server that accepts the connection (a real TLS server, openssl's, which answers no API
/// request) but never answers: the wait ends at `--timeout` with exit status 2.
#[test]
fn a_server_that_never_answers_ends_the_wait_at_timeout() {
    let certs = Scratch::new().unwrap();
    let (ca, cert, key) = certificates(&certs);
    let openssl = tug_testkit::require_binary("openssl", "openssl").unwrap();
    let port = free_port().unwrap();
    let mut cmd = std::process::Command::new(openssl);
    cmd.args(["s_server", "-quiet", "-www", "-accept"])
        .arg(port.to_string())
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key);
    let mut tls_server = ServerProcess::spawn("openssl s_server", cmd, &certs.join("log")).unwrap();
    tug_testkit::wait_for_port(&mut tls_server, port, Duration::from_secs(15)).unwrap();
    let server = format!("https://127.0.0.1:{port}");
    let deploy = |env: &[(&str, &str)]| {
        TugServer::clean_command(tug_binary(), certs.path(), env)
            .args(["deploy", "--server", &server, "--timeout", "2"])
            .args(strs(&shorthand("v9.0.0")))
            .output()
            .unwrap()
    };

    let ca = ca.display().to_string();
    let out = deploy(&[("TUG_TOKEN", CI_TOKEN), ("TUG_CA_CERT", &ca)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no answer from {server} within 2 s (--timeout)")),
        "{err}"
    );
}

#[test]
fn a_tug_server_over_https_is_trusted_through_ca_cert() {
    let certs = Scratch::new().unwrap();
    let (ca, cert, key) = certificates(&certs);
    let world = World::start_with(&format!(
        "tls:\n  cert_file: \"{}\"\n  key_file: \"{}\"\n",
        cert.display(),
        key.display()
    ));
    assert!(world.server.http_url().starts_with("https://"));
    let args = shorthand("v9.1.0");

    let untrusted = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);
    assert_eq!(untrusted.status.code(), Some(2), "{untrusted:?}");
    assert!(
        stderr(&untrusted).contains("invalid peer certificate"),
        "{}",
        stderr(&untrusted)
    );

    let ca = ca.display().to_string();
    let trusted = run(
        &world,
        &strs(&args),
        &[("TUG_TOKEN", CI_TOKEN), ("TUG_CA_CERT", &ca)],
    );
    assert!(
        trusted.status.success(),
        "{trusted:?}\nserver log:\n{}",
        world.server.logs()
    );
    let tip = world.gitops.tip("main").unwrap().unwrap();
    assert_eq!(stdout(&trusted), format!("gitops main {tip}\n"));
    assert!(kustomization_at_tip(&world).contains("newTag: \"v9.1.0\""));
}

/// An image name that is not in the kustomization: the deploy adds an `images:` entry, says so
/// in a `[WARN]` line and lists it under `created`; with `--strict`, `TUG_STRICT` or the
/// server's `deploy.strict` it is refused, nothing pushed, naming the entries that exist.
#[test]
fn a_deploy_that_only_adds_warns_and_strict_refuses_it() {
    let typo = |tag: &str| {
        [
            "--repository",
            "gitops",
            "--branch",
            "main",
            "--path",
            DEV_PATH,
            "--image",
            &format!("registry.example.com/demo/ap:{tag}"),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let world = World::start();
    let mut args = typo("v1");
    args.extend(["-o", "json"].map(str::to_owned));
    let out = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);
    assert!(out.status.success(), "{out:?}");
    let added = "apps/demo/dev/kustomization.yaml: images entry registry.example.com/demo/ap (the kustomization has: registry.example.com/demo/app)";
    let progress = stderr(&out);
    assert!(
        progress.contains(&format!(
            "[WARN] deploySpecs[0].updates[0].paths[0].kustomize.images[0]: {added}: added, not changed"
        )),
        "{progress}"
    );
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        result["updates"][0]["created"],
        serde_json::json!([format!(
            "deploySpecs[0].updates[0].paths[0].kustomize.images[0]: {added}"
        )]),
        "{result}"
    );
    assert!(kustomization_at_tip(&world).contains("registry.example.com/demo/ap\n"));

    let before = world.gitops.tip("main").unwrap();
    let strict_typo = "the edit would only add images entry registry.example.com/demo/apx (the kustomization has: registry.example.com/demo/app, registry.example.com/demo/ap)";
    for (flag, env) in [
        (Some("--strict"), vec![("TUG_TOKEN", CI_TOKEN)]),
        (None, vec![("TUG_TOKEN", CI_TOKEN), ("TUG_STRICT", "true")]),
    ] {
        let mut args = typo("v2");
        args[7] = "registry.example.com/demo/apx:v2".to_owned();
        args.extend(flag.map(str::to_owned));
        let out = run(&world, &strs(&args), &env);
        assert_eq!(out.status.code(), Some(1), "{flag:?}: {out:?}");
        assert!(stdout(&out).contains(strict_typo), "{flag:?}: {out:?}");
        assert_eq!(world.gitops.tip("main").unwrap(), before, "{flag:?}");
    }
    // An existing entry is changed as usual under strict.
    let mut args = shorthand("v3.0.0");
    args.push("--strict".to_owned());
    let out = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);
    assert!(out.status.success(), "{out:?}");
    assert!(!stderr(&out).contains("[WARN]"), "{out:?}");

    // The server's default.
    let strict_server = World::start_with("deploy: { strict: true }\n");
    let out = run(
        &strict_server,
        &strs(&typo("v1")),
        &[("TUG_TOKEN", CI_TOKEN)],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains(
            "refused (strict): the edit would only add images entry registry.example.com/demo/ap"
        ),
        "{out:?}"
    );
}

#[test]
fn the_delivery_clients_variables_are_read_when_no_tug_variable_is_set() {
    let world = World::start();
    let http = world.server.http_url();
    let (addr, port) = http.trim_start_matches("http://").rsplit_once(':').unwrap();
    let specs = format!(
        r#"[{{"repository":"gitops","updates":[{{"branch":"main","paths":[{{"path":"{DEV_PATH}",
        "kustomize":{{"images":[{{"name":"{IMAGE}","newTag":"v7.0.0"}}]}}}}]}}]}}]"#
    );
    // No --server, no TUG_* variable: only what a Delivery CI job sets.
    let out = world
        .tug(
            &["deploy"],
            &[
                ("TUG_TOKEN", CI_TOKEN),
                ("DELIVERY_SERVER_ADDR", addr),
                ("DELIVERY_SERVER_PORT", port),
                ("DELIVERY_SPECS", &specs),
                ("DELIVERY_COMMIT_PROJECT", "shop/demo"),
                ("DELIVERY_COMMIT_BRANCH", "main"),
                ("DELIVERY_COMMIT_SHORT_SHA", "7a7a7a7"),
                ("DELIVERY_COMMIT_MESSAGE", "from the Delivery client"),
                ("DELIVERY_COMMIT_USER_NAME", "Delivery Bot"),
                ("DELIVERY_COMMIT_USER_EMAIL", "delivery@example.com"),
                ("DELIVERY_TIMEOUT", "60"),
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(kustomization_at_tip(&world).contains("v7.0.0"));
    let tip = world.gitops.tip("main").unwrap().unwrap();
    let log = String::from_utf8(
        world
            .gitops
            .git(&["log", "-1", "--format=%an <%ae>%n%s%n%b", &tip])
            .unwrap(),
    )
    .unwrap();
    assert!(
        log.starts_with("Delivery Bot <delivery@example.com>\ndeploy shop/demo main@7a7a7a7\n"),
        "{log}"
    );
    assert!(log.contains("from the Delivery client"), "{log}");

    // A TUG_* variable wins over its DELIVERY_* fallback.
    let out = world
        .tug(
            &["deploy"],
            &[
                ("TUG_TOKEN", CI_TOKEN),
                ("TUG_SERVER", &http),
                ("DELIVERY_SERVER_ADDR", "127.0.0.1"),
                ("DELIVERY_SERVER_PORT", "1"),
                ("DELIVERY_SPECS", &specs.replace("v7.0.0", "v7.0.1")),
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(kustomization_at_tip(&world).contains("v7.0.1"));

    let out = world
        .tug(
            &["deploy"],
            &[
                ("TUG_TOKEN", CI_TOKEN),
                ("TUG_SERVER", &http),
                ("DELIVERY_SPECS", &specs),
                ("DELIVERY_TIMEOUT", "soon"),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("DELIVERY_TIMEOUT: \"soon\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pointing_deploy_at_the_grpc_port_says_which_port_speaks_rest() {
    let world = World::start();
    let grpc = format!("http://{}", world.server.grpc_addr());
    let commits = world.gitops.commit_count("main").unwrap();
    let out = world
        .tug(&["deploy", "--server", &grpc], &[("TUG_TOKEN", CI_TOKEN)])
        .args(strs(&shorthand("v8.0.0")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("this is tug's gRPC port") && err.contains("REST on the HTTP port, 12011"),
        "{err}"
    );
    assert!(!err.contains("(unknown)"), "{err}");
    assert_eq!(world.gitops.commit_count("main").unwrap(), commits);
    // The release commands share the client, and the message.
    let status = world
        .tug(
            &["status", "--service", "demo", "--server", &grpc],
            &[("TUG_TOKEN", CI_TOKEN)],
        )
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(2), "{status:?}");
    assert!(
        stderr(&status).contains("this is tug's gRPC port"),
        "{}",
        stderr(&status)
    );

    // The Delivery client's old setting, DELIVERY_SERVER_PORT=12010, is its gRPC port too.
    let (addr, port) = world
        .server
        .grpc_addr()
        .to_string()
        .rsplit_once(':')
        .map(|(a, p)| (a.to_owned(), p.to_owned()))
        .unwrap();
    let out = world
        .tug(
            &["deploy"],
            &[
                ("TUG_TOKEN", CI_TOKEN),
                ("DELIVERY_SERVER_ADDR", &addr),
                ("DELIVERY_SERVER_PORT", &port),
            ],
        )
        .args(strs(&shorthand("v8.0.1")))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains("this is tug's gRPC port"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_quickstart_prints_release_calls_that_work_and_keeps_a_checkout_clean() {
    let quickstart = Quickstart::start();
    let printed = std::fs::read_to_string(quickstart.dir.join("log")).unwrap();
    // `tug` is not on the PATH of the test: the calls name this binary by its path.
    let binary = std::fs::canonicalize(tug_binary()).unwrap();
    let binary = binary.display().to_string();
    let calls: Vec<&str> = printed
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.starts_with(&binary)
                && [
                    " artifact ",
                    " release ",
                    " promote ",
                    " rollback ",
                    " status ",
                    " unpin ",
                ]
                .iter()
                .any(|verb| l.contains(verb))
        })
        .collect();
    assert!(calls.len() >= 12, "{printed}");
    assert!(printed.contains(&format!(
        "export TUG_SERVER=http://127.0.0.1:{}",
        quickstart.http_port
    )));
    let work = quickstart.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let token = quickstart.token();
    let server = format!("http://127.0.0.1:{}", quickstart.http_port);
    let mut outputs = String::new();
    for call in &calls {
        let out = TugServer::clean_command(
            std::path::Path::new("bash"),
            quickstart.dir.path(),
            &[("TUG_TOKEN", &token), ("TUG_SERVER", &server)],
        )
        .args(["-c", call])
        .current_dir(&work)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
        assert!(out.status.success(), "{call}: {out:?}");
        outputs.push_str(&stdout(&out));
    }
    assert!(
        outputs.contains("prod demo-1.3.0 rollback succeeded"),
        "{outputs}"
    );
    assert!(
        outputs.contains("Pinned: yes, rolled back to demo-1.3.0"),
        "{outputs}"
    );
    let log = String::from_utf8(
        std::process::Command::new("git")
            .args(["--git-dir"])
            .arg(quickstart.remote())
            .args(["log", "--format=%s"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(log.lines().count() >= 6, "{log}");

    // The quick start's directory ignores itself: run inside a checkout, `git status` stays
    // clean.
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(quickstart.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap()
    };
    assert!(git(&["init", "-q"]).status.success());
    let status = git(&["status", "--porcelain", "--", "qs"]);
    assert!(status.status.success());
    assert_eq!(stdout(&status), "", "qs/ shows up in git status");
}

#[test]
fn a_dry_run_prints_the_diff_and_message_and_changes_nothing() {
    let world = World::start();
    let before = world.gitops.tip("main").unwrap();
    let mut args = shorthand("v5.0.0");
    args.extend(["--message", "roll out v5", "--dry-run"].map(str::to_owned));
    let out = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);
    assert!(out.status.success(), "{out:?}");
    let printed = stdout(&out);
    assert!(
        printed.starts_with("gitops main would commit on "),
        "{printed}"
    );
    assert!(printed.contains("    roll out v5\n"), "{printed}");
    assert!(
        printed.contains(&format!("+++ b/{DEV_KUSTOMIZATION}\n")),
        "{printed}"
    );
    assert!(
        printed.contains(
            "-    newTag: \"1.0.0\"  # release tag\n+    newTag: v5.0.0  # release tag\n"
        ) || printed.contains("+    newTag: \"v5.0.0\"  # release tag\n"),
        "{printed}"
    );
    assert_eq!(world.gitops.tip("main").unwrap(), before, "nothing pushed");

    // JSON, and a deploy that would fail exits 1 with nothing pushed.
    let mut args = shorthand("v5.0.0");
    args[5] = "apps/nosuch/dev".to_owned();
    args.extend(["--dry-run", "-o", "json"].map(str::to_owned));
    let out = run(&world, &strs(&args), &[("TUG_TOKEN", CI_TOKEN)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let preview: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(preview["dryRun"], true, "{preview}");
    assert_eq!(preview["updates"][0]["status"], "failed", "{preview}");
    assert_eq!(world.gitops.tip("main").unwrap(), before, "nothing pushed");
}
