use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

use super::*;
use crate::config::{SlackSinkConfig, WebhookSinkConfig};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    received: Mutex<Vec<Received>>,
    /// Statuses to answer with, in order; 200 once exhausted.
    script: Mutex<VecDeque<u16>>,
    /// Never answer (to exercise the per-attempt timeout).
    hang: bool,
}

/// A real HTTP receiver on 127.0.0.1 that records what it gets.
async fn start_receiver(script: &[u16], hang: bool) -> (SocketAddr, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        received: Mutex::new(Vec::new()),
        script: Mutex::new(script.iter().copied().collect()),
        hang,
    });
    async fn record(
        State(receiver): State<Arc<Receiver>>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        receiver.received.lock().unwrap().push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
        });
        if receiver.hang {
            std::future::pending::<()>().await;
        }
        let status = receiver.script.lock().unwrap().pop_front().unwrap_or(200);
        StatusCode::from_u16(status).unwrap()
    }
    let app = Router::new()
        .route("/{*path}", post(record))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, receiver)
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
    }
}

fn slack_sink(url: String) -> NotifyConfig {
    NotifyConfig {
        slack: vec![SlackSinkConfig {
            webhook_url: Secret::new(url),
        }],
        ..NotifyConfig::default()
    }
}

fn webhook_sink(url: String, secret: Option<&str>) -> NotifyConfig {
    NotifyConfig {
        webhooks: vec![WebhookSinkConfig {
            url: Secret::new(url),
            secret: secret.map(Secret::new),
        }],
        ..NotifyConfig::default()
    }
}

fn job() -> JobNotification {
    JobNotification {
        job_id: "0190f1c2-0000-7000-8000-000000000001".into(),
        status: "succeeded".into(),
        requested_by: "ci".into(),
        finished_at: "2025-01-02T03:04:05Z".parse().unwrap(),
        branches: vec![
            BranchNotice {
                repository: "platform".into(),
                branch: "main".into(),
                outcome: BranchOutcome::Committed {
                    commit: "0123456789abcdef0123456789abcdef01234567".into(),
                },
            },
            BranchNotice {
                repository: "apps".into(),
                branch: "dev".into(),
                outcome: BranchOutcome::UpToDate,
            },
        ],
        message: Some("my-app v1.2.3 <pipeline>".into()),
        context: BTreeMap::from([("pipeline".into(), "https://ci.example/p/1".into())]),
    }
}

#[tokio::test]
async fn slack_receives_block_kit_with_header_fields_and_context() {
    let (addr, receiver) = start_receiver(&[], false).await;
    let notifier = Notifier::with_retry(
        &slack_sink(format!("http://{addr}/services/T0/B0/token")),
        fast_retry(3),
    )
    .unwrap();
    let outcomes = notifier.notify(&job()).await;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].result, Ok(()));
    assert_eq!(outcomes[0].attempts, 1);

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/services/T0/B0/token");
    let message: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert!(message["text"].as_str().unwrap().contains("succeeded"));
    let blocks = message["blocks"].as_array().unwrap();
    assert_eq!(
        blocks.len(),
        4,
        "header, two branches, context: {message:#}"
    );
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[1]["type"], "section");
    let fields: Vec<&str> = blocks[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "*Repository*\nplatform",
            "*Branch*\nmain",
            "*Commit*\n`0123456789ab`",
            "*Status*\ncommitted",
            "*Requested by*\nci",
        ]
    );
    assert_eq!(
        blocks[2]["fields"][3]["text"],
        "*Status*\nalready up to date"
    );
    assert_eq!(blocks[3]["type"], "context");
    let context = blocks[3]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.contains("0190f1c2-0000-7000-8000-000000000001"),
        "{context}"
    );
    assert!(
        context.contains("&lt;pipeline&gt;"),
        "markup is escaped: {context}"
    );
    assert!(
        context.contains("pipeline: https://ci.example/p/1"),
        "{context}"
    );
}

