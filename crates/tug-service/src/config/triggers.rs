//! The `triggers:` section: inbound webhooks (source and image pushes) and dispatch rules.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{ConfigError, Secret};

/// The `triggers:` section of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggersConfig {
    /// The bearer token whose scope releases started by webhooks get (their senders prove
    /// themselves by signature, not by token). Needed unless `auth.mode` is `none`.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub github: Option<GithubTrigger>,
    #[serde(default)]
    pub gitlab: Option<GitlabTrigger>,
    /// Docker Hub and Harbor.
    #[serde(default)]
    pub registry: Option<RegistryTrigger>,
    /// Source repositories (`owner/name`, GitLab's `path_with_namespace`) whose pushes register
    /// artifacts.
    #[serde(default)]
    pub sources: Vec<SourceTrigger>,
    /// Image repository (`registry.example.com/team/api`, Docker Hub's `team/api`) → service.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    #[serde(default)]
    pub dispatch: DispatchConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubTrigger {
    /// The webhook's secret, the key of `X-Hub-Signature-256`.
    pub secret: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabTrigger {
    /// The webhook's secret token, sent back as `X-Gitlab-Token`.
    pub token: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTrigger {
    pub token: Secret,
}

/// A source repository whose pushes are builds of `service`, published as `image:tag`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTrigger {
    pub repository: String,
    pub service: String,
    pub image: String,
    /// The image tag CI pushes for a commit: `{sha}`, `{short_sha}` (7 digits) and `{branch}`
    /// (with `/` written `-`) are replaced. Default `{sha}`.
    #[serde(default = "default_tag")]
    pub tag: String,
}

fn default_tag() -> String {
    "{sha}".to_owned()
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    #[serde(default)]
    pub rules: Vec<DispatchRule>,
}

/// How one `event_type` becomes a deploy request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchRule {
    pub event_type: String,
    /// The rendered value checked against `allowed_branches`, e.g. `{{ payload.baseRef }}`.
    #[serde(default)]
    pub branch: Option<String>,
    /// Empty: every branch.
    #[serde(default)]
    pub allowed_branches: Vec<String>,
    /// A deploy request (the body of `POST /api/v1/deploy`) with templates in its strings.
    pub deploy: Value,
}

impl TriggersConfig {
    /// Replaces `${VAR}` in the secrets and the token.
    pub(crate) fn expand_variables(
        &mut self,
        expand: &mut dyn FnMut(&mut String, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        if let Some(token) = &mut self.token {
            expand(token.expose_mut(), "triggers.token")?;
        }
        if let Some(github) = &mut self.github {
            expand(github.secret.expose_mut(), "triggers.github.secret")?;
        }
        if let Some(gitlab) = &mut self.gitlab {
            expand(gitlab.token.expose_mut(), "triggers.gitlab.token")?;
        }
        if let Some(registry) = &mut self.registry {
            expand(registry.token.expose_mut(), "triggers.registry.token")?;
        }
        Ok(())
    }

    /// Problems as (field, message).
    pub(crate) fn validate(&self, config: &crate::Config) -> Result<(), (String, String)> {
        let empty = |s: &Secret| s.expose().trim().is_empty();
        let err = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        if self.github.as_ref().is_some_and(|g| empty(&g.secret)) {
            return err("triggers.github.secret", "must not be empty");
        }
        if self.gitlab.as_ref().is_some_and(|g| empty(&g.token)) {
            return err("triggers.gitlab.token", "must not be empty");
        }
        if self.registry.as_ref().is_some_and(|r| empty(&r.token)) {
            return err("triggers.registry.token", "must not be empty");
        }
        let webhooks = self.github.is_some() || self.gitlab.is_some() || self.registry.is_some();
        let open = config
            .auth
            .as_ref()
            .is_some_and(|a| a.mode() == crate::config::AuthMode::None);
        if webhooks && !open && self.token.is_none() {
            return err(
                "triggers.token",
                "missing: webhooks release with the scope of a bearer token; name one (\"${VAR}\")",
            );
        }
        let services: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        for (i, source) in self.sources.iter().enumerate() {
            if !services.contains(&source.service.as_str()) {
                return Err((
                    format!("triggers.sources[{i}].service"),
                    format!("`{}` is not a configured service", source.service),
                ));
            }
        }
        for (image, service) in &self.images {
            if !services.contains(&service.as_str()) {
                return Err((
                    format!("triggers.images.{image}"),
                    format!("`{service}` is not a configured service"),
                ));
            }
        }
        for (i, rule) in self.dispatch.rules.iter().enumerate() {
            let at = format!("triggers.dispatch.rules[{i}]");
            if rule.event_type.trim().is_empty() {
                return Err((format!("{at}.event_type"), "must not be empty".into()));
            }
            if !rule.allowed_branches.is_empty() && rule.branch.is_none() {
                return Err((
                    format!("{at}.branch"),
                    "missing: allowed_branches needs the branch to check, e.g. \"{{ payload.baseRef }}\"".into(),
                ));
            }
            if let Err(e) = serde_json::from_value::<tug_spec::DeployRequest>(rule.deploy.clone()) {
                return Err((
                    format!("{at}.deploy"),
                    format!("is not a deploy request: {e}"),
                ));
            }
        }
        Ok(())
    }
}
