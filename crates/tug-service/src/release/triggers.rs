//! Inbound triggers: source pushes (GitHub, GitLab), image pushes (GitHub Packages, Docker Hub,
//! Harbor) and a generic dispatch, turned into artifacts, auto-releases and deploy requests.
//!
//! Each sender proves itself with what it can offer: GitHub signs the body
//! (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`), GitLab repeats a shared token
//! (`X-Gitlab-Token`), Docker Hub cannot sign at all and Harbor sends a fixed `Authorization`
//! value, so registries share one token given as `?token=` or in `Authorization`. Every check is
//! constant-time; a failed one answers 401 before the body is read as JSON.
//!
//! Replays are harmless: an artifact's id is derived from the event (`<branch>-<sha[:10]>` for a
//! source push, `<tag>-<digest[:12]>` or `<tag>-<pushed_at>` for an image push), so a replayed
//! delivery registers the same artifact with the same bytes, which the store reports as
//! unchanged, and an unchanged artifact releases nothing.
//!
//! A registry push has no source branch; its artifact's branch is the pushed tag, so an
//! auto-release policy of branch `sandbox` releases every new push of tag `sandbox` (the
//! "same tag per environment" practice).
//!
//! `POST /api/v1/dispatch` takes `{event_type, client_payload}` (GitHub's
//! `repository_dispatch` shape) and renders the first rule for `event_type` into a deploy
//! request: every `{{ payload.<field> }}` (dots for nested fields) and `{{ event_type }}` in the
//! rule's strings is replaced, and the rendered `branch` must be one of `allowed_branches`.

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tug_release::Artifact;
use tug_store::NewArtifact;

use super::api::Registration;

use super::flow::auto_release;
use super::{Ctx, internal, invalid, not_found};
use crate::audit::Entry;
use crate::auth::Verb;
use crate::config::Secret;
use crate::error::{ErrorKind, ServiceError};

/// The headers of an inbound webhook, as the transport received them.
#[derive(Debug, Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// Headers whose value is not text are left out by the transport: no sender tug speaks
    /// with uses them.
    pub fn new(headers: impl IntoIterator<Item = (String, String)>) -> Self {
        Headers(headers.into_iter().collect())
    }

    /// The first value of `name` (case-insensitive, as HTTP header names are).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What an inbound trigger did.
#[derive(Debug)]
pub enum TriggerOutcome {
    /// GitHub's `ping` event.
    Pong,
    /// A well-formed event tug does not act on, and why.
    Ignored(String),
    /// Artifacts registered (or found unchanged), with their auto-releases.
    Registered(Vec<Value>),
    /// A dispatch rule rendered a deploy request, which was submitted.
    Dispatched {
        job: Box<tug_store::Job>,
        created: bool,
        rule: String,
    },
}

/// Equal secrets, compared in time independent of where they differ and of their lengths.
pub(crate) fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn unauthenticated(message: &str) -> ServiceError {
    ServiceError::new(ErrorKind::Unauthenticated, message)
}

fn not_configured(what: &str) -> ServiceError {
    not_found(
        "webhook",
        format!("{what} webhooks are not configured (triggers.{what})"),
    )
}

fn ignored(message: String) -> TriggerOutcome {
    TriggerOutcome::Ignored(message)
}

fn parse_json(body: &[u8]) -> Result<Value, ServiceError> {
    serde_json::from_slice(body).map_err(|e| ServiceError::invalid(format!("request body: {e}")))
}

fn header_str<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.get(name)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, key| &v[*key])
        .as_str()
        .unwrap_or_default()
}

/// A branch or tag as an artifact id component (no `/`).
fn id_part(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn render_tag(template: &str, branch: &str, sha: &str) -> String {
    template
        .replace("{short_sha}", sha.get(..7).unwrap_or(sha))
        .replace("{sha}", sha)
        .replace("{branch}", &id_part(branch))
}

/// A source commit pushed to a branch.
struct SourcePush<'a> {
    repository: &'a str,
    url: &'a str,
    provider: &'a str,
    branch: &'a str,
    sha: &'a str,
    author_name: &'a str,
    author_email: &'a str,
    message: &'a str,
}

