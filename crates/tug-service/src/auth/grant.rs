//! Grants: verbs × services × environments × repositories × branches × paths.
//!
//! A call names what it touches ([`Target`]); it is allowed when one of the caller's grants
//! holds its verb and matches every dimension the call names. A dimension the call does not
//! name is not checked: a direct deploy names no service, a job listing names nothing but its
//! verb. This keeps one rule for every call instead of a table of exceptions.

use std::fmt;

use crate::config::{GrantConfig, VerbName};

use super::branch_matches;

/// What a call does, for grants and 403 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Deploy,
    ArtifactPush,
    Release,
    Promote,
    Rollback,
    Unpin,
    PolicyWrite,
    Reindex,
    RolloutReport,
    Read,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Deploy => "deploy",
            Verb::ArtifactPush => "artifact.push",
            Verb::Release => "release",
            Verb::Promote => "promote",
            Verb::Rollback => "rollback",
            Verb::Unpin => "unpin",
            Verb::PolicyWrite => "policy.write",
            Verb::Reindex => "reindex",
            Verb::RolloutReport => "rollout.report",
            Verb::Read => "read",
        }
    }

    fn named_by(self, name: VerbName) -> bool {
        matches!(
            (name, self),
            (VerbName::All, _)
                | (VerbName::Deploy, Verb::Deploy)
                | (VerbName::ArtifactPush, Verb::ArtifactPush)
                | (VerbName::Release, Verb::Release)
                | (VerbName::Promote, Verb::Promote)
                | (VerbName::Rollback, Verb::Rollback)
                | (VerbName::Unpin, Verb::Unpin)
                | (VerbName::PolicyWrite, Verb::PolicyWrite)
                | (VerbName::Reindex, Verb::Reindex)
                | (VerbName::RolloutReport, Verb::RolloutReport)
                | (VerbName::Read, Verb::Read)
        )
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one call touches; `None` for a dimension it does not name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub service: Option<String>,
    pub environment: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    /// Files a direct deploy changes (paths of its updates); empty when it names none.
    pub paths: Vec<String>,
}

impl Target {
    pub fn new() -> Self {
        Target::default()
    }

    #[must_use]
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    #[must_use]
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    #[must_use]
    pub fn branch(mut self, repository: impl Into<String>, branch: impl Into<String>) -> Self {
        self.repository = Some(repository.into());
        self.branch = Some(branch.into());
        self
    }

    #[must_use]
    pub fn paths(mut self, paths: impl IntoIterator<Item = String>) -> Self {
        self.paths = paths.into_iter().collect();
        self
    }

    /// `release on service `api`, environment `prod`, repository `platform`, branch `main``.
    pub fn describe(&self, verb: Verb) -> String {
        let mut parts = Vec::new();
        for (label, value) in [
            ("service", &self.service),
            ("environment", &self.environment),
            ("repository", &self.repository),
            ("branch", &self.branch),
        ] {
            if let Some(value) = value {
                parts.push(format!("{label} `{value}`"));
            }
        }
        if !self.paths.is_empty() {
            let quoted: Vec<String> = self.paths.iter().map(|p| format!("`{p}`")).collect();
            parts.push(format!("paths {}", quoted.join(", ")));
        }
        if parts.is_empty() {
            format!("`{verb}`")
        } else {
            format!("`{verb}` on {}", parts.join(", "))
        }
    }

    /// The missing grant as JSON, for `details.missingGrant`.
    pub fn to_json(&self, verb: Verb) -> serde_json::Value {
        let mut value = serde_json::json!({ "verb": verb.as_str() });
        for (key, field) in [
            ("service", &self.service),
            ("environment", &self.environment),
            ("repository", &self.repository),
            ("branch", &self.branch),
        ] {
            if let Some(field) = field {
                value[key] = serde_json::Value::String(field.clone());
            }
        }
        if !self.paths.is_empty() {
            value["paths"] = serde_json::json!(self.paths);
        }
        value
    }
}

/// A list of allowed values; `None` allows all.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed(Option<Vec<String>>);

impl Allowed {
    fn from_config(list: Option<&Vec<String>>) -> Allowed {
        Allowed(list.filter(|l| !l.iter().any(|p| p == "*")).cloned())
    }

    fn admits(&self, value: Option<&str>, matches: fn(&str, &str) -> bool) -> bool {
        match (&self.0, value) {
            (None, _) | (_, None) => true,
            (Some(patterns), Some(value)) => patterns.iter().any(|p| matches(p, value)),
        }
    }
}

fn exact(pattern: &str, value: &str) -> bool {
    pattern == value
}

/// What a credential may do (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    verbs: Vec<VerbName>,
    services: Allowed,
    environments: Allowed,
    repositories: Allowed,
    branches: Allowed,
    paths: Allowed,
}

