//! A server that asks the client to come back later (429 or 503 with `Retry-After`): the real
//! `tug` binary against a scripted HTTP server on loopback, which records when each request
//! arrived and what it carried.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tug_testkit::{Scratch, TugServer};

/// One request as the scripted server read it.
struct Seen {
    at: Instant,
    /// `POST /api/v1/deploy?dryRun=true`
    line: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One scripted answer: status line, extra headers, body.
struct Answer {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn refusal(status: &'static str, retry_after: &str, code: &str) -> Answer {
    Answer {
        status,
        headers: vec![
            ("Retry-After", retry_after.to_owned()),
            ("Content-Type", "application/json".to_owned()),
            ("X-Request-Id", "req-under-load".to_owned()),
        ],
        body: serde_json::json!({"code": code, "message": "busy, come back later", "details": {}})
            .to_string(),
    }
}

fn ok_json(body: &Value) -> Answer {
    Answer {
        status: "200 OK",
        headers: vec![("Content-Type", "application/json".to_owned())],
        body: body.to_string(),
    }
}

/// Serves `answers` in order, the last one for every request after it, and reports each request
/// on the channel before answering it: once `tug` has exited, every request it made is there.
fn scripted_server(answers: Vec<Answer>) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let at = Instant::now();
            let mut headers = Vec::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let answer = &answers[n.min(answers.len() - 1)];
            let seen = Seen {
                at,
                line: line.trim_end().to_owned(),
                headers,
                body,
            };
            if tx.send(seen).is_err() {
                return;
            }
            let mut response = format!(
                "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                answer.status,
                answer.body.len()
            );
            for (name, value) in &answer.headers {
                response.push_str(&format!("{name}: {value}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&answer.body);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, rx)
}

fn tug(home: &Path, args: &[&str]) -> Output {
    TugServer::clean_command(Path::new(env!("CARGO_BIN_EXE_tug")), home, &[])
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const SHORTHAND: [&str; 8] = [
    "--repository",
    "gitops",
    "--branch",
    "main",
    "--path",
    "apps/demo/dev",
    "--image",
    "registry.example.com/demo/app:v2",
];

fn deploy_args<'a>(server: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["deploy", "--server", server];
    args.extend(SHORTHAND);
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_dry_run_waits_out_a_429_and_asks_again() {
    let home = Scratch::new().unwrap();
    let preview = serde_json::json!({"dryRun": true, "status": "succeeded", "updates": []});
    let (server, seen) = scripted_server(vec![
        refusal("429 Too Many Requests", "1", "resource_exhausted"),
        ok_json(&preview),
    ]);

    let out = tug(
        home.path(),
        &deploy_args(&server, &["--dry-run", "-o", "json"]),
    );

    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, preview);
    let requests: Vec<Seen> = seen.try_iter().collect();
    assert_eq!(requests.len(), 2, "{out:?}");
    assert_eq!(requests[0].line, requests[1].line);
    assert!(
        requests[0]
            .line
            .starts_with("POST /api/v1/deploy?dryRun=true "),
        "{}",
        requests[0].line
    );
    assert_eq!(requests[0].body, requests[1].body);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "asked again after {waited:?}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "tug: {server} answered 429 Too Many Requests: resource_exhausted: busy, come back \
             later; retrying in 1 s as its Retry-After asks (attempt 2 of 5)"
        )),
        "{err}"
    );
}

/// The server stores one job per Idempotency-Key, so a deploy carrying one is sent again with
/// the same key; the progress stream of the second answer is followed to its end.
#[test]
fn a_deploy_with_an_idempotency_key_waits_out_a_503_and_follows_the_job() {
    let home = Scratch::new().unwrap();
    let stream = [
        serde_json::json!({"result": {"message": "[INFO] accepted job j1"}}),
        serde_json::json!({"result": {"jobId": "j1", "status": "succeeded",
            "message": "[INFO] job j1 succeeded",
            "updates": [{"repository": "gitops", "branch": "main", "status": "succeeded",
                         "commit": "c0ffee"}]}}),
    ]
    .map(|l| format!("{l}\n"))
    .concat();
    let (server, seen) = scripted_server(vec![
        refusal("503 Service Unavailable", "1", "unavailable"),
        Answer {
            status: "200 OK",
            headers: vec![
                ("Content-Type", "application/x-ndjson".to_owned()),
                ("X-Tug-Job-Id", "j1".to_owned()),
            ],
            body: stream,
        },
    ]);

    let out = tug(
        home.path(),
        &deploy_args(&server, &["--idempotency-key", "ci-run-7"]),
    );

    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "gitops main c0ffee\n");
    let requests: Vec<Seen> = seen.try_iter().collect();
    assert_eq!(requests.len(), 2, "{out:?}");
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), Some("ci-run-7"));
    }
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "answered 503 Service Unavailable: unavailable: busy, come back later; retrying in 1 s"
        ),
        "{err}"
    );
    assert!(err.contains("[INFO] job j1 succeeded"), "{err}");
}