/// `POST /api/v1/webhooks/github`.
async fn github_unaudited(
    ctx: &Ctx,
    headers: &Headers,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    let Some(config) = &ctx.app.config.triggers.github else {
        return Err(not_configured("github"));
    };
    let signature = header_str(headers, "x-hub-signature-256").unwrap_or_default();
    if !crate::notify::verify_signature(&config.secret, body, signature) {
        return Err(unauthenticated(
            "X-Hub-Signature-256 is missing or does not match the body",
        ));
    }
    let event = header_str(headers, "x-github-event").unwrap_or_default();
    let payload = parse_json(body)?;
    match event {
        "ping" => Ok(TriggerOutcome::Pong),
        "push" => {
            let Some(branch) = text(&payload, &["ref"]).strip_prefix("refs/heads/") else {
                return Ok(ignored(format!(
                    "push of `{}` is not a branch push",
                    text(&payload, &["ref"])
                )));
            };
            if payload["deleted"].as_bool() == Some(true) {
                return Ok(ignored(format!("branch `{branch}` was deleted")));
            }
            let head = &payload["head_commit"];
            let push = SourcePush {
                repository: text(&payload, &["repository", "full_name"]),
                url: text(&payload, &["repository", "html_url"]),
                provider: "github",
                branch,
                sha: text(&payload, &["after"]),
                author_name: text(head, &["author", "name"]),
                author_email: text(head, &["author", "email"]),
                message: text(head, &["message"]),
            };
            source_push(ctx, "webhook:github", &push).await
        }
        "package" | "registry_package" => {
            let action = text(&payload, &["action"]);
            if action != "published" {
                return Ok(ignored(format!("package action `{action}` is not handled")));
            }
            let package = if payload["registry_package"].is_object() {
                &payload["registry_package"]
            } else {
                &payload["package"]
            };
            let version = &package["package_version"];
            let tag = {
                let t = text(version, &["container_metadata", "tag", "name"]);
                if t.is_empty() {
                    text(version, &["version"])
                } else {
                    t
                }
            };
            let digest = text(version, &["container_metadata", "tag", "digest"]);
            // `package_url` is `ghcr.io/owner/name:tag`; the image is what precedes the tag.
            let url = text(version, &["package_url"]);
            let image = if url.is_empty() {
                format!(
                    "ghcr.io/{}/{}",
                    text(package, &["namespace"]),
                    text(package, &["name"])
                )
            } else {
                strip_reference(url).to_owned()
            };
            let pushed = ImagePush {
                image: image.to_lowercase(),
                tag: tag.to_owned(),
                digest: (!digest.is_empty()).then(|| digest.to_owned()),
                pushed_at: None,
                pusher: text(&payload, &["sender", "login"]).to_owned(),
            };
            image_pushes(ctx, "webhook:github", vec![pushed]).await
        }
        other => Ok(ignored(format!("GitHub event `{other}` is not handled"))),
    }
}

/// `POST /api/v1/webhooks/gitlab`.
async fn gitlab_unaudited(
    ctx: &Ctx,
    headers: &Headers,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    let Some(config) = &ctx.app.config.triggers.gitlab else {
        return Err(not_configured("gitlab"));
    };
    let token = header_str(headers, "x-gitlab-token").unwrap_or_default();
    if !same_secret(token.as_bytes(), config.token.expose().as_bytes()) {
        return Err(unauthenticated("X-Gitlab-Token is missing or wrong"));
    }
    let payload = parse_json(body)?;
    let kind = text(&payload, &["object_kind"]);
    if kind != "push" {
        return Ok(ignored(format!("GitLab event `{kind}` is not handled")));
    }
    let Some(branch) = text(&payload, &["ref"]).strip_prefix("refs/heads/") else {
        return Ok(ignored("push of a non-branch ref".to_owned()));
    };
    let sha = {
        let checkout = text(&payload, &["checkout_sha"]);
        if checkout.is_empty() {
            text(&payload, &["after"])
        } else {
            checkout
        }
    };
    if sha.is_empty() || sha.bytes().all(|b| b == b'0') {
        return Ok(ignored(format!("branch `{branch}` was deleted")));
    }
    let commit = payload["commits"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == sha))
        .cloned()
        .unwrap_or(Value::Null);
    let push = SourcePush {
        repository: text(&payload, &["project", "path_with_namespace"]),
        url: text(&payload, &["project", "web_url"]),
        provider: "gitlab",
        branch,
        sha,
        author_name: text(&commit, &["author", "name"]),
        author_email: text(&commit, &["author", "email"]),
        message: text(&commit, &["message"]),
    };
    source_push(ctx, "webhook:gitlab", &push).await
}

