//! Telling people and tools that a release landed: a Slack message in the environment's channel,
//! a GitHub commit status on the artifact's source commit (`tug/<env>`) and a Grafana
//! annotation.
//!
//! A task listens to the writers' job signal (the moment a job's outcome is stored) and, for each
//! finished release job, delivers to every configured sink concurrently, off the writer's path.
//! Like job notifications, a failing sink never fails a release: it is retried with
//! `notify.max_attempts` / `notify.base_delay_ms` / `notify.timeout_ms` and then logged. Only the
//! replica whose writer landed the release sends, once per job.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;
use tug_release::Artifact;
use tug_store::{Job, JobState};

use super::Ctx;
use crate::config::Secret;
use crate::config::release_notify::{GithubStatusConfig, GrafanaConfig, ReleaseNotifyConfig};
use crate::notify::{DeliveryError, RetryPolicy};

/// What one finished release job tells the sinks.
#[derive(Debug, Clone)]
pub(crate) struct LandedRelease {
    pub job_id: String,
    pub succeeded: bool,
    pub service: String,
    pub environment: String,
    pub artifact_id: String,
    pub intent: String,
    pub released_by: String,
    pub image: Option<String>,
    /// The manifest commit, when one was made.
    pub commit: Option<String>,
    pub error: Option<String>,
    pub artifact: Option<Artifact>,
}

/// Starts the listener when a sink is configured (and a runtime runs).
pub(crate) fn spawn(ctx: Arc<Ctx>) {
    if ctx.app.config.release_notify.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let retry = RetryPolicy::from_config(&ctx.app.config.notify);
    let client = match reqwest::Client::builder()
        .timeout(retry.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tug/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e.without_url(), "release notifications are off: no HTTP client");
            return;
        }
    };
    let sender = Arc::new(Sender { client, retry });
    let mut signal = ctx.app.signal.subscribe_all();
    let mut shutdown = ctx.app.shutdown.clone();
    runtime.spawn(async move {
        let mut sent: HashSet<String> = HashSet::new();
        loop {
            let job_id = tokio::select! {
                () = shutdown.wait() => return,
                r = signal.recv() => match r {
                    Ok(id) => id,
                    Err(RecvError::Lagged(n)) => {
                        warn!(missed = n, "release notifications fell behind; some were not sent");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            if sent.contains(&job_id) {
                continue;
            }
            let Ok(Some(job)) = ctx.app.store.job(&job_id).await else {
                continue;
            };
            if job.kind != "release" || !job.state.is_terminal() {
                continue;
            }
            // Every replica hears of the job's end; one announces it.
            match ctx.app.store.claim_notification(&job_id, "release").await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(job = %job_id, error = %e, "cannot claim the release announcement");
                    continue;
                }
            }
            if sent.len() > 10_000 {
                sent.clear();
            }
            sent.insert(job_id);
            let landed = landed(&ctx, &job).await;
            let config = ctx.app.config.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                sender.deliver(&config.release_notify, &landed).await;
            });
        }
    });
}

async fn landed(ctx: &Ctx, job: &Job) -> LandedRelease {
    let r = &job.request;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let service = s(&r["service"]);
    let artifact_id = s(&r["artifactId"]);
    let artifact = match ctx.app.releases.artifact(&service, &artifact_id).await {
        Ok(Some(stored)) => Artifact::from_json(&stored.artifact_json).ok(),
        _ => None,
    };
    let by = &r["releasedBy"];
    let released_by = match (by["name"].as_str(), by["email"].as_str()) {
        (Some(n), Some(e)) if !n.is_empty() && !e.is_empty() => format!("{n} <{e}>"),
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(e)) => e.to_owned(),
        _ => job.requested_by.clone(),
    };
    let task = job.tasks.first();
    LandedRelease {
        job_id: job.id.clone(),
        succeeded: job.state == JobState::Succeeded,
        environment: s(&r["environment"]),
        intent: intent_text(&r["intent"]),
        released_by,
        image: r["image"].as_str().map(str::to_owned),
        commit: task
            .and_then(|t| t.result.as_ref())
            .and_then(|v| v["commit"].as_str())
            .map(str::to_owned),
        error: task.and_then(|t| t.last_error.clone()),
        service,
        artifact_id,
        artifact,
    }
}

