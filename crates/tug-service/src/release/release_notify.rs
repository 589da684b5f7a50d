//! Telling people and tools that a release landed: a Slack message in the environment's channel,
//! a GitHub commit status on the artifact's source commit (`tug/<env>`), a GitHub deployment and
//! a Grafana annotation.
//!
//! A GitHub deployment (`release_notify.github.deployments`) is created per release and
//! environment, for the artifact's source commit, when the release job ends: `in_progress` once
//! the release commit landed (`failure` when the release failed), then `success` or `failure`
//! as Argo CD / Flux report the rollout healthy or degraded (`release/feedback.rs` passes each
//! recorded state here). Statuses of one deployment are sent in order, each state once; a
//! report that arrives before the deployment exists is sent right after it is created. Which
//! deployment belongs to which release commit is kept in memory; a rollout reported after a
//! restart, for a release landed before it, finds its deployment on GitHub (by the artifact's
//! commit and environment, and the manifest commit in the deployment's payload).
//!
//! A task listens to the writers' job signal (the moment a job's outcome is stored) and, for each
//! finished release job, delivers to every configured sink concurrently, off the writer's path.
//! Like job notifications, a failing sink never fails a release: it is retried with
//! `notify.max_attempts` / `notify.base_delay_ms` / `notify.timeout_ms` and then logged. Only the
//! replica whose writer landed the release sends, once per job.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;
use tug_release::Artifact;
use tug_store::{Job, JobState};

use super::Ctx;
use crate::config::Secret;
use crate::config::release_notify::{
    GithubDeploymentsConfig, GithubStatusConfig, GrafanaConfig, ReleaseNotifyConfig,
};
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

/// A rollout state feedback recorded for a release commit.
#[derive(Debug, Clone)]
pub(crate) struct Rollout {
    pub service: String,
    pub environment: String,
    /// The release's manifest commit (full SHA).
    pub commit: String,
    /// `progressing`, `healthy` or `degraded`.
    pub state: &'static str,
}

/// The GitHub API version tug's requests are written for.
const GITHUB_API_VERSION: &str = "2022-11-28";

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
    let sender = Arc::new(Sender {
        client,
        retry,
        deployments: Deployments::default(),
    });
    let mut signal = ctx.app.signal.subscribe_all();
    let mut rollouts = ctx.rollouts.subscribe();
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
                r = rollouts.recv() => {
                    match r {
                        Ok(rollout) => {
                            let config = ctx.app.config.clone();
                            let sender = sender.clone();
                            let ctx = ctx.clone();
                            tokio::spawn(async move {
                                if let Some(github) = &config.release_notify.github
                                    && github.deployments.is_some()
                                {
                                    sender.rollout(&ctx, github, &rollout).await;
                                }
                            });
                        }
                        Err(RecvError::Lagged(n)) => {
                            warn!(missed = n, "deployment statuses fell behind; some were not sent");
                        }
                        Err(RecvError::Closed) => {}
                    }
                    continue;
                }
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
    deployments: Deployments,
}

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a Secret),
    /// A bearer token and the headers GitHub's REST API asks for.
    Github(&'a Secret),
}

/// (service, environment, manifest commit) of a release.
type DeploymentKey = (String, String, String);

/// The GitHub deployment of each release tug created one for.
#[derive(Default)]
struct Deployments(std::sync::Mutex<HashMap<DeploymentKey, Arc<tokio::sync::Mutex<Deployment>>>>);

#[derive(Default)]
struct Deployment {
    /// `owner/repo` and the deployment's id, once created.
    created: Option<(String, u64)>,
    /// The last state sent.
    last: Option<&'static str>,
    /// A rollout state reported before the deployment was created.
    pending: Option<&'static str>,
}

impl Deployments {
    /// The entry of a release; each is locked while its requests are sent, so its statuses
    /// go out in order.
    fn entry(&self, key: DeploymentKey) -> Arc<tokio::sync::Mutex<Deployment>> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 10_000 {
            map.clear();
        }
        map.entry(key).or_default().clone()
    }
}