fn check_registry_token(
    ctx: &Ctx,
    headers: &Headers,
    query_token: Option<&str>,
) -> Result<(), ServiceError> {
    let Some(config) = &ctx.app.config.triggers.registry else {
        return Err(not_configured("registry"));
    };
    let expected = config.token.expose().as_bytes();
    let from_header = header_str(headers, "authorization").map(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v)
    });
    let ok = [query_token, from_header]
        .into_iter()
        .flatten()
        .any(|given| same_secret(given.as_bytes(), expected));
    if ok {
        Ok(())
    } else {
        Err(unauthenticated(
            "the registry token (?token= or Authorization) is missing or wrong",
        ))
    }
}

/// `POST /api/v1/webhooks/dockerhub`; `token` is the `?token=` query parameter.
async fn dockerhub_unaudited(
    ctx: &Ctx,
    token: Option<&str>,
    headers: &Headers,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    check_registry_token(ctx, headers, token)?;
    let payload = parse_json(body)?;
    let image = text(&payload, &["repository", "repo_name"]);
    let tag = text(&payload, &["push_data", "tag"]);
    if image.is_empty() || tag.is_empty() {
        return Err(invalid(
            "push_data.tag",
            "a Docker Hub push names repository.repo_name and push_data.tag",
        ));
    }
    let pushed = ImagePush {
        image: image.to_owned(),
        tag: tag.to_owned(),
        digest: None,
        pushed_at: payload["push_data"]["pushed_at"]
            .as_f64()
            .map(|t| format!("{t:.0}")),
        pusher: text(&payload, &["push_data", "pusher"]).to_owned(),
    };
    image_pushes(ctx, "webhook:dockerhub", vec![pushed]).await
}

/// `POST /api/v1/webhooks/harbor`; `token` is the `?token=` query parameter.
async fn harbor_unaudited(
    ctx: &Ctx,
    token: Option<&str>,
    headers: &Headers,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    check_registry_token(ctx, headers, token)?;
    let payload = parse_json(body)?;
    let kind = text(&payload, &["type"]);
    if kind != "PUSH_ARTIFACT" {
        return Ok(ignored(format!("Harbor event `{kind}` is not handled")));
    }
    let data = &payload["event_data"];
    let pusher = text(&payload, &["operator"]).to_owned();
    let mut pushes = Vec::new();
    for resource in data["resources"].as_array().into_iter().flatten() {
        let tag = text(resource, &["tag"]);
        if tag.is_empty() {
            continue;
        }
        let url = text(resource, &["resource_url"]);
        let digest = text(resource, &["digest"]);
        pushes.push(ImagePush {
            image: strip_reference(url).to_owned(),
            tag: tag.to_owned(),
            digest: (!digest.is_empty()).then(|| digest.to_owned()),
            pushed_at: None,
            pusher: pusher.clone(),
        });
    }
    if pushes.is_empty() {
        return Ok(ignored("the push names no tagged artifact".to_owned()));
    }
    image_pushes(ctx, "webhook:harbor", pushes).await
}

/// `host/repo:tag`, `host/repo@sha256:…` or `host:port/repo:tag` → `host/repo`.
fn strip_reference(reference: &str) -> &str {
    let no_digest = reference.split_once('@').map_or(reference, |(r, _)| r);
    match no_digest.rfind(':') {
        Some(at) if !no_digest[at..].contains('/') => &no_digest[..at],
        _ => no_digest,
    }
}

struct ImagePush {
    image: String,
    tag: String,
    digest: Option<String>,
    /// Docker Hub cannot name a digest; its push time tells one push of a tag from the next.
    pushed_at: Option<String>,
    pusher: String,
}