#[tokio::test]
async fn webhook_body_is_the_job_and_the_signature_verifies() {
    let (addr, receiver) = start_receiver(&[], false).await;
    let notifier = Notifier::with_retry(
        &webhook_sink(format!("http://{addr}/hook"), Some("hook-key")),
        fast_retry(3),
    )
    .unwrap();
    let outcomes = notifier.notify(&job()).await;
    assert_eq!(outcomes[0].result, Ok(()));

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("x-tug-event"), "job.finished");
    assert_eq!(header("content-type"), "application/json");
    uuid::Uuid::parse_str(&header("x-tug-delivery")).unwrap();

    let signature_header = header("x-tug-signature");
    assert!(verify_signature(
        &Secret::new("hook-key"),
        &request.body,
        &signature_header
    ));
    assert!(!verify_signature(
        &Secret::new("other-key"),
        &request.body,
        &signature_header
    ));
    // Recomputed independently of `signature()`: HMAC-SHA256 over the exact body bytes.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"hook-key").unwrap();
    mac.update(&request.body);
    assert_eq!(
        signature_header,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );

    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["job_id"], "0190f1c2-0000-7000-8000-000000000001");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["branches"][0]["outcome"], "committed");
    assert_eq!(
        body["branches"][0]["commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(body["branches"][1]["outcome"], "up_to_date");
    assert_eq!(body["finished_at"], "2025-01-02T03:04:05Z");
}

#[tokio::test]
async fn webhook_without_secret_is_unsigned() {
    let (addr, receiver) = start_receiver(&[], false).await;
    let notifier = Notifier::with_retry(
        &webhook_sink(format!("http://{addr}/hook"), None),
        fast_retry(1),
    )
    .unwrap();
    assert_eq!(notifier.notify(&job()).await[0].result, Ok(()));
    let received = receiver.received.lock().unwrap().clone();
    assert!(received[0].headers.get("x-tug-signature").is_none());
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_delivery_id_until_accepted() {
    let (addr, receiver) = start_receiver(&[500, 500], false).await;
    let notifier = Notifier::with_retry(
        &webhook_sink(format!("http://{addr}/hook"), Some("k")),
        fast_retry(4),
    )
    .unwrap();
    let outcomes = notifier.notify(&job()).await;
    assert_eq!(outcomes[0].result, Ok(()));
    assert_eq!(outcomes[0].attempts, 3);

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    let ids: Vec<_> = received
        .iter()
        .map(|r| r.headers.get("x-tug-delivery").unwrap().clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[tokio::test]
async fn a_sink_that_always_fails_gives_up_after_the_bounded_attempts() {
    let (addr, receiver) = start_receiver(&[500; 10], false).await;
    let notifier = Notifier::with_retry(
        &slack_sink(format!("http://{addr}/services/T0/B0/SECRETPART")),
        fast_retry(3),
    )
    .unwrap();
    let started = Instant::now();
    let outcomes = notifier.notify(&job()).await;
    let elapsed = started.elapsed();
    assert_eq!(outcomes[0].attempts, 3);
    assert_eq!(
        outcomes[0].result,
        Err(DeliveryError::Status { status: 500 })
    );
    assert_eq!(receiver.received.lock().unwrap().len(), 3);
    // Two waits of 10 and 20 ms plus three local round trips.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let reported = format!("{outcomes:?}");
    assert!(!reported.contains("SECRETPART"), "{reported}");
    assert!(
        reported.contains(&format!("slack[0] ({addr})")),
        "{reported}"
    );
}

#[tokio::test]
async fn client_errors_other_than_429_are_not_retried() {
    let (addr, receiver) = start_receiver(&[404], false).await;
    let notifier = Notifier::with_retry(
        &webhook_sink(format!("http://{addr}/gone"), None),
        fast_retry(4),
    )
    .unwrap();
    let outcomes = notifier.notify(&job()).await;
    assert_eq!(outcomes[0].attempts, 1);
    assert_eq!(
        outcomes[0].result,
        Err(DeliveryError::Status { status: 404 })
    );
    assert_eq!(receiver.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unreachable_sink_fails_without_naming_its_url() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let notifier = Notifier::with_retry(
        &webhook_sink(format!("http://{addr}/hook?token=SECRETPART"), Some("k")),
        fast_retry(2),
    )
    .unwrap();
    let outcomes = notifier.notify(&job()).await;
    assert_eq!(outcomes[0].attempts, 2);
    let Err(DeliveryError::Transport(message)) = &outcomes[0].result else {
        panic!("expected a transport error: {outcomes:?}");
    };
    assert!(!message.contains("SECRETPART"), "{message}");
    assert!(!format!("{outcomes:?}").contains("SECRETPART"));
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out_per_attempt() {
    let (addr, receiver) = start_receiver(&[], true).await;
    let retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(10),
        timeout: Duration::from_millis(200),
    };
    let notifier =
        Notifier::with_retry(&webhook_sink(format!("http://{addr}/slow"), None), retry).unwrap();
    let started = Instant::now();
    let outcomes = notifier.notify(&job()).await;
    assert_eq!(
        outcomes[0].result,
        Err(DeliveryError::Timeout(Duration::from_millis(200)))
    );
    assert_eq!(outcomes[0].attempts, 2);
    assert_eq!(receiver.received.lock().unwrap().len(), 2);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn one_failing_sink_does_not_stop_the_others() {
    let (bad_addr, _) = start_receiver(&[500; 10], false).await;
    let (good_addr, good) = start_receiver(&[], false).await;
    let config = NotifyConfig {
        slack: vec![SlackSinkConfig {
            webhook_url: Secret::new(format!("http://{good_addr}/services/x")),
        }],
        webhooks: vec![WebhookSinkConfig {
            url: Secret::new(format!("http://{bad_addr}/hook")),
            secret: None,
        }],
        ..NotifyConfig::default()
    };
    let notifier = Notifier::with_retry(&config, fast_retry(2)).unwrap();
    let outcomes = notifier.notify(&job()).await;
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].result, Ok(()));
    assert!(outcomes[1].result.is_err());
    assert_eq!(good.received.lock().unwrap().len(), 1);
}

#[test]
fn backoff_doubles_from_the_base_and_is_capped() {
    let retry = RetryPolicy {
        max_attempts: 40,
        base_delay: Duration::from_millis(10),
        timeout: Duration::from_secs(1),
    };
    assert_eq!(retry.delay_before(2), Duration::from_millis(10));
    assert_eq!(retry.delay_before(3), Duration::from_millis(20));
    assert_eq!(retry.delay_before(4), Duration::from_millis(40));
    assert_eq!(retry.delay_before(40), MAX_RETRY_DELAY);
}

#[test]
fn failed_branch_shows_its_error_and_a_failed_header() {
    let mut failed = job();
    failed.status = "failed".into();
    failed.branches[0].outcome = BranchOutcome::Failed {
        error: "path apps/x not found".into(),
    };
    let message = slack_message(&failed);
    assert_eq!(message["blocks"][0]["text"]["text"], ":x: Deploy failed");
    assert_eq!(
        message["blocks"][1]["fields"][3]["text"],
        "*Status*\nfailed: path apps/x not found"
    );
}

#[test]
fn slack_message_stays_within_the_block_limit() {
    let mut many = job();
    many.branches = (0..60)
        .map(|i| BranchNotice {
            repository: "platform".into(),
            branch: format!("env-{i}"),
            outcome: BranchOutcome::UpToDate,
        })
        .collect();
    let message = slack_message(&many);
    let blocks = message["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50, "{}", blocks.len());
    let context = blocks.last().unwrap()["elements"][0]["text"]
        .as_str()
        .unwrap();
    assert!(context.contains("14 more branches not shown"), "{context}");
}

#[test]
fn sink_names_keep_only_the_host() {
    assert_eq!(
        host_of("https://hooks.slack.com/services/T/B/x"),
        "hooks.slack.com"
    );
    assert_eq!(
        host_of("https://user:pw@h.example:8443/p?q=1"),
        "h.example:8443"
    );
}