impl Sender {
    async fn deliver(&self, config: &ReleaseNotifyConfig, landed: &LandedRelease) {
        let slack = async {
            if let Some(sink) = config.slack.get(&landed.environment) {
                let result = self
                    .post(
                        sink.webhook_url.expose(),
                        &slack_message(landed),
                        Auth::None,
                    )
                    .await;
                log("slack", landed, result.map(drop));
            }
        };
        let github = async {
            let Some(github) = &config.github else {
                return;
            };
            let status = async {
                let Some((path, body)) = commit_status(github, landed) else {
                    return;
                };
                let url = format!("{}{path}", github.api_url.trim_end_matches('/'));
                let result = self.post(&url, &body, Auth::Github(&github.token)).await;
                log("github commit status", landed, result.map(drop));
            };
            let deployment = async {
                if let Some(deployments) = &github.deployments {
                    self.deploy(github, deployments, landed).await;
                }
            };
            tokio::join!(status, deployment);
        };
        let grafana = async {
            let Some(grafana) = &config.grafana else {
                return;
            };
            let url = format!("{}/api/annotations", grafana.url.trim_end_matches('/'));
            let body = annotation(grafana, landed);
            let auth = grafana.token.as_ref().map_or(Auth::None, Auth::Bearer);
            let result = self.post(&url, &body, auth).await;
            log("grafana annotation", landed, result.map(drop));
        };
        tokio::join!(slack, github, grafana);
    }

    /// Creates the release's deployment and sends its first status: `in_progress` when the
    /// release commit landed, `failure` when the release failed; then any rollout state
    /// reported meanwhile.
    async fn deploy(
        &self,
        github: &GithubStatusConfig,
        deployments: &GithubDeploymentsConfig,
        landed: &LandedRelease,
    ) {
        let Some((repository, body)) = deployment(github, deployments, landed) else {
            return;
        };
        // A succeeded release without a commit changed nothing: nothing rolls out.
        let Some(commit) = landed
            .commit
            .clone()
            .or_else(|| (!landed.succeeded).then(|| format!("failed-job-{}", landed.job_id)))
        else {
            return;
        };
        let entry =
            self.deployments
                .entry((landed.service.clone(), landed.environment.clone(), commit));
        let mut deployment_state = entry.lock().await;
        if deployment_state.created.is_some() {
            return;
        }
        let api = github.api_url.trim_end_matches('/');
        let url = format!("{api}/repos/{repository}/deployments");
        let created = self.post(&url, &body, Auth::Github(&github.token)).await;
        let id = match created {
            Ok(answer) => match answer.as_ref().and_then(|a| a["id"].as_u64()) {
                Some(id) => id,
                None => {
                    log(
                        "github deployment",
                        landed,
                        Err(DeliveryError::Transport(
                            "GitHub's answer names no deployment id".into(),
                        )),
                    );
                    return;
                }
            },
            Err(e) => {
                log("github deployment", landed, Err(e));
                return;
            }
        };
        deployment_state.created = Some((repository, id));
        let (first, description) = if landed.succeeded {
            (
                "in_progress",
                format!(
                    "release commit {} landed; waiting for the rollout",
                    landed
                        .commit
                        .as_deref()
                        .map_or("", |c| c.get(..12).unwrap_or(c))
                ),
            )
        } else {
            (
                "failure",
                format!(
                    "release failed: {}",
                    landed.error.as_deref().unwrap_or("see tug's log")
                ),
            )
        };
        self.send_status(
            github,
            deployments,
            &landed.environment,
            &mut deployment_state,
            first,
            &description,
        )
        .await;
        if let Some(state) = deployment_state.pending.take()
            && landed.succeeded
        {
            self.send_status(
                github,
                deployments,
                &landed.environment,
                &mut deployment_state,
                rollout_status(state),
                &rollout_description(state),
            )
            .await;
        }
    }

    /// A recorded rollout state becomes the status of the release's deployment. A deployment
    /// this process did not create (it was created before a restart) is looked up on GitHub by
    /// the artifact's commit, environment and the manifest commit in its payload; when there is
    /// none yet, the state waits for the deployment the release's notification creates.
    async fn rollout(&self, ctx: &Ctx, github: &GithubStatusConfig, rollout: &Rollout) {
        let Some(deployments) = &github.deployments else {
            return;
        };
        let entry = self.deployments.entry((
            rollout.service.clone(),
            rollout.environment.clone(),
            rollout.commit.clone(),
        ));
        let mut deployment_state = entry.lock().await;
        if deployment_state.created.is_none() {
            deployment_state.created = self.find_deployment(ctx, github, rollout).await;
        }
        if deployment_state.created.is_none() {
            deployment_state.pending = Some(rollout.state);
            return;
        }
        self.send_status(
            github,
            deployments,
            &rollout.environment,
            &mut deployment_state,
            rollout_status(rollout.state),
            &rollout_description(rollout.state),
        )
        .await;
    }