async fn source_push(
    ctx: &Ctx,
    requested_by: &str,
    push: &SourcePush<'_>,
) -> Result<TriggerOutcome, ServiceError> {
    if push.sha.len() < 7 || push.sha.bytes().all(|b| b == b'0') {
        return Ok(ignored(format!(
            "push to `{}` names no commit",
            push.branch
        )));
    }
    let sources: Vec<_> = ctx
        .app
        .config
        .triggers
        .sources
        .iter()
        .filter(|s| s.repository.eq_ignore_ascii_case(push.repository))
        .collect();
    if sources.is_empty() {
        return Ok(ignored(format!(
            "repository `{}` is not in triggers.sources",
            push.repository
        )));
    }
    let mut registered = Vec::new();
    for source in sources {
        let id = format!(
            "{}-{}",
            id_part(push.branch),
            push.sha.get(..10).unwrap_or(push.sha)
        );
        let artifact = json!({
            "id": id,
            "service": source.service,
            "application": {
                "branch": push.branch,
                "sha": push.sha,
                "authorName": push.author_name,
                "authorEmail": push.author_email,
                "committerName": push.author_name,
                "committerEmail": push.author_email,
                "message": push.message,
                "name": push.repository,
                "url": push.url,
                "provider": push.provider,
            },
            "stages": [{"id": "push", "name": "Push", "data": {
                "image": source.image,
                "tag": render_tag(&source.tag, push.branch, push.sha),
            }}],
        });
        registered.push(register(ctx, requested_by, &artifact).await?);
    }
    Ok(registered_response(registered))
}

async fn image_pushes(
    ctx: &Ctx,
    requested_by: &str,
    pushes: Vec<ImagePush>,
) -> Result<TriggerOutcome, ServiceError> {
    let mut registered = Vec::new();
    let mut unknown = Vec::new();
    for push in pushes {
        let Some(service) = ctx.app.config.triggers.images.get(&push.image) else {
            unknown.push(push.image);
            continue;
        };
        let suffix = match (&push.digest, &push.pushed_at) {
            (Some(digest), _) => {
                let hex = digest.rsplit(':').next().unwrap_or(digest);
                Some(hex.get(..12).unwrap_or(hex).to_owned())
            }
            (None, Some(at)) => Some(at.clone()),
            (None, None) => None,
        };
        let tag_part = id_part(&push.tag);
        let id = match suffix {
            Some(s) => format!("{tag_part}-{s}"),
            None => tag_part,
        };
        let mut data = json!({"image": push.image, "tag": push.tag});
        if let Some(digest) = &push.digest {
            data["digest"] = json!(digest);
        }
        let artifact = json!({
            "id": id,
            "service": service,
            "application": {
                "branch": push.tag,
                "authorName": push.pusher,
                "committerName": push.pusher,
                "message": format!("push of {}:{}", push.image, push.tag),
            },
            "stages": [{"id": "push", "name": "Push", "data": data}],
        });
        registered.push(register(ctx, requested_by, &artifact).await?);
    }
    if registered.is_empty() {
        return Ok(ignored(format!(
            "image {} is not in triggers.images",
            unknown.join(", ")
        )));
    }
    Ok(registered_response(registered))
}

fn registered_response(registered: Vec<Value>) -> TriggerOutcome {
    TriggerOutcome::Registered(registered)
}