impl Grant {
    pub fn from_config(config: &GrantConfig) -> Grant {
        Grant {
            verbs: config.verbs.clone(),
            services: Allowed::from_config(config.services.as_ref()),
            environments: Allowed::from_config(config.environments.as_ref()),
            repositories: Allowed::from_config(config.repositories.as_ref()),
            branches: Allowed::from_config(config.branches.as_ref()),
            paths: Allowed::from_config(config.paths.as_ref()),
        }
    }

    /// Everything: `auth.mode: none`.
    pub fn all() -> Grant {
        Grant {
            verbs: vec![VerbName::All],
            services: Allowed(None),
            environments: Allowed(None),
            repositories: Allowed(None),
            branches: Allowed(None),
            paths: Allowed(None),
        }
    }

    pub fn allows(&self, verb: Verb, target: &Target) -> bool {
        self.verbs.iter().any(|&name| verb.named_by(name))
            && self.services.admits(target.service.as_deref(), exact)
            && self
                .environments
                .admits(target.environment.as_deref(), exact)
            && self
                .repositories
                .admits(target.repository.as_deref(), exact)
            && self
                .branches
                .admits(target.branch.as_deref(), branch_matches)
            && target
                .paths
                .iter()
                .all(|path| self.paths.admits(Some(path), path_matches))
    }
}

/// A path glob: `*` within one path segment, `**` across segments; a leading `/` or `./` on
/// either side is ignored, so `apps/api/**` matches `./apps/api/kustomization.yaml`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    fn clean(p: &str) -> &str {
        let p = p.strip_prefix("./").unwrap_or(p);
        p.strip_prefix('/').unwrap_or(p)
    }
    branch_matches(clean(pattern), clean(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(verbs: &[VerbName]) -> GrantConfig {
        GrantConfig {
            verbs: verbs.to_vec(),
            services: None,
            environments: None,
            repositories: None,
            branches: None,
            paths: None,
        }
    }

    #[test]
    fn verbs_are_checked_and_star_means_all() {
        let deploy_only = Grant::from_config(&grant(&[VerbName::Deploy]));
        assert!(deploy_only.allows(Verb::Deploy, &Target::new()));
        assert!(!deploy_only.allows(Verb::Release, &Target::new()));
        let all = Grant::from_config(&grant(&[VerbName::All]));
        for verb in [Verb::PolicyWrite, Verb::Read, Verb::RolloutReport] {
            assert!(all.allows(verb, &Target::new()));
        }
    }

    #[test]
    fn a_dimension_limits_only_calls_that_name_it() {
        let mut config = grant(&[VerbName::Release, VerbName::Deploy]);
        config.services = Some(vec!["api".into()]);
        config.environments = Some(vec!["dev".into()]);
        config.repositories = Some(vec!["platform".into()]);
        let g = Grant::from_config(&config);
        let dev_api = Target::new()
            .service("api")
            .environment("dev")
            .branch("platform", "main");
        assert!(g.allows(Verb::Release, &dev_api));
        assert!(!g.allows(Verb::Release, &dev_api.clone().environment("prod")));
        assert!(!g.allows(Verb::Release, &dev_api.clone().service("web")));
        // A direct deploy names a repository and branch, no service.
        assert!(g.allows(Verb::Deploy, &Target::new().branch("platform", "main")));
        assert!(!g.allows(Verb::Deploy, &Target::new().branch("apps", "main")));
    }

    #[test]
    fn branches_and_paths_are_globs() {
        let mut config = grant(&[VerbName::Deploy]);
        config.branches = Some(vec!["release/*".into()]);
        config.paths = Some(vec!["apps/api/**".into()]);
        let g = Grant::from_config(&config);
        let ok = Target::new()
            .branch("platform", "release/1.2")
            .paths(["apps/api/overlays/dev".to_owned()]);
        assert!(g.allows(Verb::Deploy, &ok));
        assert!(g.allows(
            Verb::Deploy,
            &ok.clone().paths(["./apps/api/base".to_owned()])
        ));
        assert!(!g.allows(Verb::Deploy, &ok.clone().branch("platform", "main")));
        // Every path must be covered, not just one.
        assert!(
            !g.allows(
                Verb::Deploy,
                &ok.clone()
                    .paths(["apps/api/base".to_owned(), "apps/web/base".to_owned()])
            )
        );
    }

    #[test]
    fn describe_names_the_missing_grant() {
        let target = Target::new()
            .service("api")
            .environment("prod")
            .branch("platform", "main");
        assert_eq!(
            target.describe(Verb::Release),
            "`release` on service `api`, environment `prod`, repository `platform`, branch `main`"
        );
        assert_eq!(Target::new().describe(Verb::Read), "`read`");
        assert_eq!(
            target.to_json(Verb::Release),
            serde_json::json!({"verb": "release", "service": "api", "environment": "prod",
                "repository": "platform", "branch": "main"})
        );
    }
}