    /// The deployment created for the release `rollout` is about, if GitHub has one.
    async fn find_deployment(
        &self,
        ctx: &Ctx,
        github: &GithubStatusConfig,
        rollout: &Rollout,
    ) -> Option<(String, u64)> {
        let releases = ctx
            .app
            .releases
            .releases(&tug_store::ReleaseQuery {
                service: rollout.service.clone(),
                environment: Some(rollout.environment.clone()),
                limit: 10_000,
            })
            .await
            .ok()?;
        let release = releases.into_iter().find(|r| r.commit == rollout.commit)?;
        let stored = ctx
            .app
            .releases
            .artifact(&rollout.service, &release.artifact_id)
            .await
            .ok()??;
        let artifact = Artifact::from_json(&stored.artifact_json).ok()?;
        let sha = artifact.application.sha.trim().to_owned();
        let repository = source_repository(github, &artifact)?;
        if sha.is_empty() {
            return None;
        }
        let mut url = reqwest::Url::parse(&format!(
            "{}/repos/{repository}/deployments",
            github.api_url.trim_end_matches('/')
        ))
        .ok()?;
        url.query_pairs_mut()
            .append_pair("sha", &sha)
            .append_pair("environment", &rollout.environment)
            .append_pair("per_page", "100");
        let found = self
            .send(
                reqwest::Method::GET,
                url.as_str(),
                None,
                Auth::Github(&github.token),
            )
            .await;
        let listed = match found {
            Ok(listed) => listed?,
            Err(e) => {
                warn!(
                    sink = "github deployment status",
                    repository = %repository,
                    environment = %rollout.environment,
                    error = %e,
                    "cannot look up the release's deployment"
                );
                return None;
            }
        };
        let id = listed.as_array()?.iter().find_map(|d| {
            (d["payload"]["manifestCommit"].as_str() == Some(rollout.commit.as_str()))
                .then(|| d["id"].as_u64())
                .flatten()
        })?;
        Some((repository, id))
    }

    async fn send_status(
        &self,
        github: &GithubStatusConfig,
        deployments: &GithubDeploymentsConfig,
        environment: &str,
        deployment_state: &mut Deployment,
        state: &'static str,
        description: &str,
    ) {
        let Some((repository, id)) = &deployment_state.created else {
            return;
        };
        if deployment_state.last == Some(state) {
            return;
        }
        let body = deployment_status(deployments, environment, state, description);
        let url = format!(
            "{}/repos/{repository}/deployments/{id}/statuses",
            github.api_url.trim_end_matches('/')
        );
        match self.post(&url, &body, Auth::Github(&github.token)).await {
            Ok(_) => deployment_state.last = Some(state),
            Err(e) => warn!(
                sink = "github deployment status",
                repository = %repository,
                deployment = id,
                environment,
                state,
                error = %e,
                "release notification failed"
            ),
        }
    }

    /// POSTs `body` as JSON, retrying what may pass later; the answer's JSON body, if any.
    async fn post(
        &self,
        url: &str,
        body: &Value,
        auth: Auth<'_>,
    ) -> Result<Option<Value>, DeliveryError> {
        self.send(reqwest::Method::POST, url, Some(body), auth)
            .await
    }