/// Registers an artifact as `POST /api/v1/artifacts` does and runs its auto-releases, unless
/// the same artifact was registered before.
async fn register(ctx: &Ctx, requested_by: &str, artifact: &Value) -> Result<Value, ServiceError> {
    let text = serde_json::to_string(artifact)
        .map_err(|e| internal(format!("artifact is not JSON: {e}")))?;
    let parsed = Artifact::from_json(&text)
        .map_err(|e| ServiceError::invalid(e.to_string()).with_field(Some(e.path())))?;
    let model = ctx.model()?;
    model
        .services
        .get(&parsed.service)
        .map_err(|e| not_found("service", format!("service: {e}")))?;
    let (stored, write) = super::api::store_artifact(
        ctx,
        NewArtifact {
            service: parsed.service.clone(),
            id: parsed.id.clone(),
            branch: parsed.branch().unwrap_or_default().to_owned(),
            artifact_json: text,
        },
    )
    .await?;
    let auto = if write == Registration::Unchanged {
        Vec::new()
    } else {
        // Webhooks carry no identity of their own: their auto-releases act with the
        // configured trigger token's grants.
        let token = ctx.app.config.triggers.token.as_ref().map(Secret::expose);
        let principal = ctx.app.caller(token).await?;
        auto_release(
            ctx,
            &principal,
            Verb::ArtifactPush,
            requested_by,
            &stored,
            &parsed,
            None,
        )
        .await?
    };
    Ok(json!({
        "id": stored.id,
        "service": stored.service,
        "branch": stored.branch,
        "created": write == Registration::Created,
        "unchanged": write == Registration::Unchanged,
        "autoReleases": auto,
    }))
}

#[derive(Debug, Deserialize)]
struct DispatchBody {
    event_type: String,
    #[serde(default)]
    client_payload: Value,
}

/// `POST /api/v1/dispatch` with the caller's bearer token.
async fn dispatch_unaudited(
    ctx: &Ctx,
    token: Option<&str>,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    let body: DispatchBody = serde_json::from_slice(body)
        .map_err(|e| ServiceError::invalid(format!("request body: {e}")))?;
    let rules = &ctx.app.config.triggers.dispatch.rules;
    let Some((index, rule)) = rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.event_type == body.event_type)
    else {
        return Err(not_found(
            "dispatch rule",
            format!(
                "no dispatch rule for event_type `{}` (triggers.dispatch.rules)",
                body.event_type
            ),
        ));
    };
    let scope = Scope {
        event_type: &body.event_type,
        payload: &body.client_payload,
    };
    if let Some(template) = &rule.branch {
        let branch = render(template, &scope).map_err(|m| invalid("client_payload", m))?;
        if !rule.allowed_branches.is_empty() && !rule.allowed_branches.contains(&branch) {
            return Err(ServiceError::new(ErrorKind::PolicyViolation, format!(
                    "dispatch rule `{}` (triggers.dispatch.rules[{index}]) allows branches {}; `{branch}` is not one of them",
                    rule.event_type,
                    rule.allowed_branches.join(", ")
                ),
            )
            .with_details(json!({"rule": rule.event_type, "branch": branch})));
        }
    }
    let rendered = render_value(&rule.deploy, &scope).map_err(|m| invalid("client_payload", m))?;
    let request: tug_spec::DeployRequest = serde_json::from_value(rendered).map_err(|e| {
        invalid(
            "client_payload",
            format!(
                "dispatch rule `{}` rendered no valid deploy request: {e}",
                rule.event_type
            ),
        )
    })?;
    let key = request.idempotency_key.clone();
    let enqueued = ctx.app.submit(token, request, key).await?;
    Ok(TriggerOutcome::Dispatched {
        job: Box::new(enqueued.job),
        created: enqueued.created,
        rule: rule.event_type.clone(),
    })
}

struct Scope<'a> {
    event_type: &'a str,
    payload: &'a Value,
}

