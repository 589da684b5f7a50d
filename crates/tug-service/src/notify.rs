//! Notifications after each job: Slack incoming webhooks and signed generic webhooks.
//!
//! A notification never fails a deploy: the change is already in git when it is sent. Each sink
//! is tried up to `max_attempts` times with exponential backoff (network errors, timeouts, 408,
//! 429 and 5xx are retried; other statuses are final), sinks are served concurrently, and
//! [`Notifier::notify`] returns one [`SinkOutcome`] per sink for the caller to log.
//!
//! Webhook URLs are credentials (a Slack webhook's path is its token) and so is the HMAC key:
//! sinks are named in outcomes and errors by kind, index and host only.
//!
//! A generic webhook receives the [`JobNotification`] as JSON with these headers:
//! - `X-Tug-Event: job.finished`;
//! - `X-Tug-Delivery: <uuid>`, the same on every attempt of one delivery, for deduplication;
//! - `X-Tug-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact body bytes keyed with the
//!   sink's `secret` (only when one is configured).

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::json;
use sha2::Sha256;

use crate::config::{NotifyConfig, Secret};

/// `X-Tug-Event` of the notification sent when a job ends.
pub const EVENT_JOB_FINISHED: &str = "job.finished";

/// What a notification says about one finished job; also the JSON body of generic webhooks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobNotification {
    pub job_id: String,
    /// The job's final state: `succeeded` or `failed`.
    pub status: String,
    pub requested_by: String,
    pub finished_at: jiff::Timestamp,
    pub branches: Vec<BranchNotice>,
    /// The request's extra line (`notify.message`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The request's extra facts (`notify.context`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchNotice {
    pub repository: String,
    pub branch: String,
    #[serde(flatten)]
    pub outcome: BranchOutcome,
}

/// Serialised as `"outcome": "committed", "commit": "<sha>"`, `"outcome": "up_to_date"` or
/// `"outcome": "failed", "error": "…"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BranchOutcome {
    Committed { commit: String },
    UpToDate,
    Failed { error: String },
}

/// How hard to try each sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per sink, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; each further wait doubles, up to [`MAX_RETRY_DELAY`].
    pub base_delay: Duration,
    /// Time limit of one attempt.
    pub timeout: Duration,
}

/// The longest wait between two attempts, however many are configured.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

impl RetryPolicy {
    pub fn from_config(config: &NotifyConfig) -> RetryPolicy {
        RetryPolicy {
            max_attempts: config.max_attempts.max(1),
            base_delay: Duration::from_millis(config.base_delay_ms),
            timeout: Duration::from_millis(config.timeout_ms),
        }
    }

    /// The wait before attempt `attempt` (2 for the first retry).
    pub fn delay_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(31);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(MAX_RETRY_DELAY)
    }
}

/// Why a sink did not accept a notification. Never contains the sink's URL or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("the receiver answered HTTP {status}")]
    Status { status: u16 },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the receiver: {0}")]
    Transport(String),
}

impl DeliveryError {
    fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Status { status } => *status == 408 || *status == 429 || *status >= 500,
            DeliveryError::Timeout(_) | DeliveryError::Transport(_) => true,
        }
    }
}

/// How delivering one notification to one sink ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkOutcome {
    /// The sink, named without secrets: `slack[0] (hooks.slack.com)`.
    pub sink: String,
    pub attempts: u32,
    pub result: Result<(), DeliveryError>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client for notifications: {0}")]
pub struct NotifyError(String);

enum SinkKind {
    Slack { webhook_url: Secret },
    Webhook { url: Secret, secret: Option<Secret> },
}

struct Sink {
    label: String,
    kind: SinkKind,
}

/// Sends job notifications to the configured sinks.
pub struct Notifier {
    client: reqwest::Client,
    sinks: Vec<Sink>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sinks: Vec<&str> = self.sinks.iter().map(|s| s.label.as_str()).collect();
        f.debug_struct("Notifier")
            .field("sinks", &sinks)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Notifier {
    pub fn new(config: &NotifyConfig) -> Result<Notifier, NotifyError> {
        Notifier::with_retry(config, RetryPolicy::from_config(config))
    }

    /// Like [`Notifier::new`] with an explicit retry policy.
    pub fn with_retry(config: &NotifyConfig, retry: RetryPolicy) -> Result<Notifier, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(retry.timeout)
            // A redirect would send the signed body somewhere the configuration did not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tug/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| NotifyError(error.without_url().to_string()))?;
        let slack = config.slack.iter().enumerate().map(|(i, sink)| Sink {
            label: format!("slack[{i}] ({})", host_of(sink.webhook_url.expose())),
            kind: SinkKind::Slack {
                webhook_url: sink.webhook_url.clone(),
            },
        });
        let webhooks = config.webhooks.iter().enumerate().map(|(i, sink)| Sink {
            label: format!("webhook[{i}] ({})", host_of(sink.url.expose())),
            kind: SinkKind::Webhook {
                url: sink.url.clone(),
                secret: sink.secret.clone(),
            },
        });
        Ok(Notifier {
            client,
            sinks: slack.chain(webhooks).collect(),
            retry: RetryPolicy {
                max_attempts: retry.max_attempts.max(1),
                ..retry
            },
        })
    }