/// `auto-release`, `promote from dev`, `rollback of main-2`.
fn intent_text(intent: &Value) -> String {
    let kind = intent["type"].as_str().unwrap_or("release");
    match (intent["fromEnv"].as_str(), intent["ofArtifact"].as_str()) {
        (Some(from), _) => format!("{kind} from {from}"),
        (_, Some(of)) => format!("{kind} of {of}"),
        _ => kind.to_owned(),
    }
}

struct Sender {
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl Sender {
    async fn deliver(&self, config: &ReleaseNotifyConfig, landed: &LandedRelease) {
        let slack = async {
            if let Some(sink) = config.slack.get(&landed.environment) {
                let result = self
                    .post(sink.webhook_url.expose(), &slack_message(landed), None)
                    .await;
                log("slack", landed, result);
            }
        };
        let github = async {
            let Some(github) = &config.github else {
                return;
            };
            let Some((path, body)) = commit_status(github, landed) else {
                return;
            };
            let url = format!("{}{path}", github.api_url.trim_end_matches('/'));
            let result = self.post(&url, &body, Some(&github.token)).await;
            log("github commit status", landed, result);
        };
        let grafana = async {
            let Some(grafana) = &config.grafana else {
                return;
            };
            let url = format!("{}/api/annotations", grafana.url.trim_end_matches('/'));
            let body = annotation(grafana, landed);
            let result = self.post(&url, &body, grafana.token.as_ref()).await;
            log("grafana annotation", landed, result);
        };
        tokio::join!(slack, github, grafana);
    }

    async fn post(
        &self,
        url: &str,
        body: &Value,
        token: Option<&Secret>,
    ) -> Result<(), DeliveryError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = self.client.post(url).json(body);
            if let Some(token) = token {
                request = request
                    .bearer_auth(token.expose())
                    .header("Accept", "application/vnd.github+json, application/json");
            }
            let result = match request.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(DeliveryError::Status {
                    status: r.status().as_u16(),
                }),
                Err(e) if e.is_timeout() => Err(DeliveryError::Timeout(self.retry.timeout)),
                Err(e) => Err(DeliveryError::Transport(e.without_url().to_string())),
            };
            let retryable = match &result {
                Ok(()) => false,
                Err(DeliveryError::Status { status }) => {
                    *status == 408 || *status == 429 || *status >= 500
                }
                Err(_) => true,
            };
            if !retryable || attempts >= self.retry.max_attempts {
                return result;
            }
            tokio::time::sleep(self.retry.delay_before(attempts + 1)).await;
        }
    }
}

fn log(sink: &str, landed: &LandedRelease, result: Result<(), DeliveryError>) {
    if let Err(e) = result {
        warn!(
            sink,
            job = %landed.job_id,
            service = %landed.service,
            environment = %landed.environment,
            error = %e,
            "release notification failed"
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The Block Kit message: a header, the facts as fields, and links.
pub(crate) fn slack_message(landed: &LandedRelease) -> Value {
    let title = if landed.succeeded {
        format!(
            ":rocket: {} released to {}",
            landed.service, landed.environment
        )
    } else {
        format!(
            ":x: release of {} to {} failed",
            landed.service, landed.environment
        )
    };
    let field =
        |name: &str, value: &str| json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")});
    let mut fields = vec![
        field("Service", &escape(&landed.service)),
        field("Environment", &escape(&landed.environment)),
        field("Artifact", &format!("`{}`", escape(&landed.artifact_id))),
        field("Released by", &escape(&landed.released_by)),
        field("Intent", &escape(&landed.intent)),
    ];
    if let Some(image) = &landed.image {
        fields.push(field("Image", &format!("`{}`", escape(image))));
    }
    if let Some(commit) = &landed.commit {
        fields.push(field(
            "Manifest commit",
            &format!("`{}`", commit.get(..12).unwrap_or(commit)),
        ));
    }
    if let Some(error) = landed.error.as_ref().filter(|_| !landed.succeeded) {
        fields.push(field("Error", &escape(error)));
    }
    let mut links = Vec::new();
    if let Some(a) = &landed.artifact {
        if !a.application.url.is_empty() {
            let sha = &a.application.sha;
            let source = if sha.is_empty() {
                a.application.url.clone()
            } else {
                format!("{}/commit/{sha}", a.application.url.trim_end_matches('/'))
            };
            links.push(format!("<{source}|source {}>", sha.get(..7).unwrap_or(sha)));
        }
        if !a.ci.job_url.is_empty() {
            links.push(format!("<{}|CI job>", a.ci.job_url));
        }
    }
    links.push(format!("job `{}`", escape(&landed.job_id)));
    json!({
        "text": title,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": true}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": links.join(" · ")}]},
        ],
    })
}

