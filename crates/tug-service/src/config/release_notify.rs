//! The `release_notify:` section: where landed releases are announced.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Secret, SlackSinkConfig};

/// The `release_notify:` section of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseNotifyConfig {
    /// Environment → the Slack incoming webhook of its channel.
    #[serde(default)]
    pub slack: BTreeMap<String, SlackSinkConfig>,
    #[serde(default)]
    pub github: Option<GithubStatusConfig>,
    #[serde(default)]
    pub grafana: Option<GrafanaConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubStatusConfig {
    /// `https://api.github.com`, or `https://<host>/api/v3` for GitHub Enterprise Server.
    #[serde(default = "default_github_api")]
    pub api_url: String,
    pub token: Secret,
    /// `owner/repo` of the source commits; default: from the artifact's `application.url`
    /// (`https://github.com/owner/repo`) or `application.name` when it reads `owner/repo`.
    #[serde(default)]
    pub repository: Option<String>,
    /// Also create a GitHub deployment per release and environment, its status following the
    /// release commit and the rollout feedback (see [`crate::release::release_notify`]).
    #[serde(default)]
    pub deployments: Option<GithubDeploymentsConfig>,
}

/// `release_notify.github.deployments`: present (even `{}`) turns deployments on for every
/// environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubDeploymentsConfig {
    /// Environment → the URLs its deployment statuses carry.
    #[serde(default)]
    pub environments: BTreeMap<String, DeploymentEnvironmentConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentEnvironmentConfig {
    /// The statuses' `environment_url`: where the environment is reached (the service's URL
    /// there), shown by GitHub as "View deployment".
    #[serde(default)]
    pub url: Option<String>,
    /// The statuses' `log_url`: where the rollout can be followed (an Argo CD application or
    /// a Flux dashboard page).
    #[serde(default)]
    pub log_url: Option<String>,
    /// The deployment's `production_environment`; GitHub's default when absent.
    #[serde(default)]
    pub production: Option<bool>,
}

fn default_github_api() -> String {
    "https://api.github.com".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaConfig {
    /// Grafana's base URL; annotations go to `{url}/api/annotations`.
    pub url: String,
    /// A service account token, sent as `Authorization: Bearer`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Limit the annotation to one dashboard; without it the annotation is organisation-wide.
    #[serde(default)]
    pub dashboard_uid: Option<String>,
}

impl ReleaseNotifyConfig {
    pub fn is_empty(&self) -> bool {
        self.slack.is_empty() && self.github.is_none() && self.grafana.is_none()
    }

    pub(crate) fn expand_variables(
        &mut self,
        expand: &mut dyn FnMut(&mut String, &str) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        for (env, slack) in &mut self.slack {
            expand(
                slack.webhook_url.expose_mut(),
                &format!("release_notify.slack.{env}.webhook_url"),
            )?;
        }
        if let Some(github) = &mut self.github {
            expand(&mut github.api_url, "release_notify.github.api_url")?;
            expand(github.token.expose_mut(), "release_notify.github.token")?;
            for (env, target) in github
                .deployments
                .iter_mut()
                .flat_map(|d| d.environments.iter_mut())
            {
                let at = format!("release_notify.github.deployments.environments.{env}");
                if let Some(url) = &mut target.url {
                    expand(url, &format!("{at}.url"))?;
                }
                if let Some(url) = &mut target.log_url {
                    expand(url, &format!("{at}.log_url"))?;
                }
            }
        }
        if let Some(grafana) = &mut self.grafana {
            expand(&mut grafana.url, "release_notify.grafana.url")?;
            if let Some(token) = &mut grafana.token {
                expand(token.expose_mut(), "release_notify.grafana.token")?;
            }
        }
        Ok(())
    }

    pub(crate) fn validate(&self, config: &crate::Config) -> Result<(), (String, String)> {
        let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        for (env, slack) in &self.slack {
            let field = format!("release_notify.slack.{env}");
            if !config.environments.iter().any(|e| &e.name == env) {
                return Err((field, format!("`{env}` is not a configured environment")));
            }
            if !http(slack.webhook_url.expose()) {
                return Err((
                    format!("{field}.webhook_url"),
                    "must be an http:// or https:// URL".into(),
                ));
            }
        }
        if let Some(github) = &self.github {
            if !http(&github.api_url) {
                return Err((
                    "release_notify.github.api_url".into(),
                    "must be an http:// or https:// URL".into(),
                ));
            }
            if let Some(repo) = &github.repository
                && repo.split('/').filter(|p| !p.is_empty()).count() != 2
            {
                return Err((
                    "release_notify.github.repository".into(),
                    format!("`{repo}` is not `owner/repo`"),
                ));
            }
            for (env, target) in github
                .deployments
                .iter()
                .flat_map(|d| d.environments.iter())
            {
                let at = format!("release_notify.github.deployments.environments.{env}");
                if !config.environments.iter().any(|e| &e.name == env) {
                    return Err((at, format!("`{env}` is not a configured environment")));
                }
                for (field, url) in [("url", &target.url), ("log_url", &target.log_url)] {
                    if let Some(url) = url
                        && !http(url)
                    {
                        return Err((
                            format!("{at}.{field}"),
                            "must be an http:// or https:// URL".into(),
                        ));
                    }
                }
            }
        }
        if let Some(grafana) = &self.grafana
            && !http(&grafana.url)
        {
            return Err((
                "release_notify.grafana.url".into(),
                "must be an http:// or https:// URL".into(),
            ));
        }
        Ok(())
    }
}