    /// True when no sink is configured.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Delivers `job` to every sink concurrently and reports how each fared. Never fails: a sink
    /// that cannot be reached yields an outcome with an error.
    pub async fn notify(&self, job: &JobNotification) -> Vec<SinkOutcome> {
        let deliveries = self.sinks.iter().map(|sink| self.deliver(sink, job));
        futures::future::join_all(deliveries).await
    }

    async fn deliver(&self, sink: &Sink, job: &JobNotification) -> SinkOutcome {
        let (url, body, headers) = match &sink.kind {
            SinkKind::Slack { webhook_url } => {
                (webhook_url, slack_message(job).to_string(), Vec::new())
            }
            SinkKind::Webhook { url, secret } => {
                let body = serde_json::to_string(job).unwrap_or_default();
                let mut headers = vec![
                    ("X-Tug-Event", EVENT_JOB_FINISHED.to_owned()),
                    ("X-Tug-Delivery", uuid::Uuid::now_v7().to_string()),
                ];
                if let Some(secret) = secret {
                    headers.push(("X-Tug-Signature", signature(secret, body.as_bytes())));
                }
                (url, body, headers)
            }
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self.post(url, &body, &headers).await;
            let done = match &result {
                Ok(()) => true,
                Err(error) => !error.is_retryable() || attempts >= self.retry.max_attempts,
            };
            if done {
                return SinkOutcome {
                    sink: sink.label.clone(),
                    attempts,
                    result,
                };
            }
            tokio::time::sleep(self.retry.delay_before(attempts + 1)).await;
        }
    }

    async fn post(
        &self,
        url: &Secret,
        body: &str,
        headers: &[(&'static str, String)],
    ) -> Result<(), DeliveryError> {
        let mut request = self
            .client
            .post(url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(DeliveryError::Status {
                status: response.status().as_u16(),
            }),
            Err(error) if error.is_timeout() => Err(DeliveryError::Timeout(self.retry.timeout)),
            // reqwest puts the URL in its messages; it is a secret here.
            Err(error) => Err(DeliveryError::Transport(error_chain(&error.without_url()))),
        }
    }
}

/// The error and its causes, which is where a refused connection says so.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`, the `X-Tug-Signature` value.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    let digest = match <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; this arm cannot run. An empty digest never verifies,
        // so the receiver would reject rather than trust the body.
        Err(_) => String::new(),
    };
    format!("sha256={digest}")
}

/// Checks an `X-Tug-Signature` header against a body in constant time, as a receiver would.
pub fn verify_signature(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// The host (and port) of a URL, for naming a sink without its credentials.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Slack's maximum is 50 blocks; header and context take two.
const MAX_BRANCH_SECTIONS: usize = 46;

/// The Block Kit message for a finished job: a header, one section of fields per branch
/// (repository, branch, commit, status, requested by) and a context line.
pub fn slack_message(job: &JobNotification) -> serde_json::Value {
    let succeeded = job.status == "succeeded";
    let title = if succeeded {
        ":white_check_mark: Deploy succeeded"
    } else {
        ":x: Deploy failed"
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": title, "emoji": true }
    })];
    for branch in job.branches.iter().take(MAX_BRANCH_SECTIONS) {
        let (commit, status) = match &branch.outcome {
            BranchOutcome::Committed { commit } => {
                (format!("`{}`", short_sha(commit)), "committed".to_owned())
            }
            BranchOutcome::UpToDate => ("—".to_owned(), "already up to date".to_owned()),
            BranchOutcome::Failed { error } => {
                ("—".to_owned(), format!("failed: {}", escape_mrkdwn(error)))
            }
        };
        blocks.push(json!({
            "type": "section",
            "fields": [
                field("Repository", &escape_mrkdwn(&branch.repository)),
                field("Branch", &escape_mrkdwn(&branch.branch)),
                field("Commit", &commit),
                field("Status", &status),
                field("Requested by", &escape_mrkdwn(&job.requested_by)),
            ]
        }));
    }
    let mut context = format!("Job `{}`", escape_mrkdwn(&job.job_id));
    let hidden = job.branches.len().saturating_sub(MAX_BRANCH_SECTIONS);
    if hidden > 0 {
        context.push_str(&format!(" · {hidden} more branches not shown"));
    }
    if let Some(message) = &job.message {
        context.push_str(&format!(" · {}", escape_mrkdwn(message)));
    }
    for (key, value) in &job.context {
        context.push_str(&format!(
            " · {}: {}",
            escape_mrkdwn(key),
            escape_mrkdwn(value)
        ));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [ { "type": "mrkdwn", "text": context } ]
    }));
    let summary = if succeeded { "succeeded" } else { "failed" };
    json!({
        "text": format!("tug: deploy {summary} (job {}, requested by {})", job.job_id, job.requested_by),
        "blocks": blocks,
    })
}

fn field(name: &str, value: &str) -> serde_json::Value {
    json!({ "type": "mrkdwn", "text": format!("*{name}*\n{value}") })
}

fn short_sha(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Slack reads `&`, `<` and `>` as markup; everything else is literal.
fn escape_mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests;
