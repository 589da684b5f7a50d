//! Notifications after a deploy: a signed generic webhook and a Slack Block Kit message, both
//! received by a recording HTTP server on 127.0.0.1; a sink that answers 500 does not fail the
//! job.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod server_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use server_common::*;
use sha2::Sha256;
use tug_testkit::{GitDaemon, TugServer};

const TOKEN: &str = "tug-notify-token-7a21";
const HOOK_SECRET: &str = "hook-secret-4b9e0c";

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// An HTTP sink on 127.0.0.1 that records every request; `/broken` answers 500, the rest 200.
struct Recorder {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &log);
                });
            }
        });
        Recorder { port, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests_to(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn serve_one(stream: std::net::TcpStream, log: &Mutex<Vec<Received>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let status = if path == "/broken" {
        "500 Internal Server Error"
    } else {
        "200 OK"
    };
    log.lock().unwrap().push(Received {
        path,
        headers,
        body,
    });
    let mut stream = stream;
    stream.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes(),
    )?;
    stream.flush()
}

#[test]
fn a_deploy_sends_a_signed_webhook_and_a_slack_message_and_a_failing_sink_is_harmless() {
    let repo = overlays_repo(&["api"]);
    let daemon = GitDaemon::start(repo.root()).unwrap();
    let url = daemon.url(repo.name());
    let recorder = Recorder::start();
    let config = format!(
        r#"repositories:
  - name: platform
    url: "{url}"
auth:
  tokens:
    - name: ci
      sha256: "{sha}"
      repositories: ["platform"]
notify:
  webhooks:
    - url: "{hook}"
      secret: "${{HOOK_SECRET}}"
    - url: "{broken}"
  slack:
    - webhook_url: "{slack}"
  max_attempts: 2
  base_delay_ms: 10
"#,
        sha = token_sha256(TOKEN),
        hook = recorder.url("/hook"),
        broken = recorder.url("/broken"),
        slack = recorder.url("/slack"),
    );
    let server = TugServer::start_with_env(tug_binary(), &config, &[("HOOK_SECRET", HOOK_SECRET)])
        .expect("start tug server");

    let (status, lines) = server
        .post_deploy(
            &body(&image_deploy(&url, "api", "v5.0.0")),
            Some(TOKEN),
            None,
        )
        .unwrap();
    assert_eq!(status, 200, "{lines:?}");
    let result = &lines.last().unwrap()["result"];
    assert_eq!(result["status"], "succeeded", "{lines:?}");
    let job_id = result["jobId"].as_str().unwrap();
    let commit = result["updates"][0]["commit"].as_str().unwrap();

    let timeout = Duration::from_secs(20);
    let hook = wait_for(timeout, "the webhook", || {
        recorder.requests_to("/hook").pop()
    });
    let payload = hook.json();
    assert_eq!(payload["job_id"], job_id, "{payload}");
    assert_eq!(payload["status"], "succeeded", "{payload}");
    assert_eq!(payload["requested_by"], "ci", "{payload}");
    let branch = &payload["branches"][0];
    assert_eq!(branch["repository"], "platform", "{payload}");
    assert_eq!(branch["branch"], "main", "{payload}");
    assert!(
        hook.body.windows(40).any(|w| w == commit.as_bytes()),
        "{payload}"
    );

    let signature = hook
        .header("X-Tug-Signature")
        .and_then(|s| s.strip_prefix("sha256="))
        .expect("X-Tug-Signature: sha256=…");
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(&hook.body);
    mac.verify_slice(&hex::decode(signature).unwrap())
        .expect("the signature is the HMAC-SHA256 of the body under the configured secret");
    assert!(
        hook.header("content-type")
            .is_some_and(|c| c.contains("json"))
    );

    let slack = wait_for(timeout, "the Slack message", || {
        recorder.requests_to("/slack").pop()
    });
    let message = slack.json();
    let blocks = message["blocks"].as_array().expect("Block Kit blocks");
    assert_eq!(blocks[0]["type"], "header", "{message}");
    assert!(blocks.iter().any(|b| b["type"] == "section"), "{message}");
    assert!(
        message["text"].as_str().unwrap().contains(job_id),
        "{message}"
    );
    assert!(slack.header("X-Tug-Signature").is_none());

    let broken = wait_for(timeout, "both attempts at the broken sink", || {
        let seen = recorder.requests_to("/broken");
        (seen.len() >= 2).then_some(seen)
    });
    assert!(
        broken[0].header("X-Tug-Signature").is_none(),
        "no secret, no signature"
    );

    let job = job(&server, job_id, TOKEN);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(server.get_json("/api/v1/health", None).unwrap().0, 200);
    assert!(!server.logs().contains(HOOK_SECRET));
    drop(server);
    drop(daemon);
}