/// `owner/repo` from `https://github.com/owner/repo(.git)` or `git@github.com:owner/repo.git`.
fn github_repository(url: &str) -> Option<String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r.split_once('/').map_or("", |(_, p)| p))
        .or_else(|| url.split_once(':').map(|(_, p)| p))?;
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(".git").unwrap_or(rest);
    let mut parts = rest.split('/');
    let (owner, repo) = (parts.next()?, parts.next()?);
    (!owner.is_empty() && !repo.is_empty() && parts.next().is_none())
        .then(|| format!("{owner}/{repo}"))
}

/// The request path and body of the commit status, when the source commit is known.
pub(crate) fn commit_status(
    config: &GithubStatusConfig,
    landed: &LandedRelease,
) -> Option<(String, Value)> {
    let artifact = landed.artifact.as_ref()?;
    let sha = artifact.application.sha.trim();
    if sha.is_empty() {
        return None;
    }
    let repository = config.repository.clone().or_else(|| {
        github_repository(&artifact.application.url).or_else(|| {
            let name = artifact.application.name.as_str();
            (name.split('/').count() == 2).then(|| name.to_owned())
        })
    })?;
    let state = if landed.succeeded {
        "success"
    } else {
        "failure"
    };
    let description = if landed.succeeded {
        format!(
            "{} released to {} ({})",
            landed.artifact_id, landed.environment, landed.intent
        )
    } else {
        format!(
            "release of {} to {} failed",
            landed.artifact_id, landed.environment
        )
    };
    // GitHub refuses descriptions over 140 characters.
    let description: String = description.chars().take(140).collect();
    let mut body = json!({
        "state": state,
        "context": format!("tug/{}", landed.environment),
        "description": description,
    });
    if !artifact.ci.job_url.is_empty() {
        body["target_url"] = json!(artifact.ci.job_url);
    }
    Some((format!("/repos/{repository}/statuses/{sha}"), body))
}

pub(crate) fn annotation(config: &GrafanaConfig, landed: &LandedRelease) -> Value {
    let outcome = if landed.succeeded {
        "released"
    } else {
        "failed to release"
    };
    let mut text = format!(
        "{} {outcome} {} to {} ({}, by {})",
        landed.service, landed.artifact_id, landed.environment, landed.intent, landed.released_by
    );
    if let Some(image) = &landed.image {
        text.push_str(&format!(" — {image}"));
    }
    let mut body = json!({
        "time": jiff::Timestamp::now().as_millisecond(),
        "tags": ["tug", landed.service, landed.environment],
        "text": text,
    });
    if let Some(uid) = &config.dashboard_uid {
        body["dashboardUID"] = json!(uid);
    }
    body
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn github_repositories_are_read_from_source_urls() {
        assert_eq!(
            github_repository("https://github.com/acme/api.git").as_deref(),
            Some("acme/api")
        );
        assert_eq!(
            github_repository("git@github.com:acme/api.git").as_deref(),
            Some("acme/api")
        );
        assert_eq!(github_repository("https://github.com/acme"), None);
    }

    #[test]
    fn intents_read_as_words() {
        assert_eq!(
            intent_text(&json!({"type": "auto-release"})),
            "auto-release"
        );
        assert_eq!(
            intent_text(&json!({"type": "promote", "fromEnv": "dev"})),
            "promote from dev"
        );
    }
}