    /// Sends a request, retrying what may pass later; the answer's JSON body, if any.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        auth: Auth<'_>,
    ) -> Result<Option<Value>, DeliveryError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = self.client.request(method.clone(), url);
            if let Some(body) = body {
                request = request.json(body);
            }
            match auth {
                Auth::None => {}
                Auth::Bearer(token) => {
                    request = request
                        .bearer_auth(token.expose())
                        .header("Accept", "application/json");
                }
                Auth::Github(token) => {
                    request = request
                        .bearer_auth(token.expose())
                        .header("Accept", "application/vnd.github+json")
                        .header("X-GitHub-Api-Version", GITHUB_API_VERSION);
                }
            }
            let result = match request.send().await {
                Ok(r) if r.status().is_success() => Ok(r.json::<Value>().await.ok()),
                Ok(r) => Err(DeliveryError::Status {
                    status: r.status().as_u16(),
                }),
                Err(e) if e.is_timeout() => Err(DeliveryError::Timeout(self.retry.timeout)),
                Err(e) => Err(DeliveryError::Transport(e.without_url().to_string())),
            };
            let retryable = match &result {
                Ok(_) => false,
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
    let repository = source_repository(config, artifact)?;
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

/// The source repository (`owner/repo`) of a release, as the commit status finds it.
fn source_repository(config: &GithubStatusConfig, artifact: &Artifact) -> Option<String> {
    config.repository.clone().or_else(|| {
        github_repository(&artifact.application.url).or_else(|| {
            let name = artifact.application.name.as_str();
            (name.split('/').count() == 2).then(|| name.to_owned())
        })
    })
}

/// The repository and body of `POST /repos/{owner}/{repo}/deployments`, when the source
/// commit is known.
pub(crate) fn deployment(
    config: &GithubStatusConfig,
    deployments: &GithubDeploymentsConfig,
    landed: &LandedRelease,
) -> Option<(String, Value)> {
    let artifact = landed.artifact.as_ref()?;
    let sha = artifact.application.sha.trim();
    if sha.is_empty() {
        return None;
    }
    let repository = source_repository(config, artifact)?;
    let description: String = format!(
        "{} {} to {} ({}, by {})",
        landed.service, landed.artifact_id, landed.environment, landed.intent, landed.released_by
    )
    .chars()
    .take(140)
    .collect();
    let mut body = json!({
        "ref": sha,
        "task": "deploy",
        "environment": landed.environment,
        "auto_merge": false,
        "required_contexts": [],
        "description": description,
        "payload": {
            "service": landed.service,
            "artifactId": landed.artifact_id,
            "job": landed.job_id,
            "image": landed.image,
            "manifestCommit": landed.commit,
        },
    });
    if let Some(production) = deployments
        .environments
        .get(&landed.environment)
        .and_then(|e| e.production)
    {
        body["production_environment"] = json!(production);
    }
    Some((repository, body))
}

/// The body of `POST /repos/{owner}/{repo}/deployments/{id}/statuses`.
pub(crate) fn deployment_status(
    deployments: &GithubDeploymentsConfig,
    environment: &str,
    state: &str,
    description: &str,
) -> Value {
    let description: String = description.chars().take(140).collect();
    let mut body = json!({
        "state": state,
        "environment": environment,
        "description": description,
    });
    if let Some(target) = deployments.environments.get(environment) {
        if let Some(url) = &target.url {
            body["environment_url"] = json!(url);
        }
        if let Some(url) = &target.log_url {
            body["log_url"] = json!(url);
        }
    }
    body
}

/// The deployment state for a rollout state.
fn rollout_status(state: &str) -> &'static str {
    match state {
        "healthy" => "success",
        "degraded" => "failure",
        _ => "in_progress",
    }
}

fn rollout_description(state: &str) -> String {
    match state {
        "healthy" => "the rollout is healthy".to_owned(),
        "degraded" => "the rollout is degraded".to_owned(),
        other => format!("the rollout is {other}"),
    }
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
    fn rollout_states_become_deployment_states() {
        assert_eq!(rollout_status("healthy"), "success");
        assert_eq!(rollout_status("degraded"), "failure");
        assert_eq!(rollout_status("progressing"), "in_progress");
    }

    #[test]
    fn a_deployment_needs_the_source_commit_and_says_what_was_released() {
        let github: GithubStatusConfig = serde_saphyr::from_str(
            "token: t\nrepository: acme/api\ndeployments:\n  environments:\n    prod: { url: \"https://api.example.com\", production: true }\n",
        )
        .unwrap();
        let deployments = github.deployments.clone().unwrap();
        let mut artifact = Artifact::from_json(
            r#"{"id": "main-1", "service": "api", "application": {"sha": "", "name": "api", "url": ""}, "ci": {}}"#,
        )
        .unwrap();
        let mut landed = LandedRelease {
            job_id: "j1".into(),
            succeeded: true,
            service: "api".into(),
            environment: "prod".into(),
            artifact_id: "main-1".into(),
            intent: "promote from dev".into(),
            released_by: "Ann".into(),
            image: Some("registry.example.com/api:1".into()),
            commit: Some("c0ffee".into()),
            error: None,
            artifact: Some(artifact.clone()),
        };
        assert!(deployment(&github, &deployments, &landed).is_none());
        artifact.application.sha = "9fceb02".into();
        landed.artifact = Some(artifact);
        let (repository, body) = deployment(&github, &deployments, &landed).unwrap();
        assert_eq!(repository, "acme/api");
        assert_eq!(body["ref"], "9fceb02");
        assert_eq!(body["auto_merge"], false);
        assert_eq!(body["required_contexts"], json!([]));
        assert_eq!(body["production_environment"], true);
        assert_eq!(body["payload"]["manifestCommit"], "c0ffee");
        let status = deployment_status(&deployments, "prod", "success", &"x".repeat(200));
        assert_eq!(status["environment_url"], "https://api.example.com");
        assert!(status.get("log_url").is_none());
        assert_eq!(status["description"].as_str().unwrap().len(), 140);
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
