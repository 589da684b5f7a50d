//! From a deploy request to a stored job: validation, repository resolution, authorisation, and
//! the task payloads the writers apply. Shared by the REST and gRPC front ends so both accept
//! exactly the same requests.

use std::collections::BTreeMap;

use tug_deploy::TaskChange;
use tug_git::Identity;
use tug_spec::{DeployRequest, PathsAt};
use tug_store::{BranchKey, NewJob, NewTask};

use crate::auth::{AuthError, Principal, Target, Verb};
use crate::config::Config;

/// A request the API refuses, before anything is stored.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// Malformed or invalid input; `field` names the offending part of the request.
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl Rejection {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// Turns a parsed request into a job, or says why not.
pub fn job_from_request(
    config: &Config,
    principal: &Principal,
    mut request: DeployRequest,
    idempotency_header: Option<String>,
    accepted_at: jiff::Timestamp,
) -> Result<NewJob, Rejection> {
    let limits = tug_spec::Limits {
        max_paths: usize::try_from(config.limits.max_paths_per_request).unwrap_or(usize::MAX),
    };
    tug_spec::validate_request(&request, &limits).map_err(|e| Rejection::Invalid {
        field: Some(e.field.clone()),
        message: e.to_string(),
    })?;
    let idempotency_key = idempotency_header.or_else(|| request.idempotency_key.take());
    if let Some(k) = &idempotency_key
        && (k.is_empty() || k.len() > 255 || k.chars().any(char::is_control))
    {
        return Err(Rejection::invalid(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 printable characters",
        ));
    }
    let commit = &request.commit_spec;
    let author_name = commit
        .user_name
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| principal.name.clone());
    let author_email = commit
        .user_email
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("{}@tug.invalid", sanitize_local_part(&principal.name)));
    for (field, value) in [
        ("commitSpec.CommitUserName", &author_name),
        ("commitSpec.CommitUserEmail", &author_email),
    ] {
        if value.contains(['<', '>', '\n', '\0']) {
            return Err(Rejection::invalid(
                field,
                format!("{field}: must not contain '<', '>' or newlines"),
            ));
        }
    }
    let trailers = source_trailers(commit);
    let redeploy_value = accepted_at.to_string();

    // One task per repository branch; a request naming a branch twice adds a segment.
    let mut tasks: BTreeMap<BranchKey, TaskChange> = BTreeMap::new();
    for (si, spec) in request.deploy_specs.iter().enumerate() {
        let repo = match spec.repository.as_deref().filter(|r| !r.is_empty()) {
            Some(name) => config.repository(name),
            None => config.repository_by_url(&spec.url),
        };
        let Some(repo) = repo else {
            let known: Vec<&str> = config
                .repositories
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            let asked = spec.repository.clone().unwrap_or_else(|| spec.url.clone());
            let field = if spec.repository.is_some() {
                "repository"
            } else {
                "url"
            };
            return Err(Rejection::invalid(
                format!("deploySpecs[{si}].{field}"),
                format!(
                    "deploySpecs[{si}].{field}: unknown repository {asked:?}; configured repositories: {}",
                    if known.is_empty() {
                        "(none)".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        for (ui, update) in spec.updates.iter().enumerate() {
            let paths = update.paths.iter().map(|p| p.path.clone());
            principal.check(
                Verb::Deploy,
                &Target::new()
                    .branch(repo.name.clone(), update.branch.clone())
                    .paths(paths),
            )?;
            let key = BranchKey {
                repository: repo.name.clone(),
                branch: update.branch.clone(),
            };
            let segment = PathsAt {
                field: format!("deploySpecs[{si}].updates[{ui}].paths"),
                paths: update.paths.clone(),
            };
            tasks
                .entry(key)
                .or_insert_with(|| {
                    let mut change = TaskChange::deploy(
                        repo.url.clone(),
                        &Identity::new(author_name.clone(), author_email.clone()),
                        commit.message.clone(),
                    );
                    change.trailers = trailers.clone();
                    change.allow_empty = request.allow_empty || config.commit.allow_empty;
                    change.redeploy_value = redeploy_value.clone();
                    change.strict = request.strict.unwrap_or(config.deploy.strict);
                    change
                })
                .push_segment(segment);
        }
    }
    let tasks = tasks
        .into_iter()
        .map(|(branch, payload)| {
            serde_json::to_value(payload.by_actor(&principal.name))
                .map(|payload| NewTask { branch, payload })
                .map_err(|e| Rejection::invalid("deploySpecs", e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stored_request = serde_json::to_value(&request)
        .map_err(|e| Rejection::invalid("deploySpecs", e.to_string()))?;
    Ok(NewJob {
        idempotency_key,
        kind: "deploy".to_owned(),
        requested_by: principal.name.clone(),
        request: stored_request,
        tasks,
    })
}

/// The Delivery client's source metadata, kept as trailers so history says what produced a change.
fn source_trailers(commit: &tug_spec::CommitSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let clean = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.contains('\n'))
            .map(str::to_owned)
    };
    if let Some(v) = clean(&commit.project) {
        out.push(("Source-Project".to_owned(), v));
    }
    if let Some(v) = clean(&commit.branch) {
        out.push(("Source-Branch".to_owned(), v));
    }
    if let Some(v) = clean(&commit.tag) {
        out.push(("Source-Tag".to_owned(), v));
    }
    if let Some(v) = clean(&commit.short_sha) {
        out.push(("Source-Commit".to_owned(), v));
    }
    out
}

fn sanitize_local_part(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() { "tug".to_owned() } else { s }
}