/// Without a key the server cannot tell a repeated deploy from a new one: the client reports
/// the server's request to retry instead of sending the deploy twice.
#[test]
fn a_deploy_without_an_idempotency_key_is_not_sent_twice() {
    let home = Scratch::new().unwrap();
    let (server, seen) =
        scripted_server(vec![refusal("503 Service Unavailable", "1", "unavailable")]);

    let out = tug(home.path(), &deploy_args(&server, &["-o", "json"]));

    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(seen.try_iter().count(), 1);
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["code"], "unavailable", "{error}");
    assert_eq!(
        error["error"]["message"],
        "the server refused the request (503 Service Unavailable): unavailable: busy, come back \
         later (the server asked to retry after 1 s; this request is not repeated \
         automatically, since the server may have carried it out) (request id req-under-load)"
    );
}

/// A GET of a release command, with `Retry-After` as an HTTP date.
#[test]
fn status_waits_until_the_date_retry_after_names() {
    let home = Scratch::new().unwrap();
    let status = serde_json::json!({"service": "api", "environments": []});
    // Two seconds ahead: at least one whole second is left when the client reads it.
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&at)
        .unwrap();
    let (server, seen) = scripted_server(vec![
        refusal("503 Service Unavailable", &date, "unavailable"),
        ok_json(&status),
    ]);

    let out = tug(
        home.path(),
        &[
            "status",
            "--service",
            "api",
            "--server",
            &server,
            "-o",
            "json",
        ],
    );

    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, status);
    let requests: Vec<Seen> = seen.try_iter().collect();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].line.starts_with("GET /api/v1/status/api "));
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1));
    assert!(stderr(&out).contains("as its Retry-After asks"), "{out:?}");
}

#[test]
fn a_server_that_keeps_asking_is_given_up_after_five_attempts() {
    let home = Scratch::new().unwrap();
    let (server, seen) = scripted_server(vec![refusal(
        "429 Too Many Requests",
        "0",
        "resource_exhausted",
    )]);

    let out = tug(
        home.path(),
        &["status", "--service", "api", "--server", &server],
    );

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(seen.try_iter().count(), 5);
    let err = stderr(&out);
    assert_eq!(err.matches("retrying in 0 s").count(), 4, "{err}");
    assert!(
        err.contains("(the server asked to retry after 0 s; gave up after 5 attempts)"),
        "{err}"
    );
}

#[test]
fn a_wait_past_the_timeout_is_not_started() {
    let home = Scratch::new().unwrap();
    let (server, seen) = scripted_server(vec![refusal(
        "503 Service Unavailable",
        "3600",
        "unavailable",
    )]);
    let started = Instant::now();

    let out = tug(
        home.path(),
        &deploy_args(&server, &["--dry-run", "--timeout", "60"]),
    );

    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(60), "{out:?}");
    assert_eq!(seen.try_iter().count(), 1);
    let err = stderr(&out);
    assert!(
        err.contains("(the server asked to retry after 3600 s, which is past the --timeout)"),
        "{err}"
    );
}