fn render_value(template: &Value, scope: &Scope<'_>) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => Value::String(render(s, scope)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, scope)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Replaces `{{ payload.a.b }}` and `{{ event_type }}` in `template`.
fn render(template: &str, scope: &Scope<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("`{{{{` without `}}}}` in template `{template}`"));
        };
        let expression = after[..end].trim();
        let value = if expression == "event_type" {
            Value::String(scope.event_type.to_owned())
        } else if let Some(path) = expression.strip_prefix("payload.") {
            let found = path
                .split('.')
                .try_fold(scope.payload, |v, key| v.get(key))
                .filter(|v| !v.is_null());
            found.cloned().ok_or_else(|| {
                format!("client_payload.{path} is missing (used by `{{{{ {expression} }}}}`)")
            })?
        } else {
            return Err(format!(
                "`{{{{ {expression} }}}}` is not `payload.<field>` or `event_type`"
            ));
        };
        match value {
            Value::String(s) => out.push_str(&s),
            other => out.push_str(&other.to_string()),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The audited entry points: every trigger records itself in the audit trail (`crate::audit`)
// as `webhook.<source>`. GitHub and GitLab authenticate with a shared secret, not a token, so
// their actor is the source itself.

fn outcome_message(outcome: &TriggerOutcome) -> String {
    match outcome {
        TriggerOutcome::Pong => "ping".to_owned(),
        TriggerOutcome::Ignored(why) => format!("ignored: {why}"),
        TriggerOutcome::Registered(artifacts) => {
            format!("{} artifact(s) registered", artifacts.len())
        }
        TriggerOutcome::Dispatched { job, rule, .. } => {
            format!("rule {rule}: job {}", job.id)
        }
    }
}

async fn audited(
    ctx: &Ctx,
    entry: Entry,
    result: Result<TriggerOutcome, ServiceError>,
) -> Result<TriggerOutcome, ServiceError> {
    crate::audit::record(ctx.app.audit.as_ref(), entry, result, outcome_message).await
}

/// A GitHub webhook (`push`, `ping`, `workflow_run`, …), signed with the shared secret.
pub async fn github(
    ctx: &Ctx,
    headers: &Headers,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    let result = github_unaudited(ctx, headers, body).await;
    audited(ctx, Entry::new("webhook.github", "github"), result).await
}

/// A GitLab webhook, with its `X-Gitlab-Token`.
pub async fn gitlab(
    ctx: &Ctx,
    headers: &Headers,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    let result = gitlab_unaudited(ctx, headers, body).await;
    audited(ctx, Entry::new("webhook.gitlab", "gitlab"), result).await
}

/// A Docker Hub push notification.
pub async fn dockerhub(
    ctx: &Ctx,
    token: Option<&str>,
    headers: &Headers,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    let result = dockerhub_unaudited(ctx, token, headers, body).await;
    // The registry's shared token is not an identity: the source is the actor.
    audited(ctx, Entry::new("webhook.dockerhub", "dockerhub"), result).await
}

/// A Harbor event.
pub async fn harbor(
    ctx: &Ctx,
    token: Option<&str>,
    headers: &Headers,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    let result = harbor_unaudited(ctx, token, headers, body).await;
    // The registry's shared token is not an identity: the source is the actor.
    audited(ctx, Entry::new("webhook.harbor", "harbor"), result).await
}

/// A dispatch: a rule renders a deploy request from the body, which is submitted.
pub async fn dispatch(
    ctx: &Ctx,
    token: Option<&str>,
    body: &[u8],
) -> Result<TriggerOutcome, ServiceError> {
    // Authenticated once here, before the body is read; the deploy it renders is submitted
    // with the same token, which checks its `deploy` grant.
    let caller = ctx.app.caller(token).await;
    let result = match &caller {
        Ok(_) => dispatch_unaudited(ctx, token, body).await,
        Err(e) => Err(e.clone()),
    };
    audited(
        ctx,
        Entry::for_caller("webhook.dispatch", caller.as_ref().ok()),
        result,
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn templates_render_nested_fields_and_name_missing_ones() {
        let payload = json!({"baseRef": "qa", "build": {"tag": "1.2.3", "n": 4}});
        let scope = Scope {
            event_type: "product",
            payload: &payload,
        };
        assert_eq!(
            render(
                "{{ payload.build.tag }}-{{payload.build.n}}/{{ event_type }}",
                &scope
            )
            .unwrap(),
            "1.2.3-4/product"
        );
        let missing = render("{{ payload.nope }}", &scope).unwrap_err();
        assert!(missing.contains("client_payload.nope"), "{missing}");
        assert!(render("{{ env.HOME }}", &scope).is_err());
    }

    #[test]
    fn image_references_lose_tag_and_digest_but_keep_the_port() {
        assert_eq!(
            strip_reference("harbor.example.com/lib/api:v1"),
            "harbor.example.com/lib/api"
        );
        assert_eq!(
            strip_reference("reg:5000/lib/api@sha256:ab"),
            "reg:5000/lib/api"
        );
        assert_eq!(strip_reference("reg:5000/lib/api"), "reg:5000/lib/api");
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"", b"abc"));
    }
}
