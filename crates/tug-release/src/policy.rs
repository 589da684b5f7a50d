//! Release policies of one service: `policies/<service>.json` in the release manager's format,
//! plus the branch restrictions the server imposes on every service.
//!
//! ```json
//! {
//!   "service": "example",
//!   "autoReleases": [
//!     { "id": "auto-release-master-dev", "branch": "master", "environment": "dev" }
//!   ],
//!   "branchRestrictions": [
//!     { "id": "branch-restriction-prod", "branchRegex": "^master$", "environment": "prod" }
//!   ]
//! }
//! ```
//!
//! As in the release manager: one auto-release and one branch restriction per environment
//! (applying another replaces it in place), ids are `auto-release-<branch>-<env>` and
//! `branch-restriction-<env>`, the file is written as Go's encoder writes it (two-space indent,
//! trailing newline, policies in the order they were first applied), and a branch regex matches
//! anywhere in the branch name unless anchored with `^…$`.
//!
//! Server-wide restrictions (`env=regex`) take precedence over a service's own restriction for the
//! same environment, are listed with the service's policies and can never be deleted. Their ids,
//! `global-branch-restriction-<env>`, exist only in memory: they are never written to a file.

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::json;

/// Deploy every new artifact of `branch` to `environment`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoReleasePolicy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
}

/// Release to `environment` only artifacts from branches matching `branch_regex`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BranchRestrictionPolicy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch_regex: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
}

/// The policies file of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePolicies {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_releases: Vec<AutoReleasePolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branch_restrictions: Vec<BranchRestrictionPolicy>,
}

/// The id the release manager gives an auto-release policy.
#[must_use]
pub fn auto_release_id(branch: &str, env: &str) -> String {
    format!("auto-release-{branch}-{env}")
}

/// The id the release manager gives a branch-restriction policy.
#[must_use]
pub fn branch_restriction_id(env: &str) -> String {
    format!("branch-restriction-{env}")
}

/// The id of a server-wide branch restriction (never written to a policies file).
#[must_use]
pub fn global_branch_restriction_id(env: &str) -> String {
    format!("global-branch-restriction-{env}")
}

/// Whether two branch names are the same branch, with `/` and `_` taken as equal: artifact ids
/// and some CI pipelines write `feature/x` as `feature_x`.
#[must_use]
pub fn same_branch(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (matches!(x, b'/' | b'_') && matches!(y, b'/' | b'_')))
}

/// What is wrong with a policies file, a policy change or the server's restrictions; every variant
/// names the service, the environment and the policies involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policies of service '{service}' are not valid at {path}: {message}")]
    Format {
        service: String,
        path: String,
        message: String,
    },
    #[error("policies file of service '{service}' names service '{found}'")]
    ServiceMismatch { service: String, found: String },
    #[error("policies of service '{service}': {path} is empty")]
    Empty { service: String, path: String },
    #[error(
        "policies of service '{service}': {first} and {second} are both for environment '{environment}'; only one {kind} policy per environment is allowed"
    )]
    DuplicateEnvironment {
        service: String,
        environment: String,
        kind: &'static str,
        first: String,
        second: String,
    },
    #[error(
        "branch regex '{regex}' of policy '{policy}' is not a valid regular expression: {message}"
    )]
    InvalidRegex {
        policy: String,
        regex: String,
        message: String,
    },
    #[error("policy '{new}' conflicts with policy '{existing}': {reason}")]
    Conflict {
        new: String,
        existing: String,
        reason: String,
    },
    #[error(
        "policy '{id}' is a global policy of the server (for environment '{environment}') and cannot be deleted"
    )]
    GlobalNotDeletable { id: String, environment: String },
    #[error("service '{service}' has no policy '{id}'{}", known_ids(.known, .global))]
    UnknownId {
        service: String,
        id: String,
        known: Vec<String>,
        /// The server's global policies (which cannot be deleted).
        global: Vec<String>,
    },
    #[error("global branch restriction '{item}' {problem}")]
    GlobalFormat { item: String, problem: String },
    #[error("policies of service '{service}' could not be written as JSON: {message}")]
    Write { service: String, message: String },
}

fn known_ids(known: &[String], global: &[String]) -> String {
    let own = if known.is_empty() {
        "; it has no policies of its own".to_owned()
    } else {
        format!("; its policies are {}", known.join(", "))
    };
    if global.is_empty() {
        own
    } else {
        format!(
            "{own}; the server's global policies (which cannot be deleted) are {}",
            global.join(", ")
        )
    }
}

/// A release that policies forbid, naming the policy at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "branch '{branch}' of service '{service}' may not be released to '{environment}': {} '{policy}' allows only branches matching '{branch_regex}'{}",
    if *.global { "global branch-restriction policy" } else { "branch-restriction policy" },
    .invalid_regex.as_ref().map(|e| format!(" (which is not a valid regular expression: {e})")).unwrap_or_default()
)]
pub struct PolicyViolation {
    pub service: String,
    pub environment: String,
    pub branch: String,
    pub policy: String,
    pub branch_regex: String,
    pub global: bool,
    /// Set when a restriction's regex no longer compiles; such a restriction forbids every branch.
    pub invalid_regex: Option<String>,
}

/// Branch restrictions the server imposes on every service (`--policy-branch-restrictions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalBranchRestrictions {
    restrictions: Vec<BranchRestrictionPolicy>,
}

impl GlobalBranchRestrictions {
    /// Reads `env=regex` items, one per item. Only the first `=` separates, so regexes may hold `=`.
    ///
    /// # Errors
    /// A malformed item, two items for one environment, or an invalid regex, naming the item.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, PolicyError> {
        let mut restrictions: Vec<BranchRestrictionPolicy> = Vec::new();
        for item in items {
            let item = item.as_ref().trim();
            if item.is_empty() {
                continue;
            }
            let problem = |problem: String| PolicyError::GlobalFormat {
                item: item.to_owned(),
                problem,
            };
            let Some((env, regex)) = item.split_once('=') else {
                return Err(problem(
                    "is not of the form <environment>=<branch regex>".to_owned(),
                ));
            };
            let (env, regex) = (env.trim(), regex.trim());
            if env.is_empty() || regex.is_empty() {
                return Err(problem(
                    "has an empty environment or branch regex".to_owned(),
                ));
            }
            if restrictions.iter().any(|r| r.environment == env) {
                return Err(problem(format!(
                    "is a second restriction for environment '{env}'"
                )));
            }
            if let Err(e) = Regex::new(regex) {
                return Err(problem(format!("has an invalid regular expression: {e}")));
            }
            restrictions.push(BranchRestrictionPolicy {
                id: global_branch_restriction_id(env),
                branch_regex: regex.to_owned(),
                environment: env.to_owned(),
            });
        }
        Ok(Self { restrictions })
    }

    /// Reads a comma-separated `env=regex,env=regex` list (the release manager's flag format).
    ///
    /// # Errors
    /// As [`GlobalBranchRestrictions::parse`].
    pub fn parse_list(list: &str) -> Result<Self, PolicyError> {
        Self::parse(&list.split(',').collect::<Vec<_>>())
    }

    pub fn iter(&self) -> std::slice::Iter<'_, BranchRestrictionPolicy> {
        self.restrictions.iter()
    }

    #[must_use]
    pub fn for_environment(&self, env: &str) -> Option<&BranchRestrictionPolicy> {
        self.restrictions.iter().find(|r| r.environment == env)
    }

    fn by_id(&self, id: &str) -> Option<&BranchRestrictionPolicy> {
        self.restrictions.iter().find(|r| r.id == id)
    }
}

/// A branch restriction in force, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveRestriction<'a> {
    pub policy: &'a BranchRestrictionPolicy,
    pub global: bool,
}

/// What `policy list` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyList<'a> {
    pub auto_releases: &'a [AutoReleasePolicy],
    /// Restrictions in force: the server's first, then the service's own.
    pub branch_restrictions: Vec<EffectiveRestriction<'a>>,
    /// The service's own restrictions that a server-wide one overrides.
    pub overridden: Vec<&'a BranchRestrictionPolicy>,
}

fn regex_matches(regex: &str, branch: &str) -> Result<bool, String> {
    Regex::new(regex)
        .map(|r| r.is_match(branch))
        .map_err(|e| e.to_string())
}

impl ServicePolicies {
    /// No policies yet for `service`.
    #[must_use]
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            ..Self::default()
        }
    }

    /// Reads `policies/<service>.json`. An empty file is a service without policies, as in the
    /// release manager.
    ///
    /// # Errors
    /// [`PolicyError::Format`] with the JSON path for malformed files and unknown fields; other
    /// variants for a file of another service, duplicate environments or invalid regexes.
    pub fn from_json(service: &str, json: &str) -> Result<Self, PolicyError> {
        if json.trim().is_empty() {
            return Ok(Self::new(service));
        }
        let mut policies: Self = json::from_str(json).map_err(|fault| PolicyError::Format {
            service: service.to_owned(),
            path: fault.location().to_owned(),
            message: fault.message,
        })?;
        if policies.service.is_empty() {
            policies.service = service.to_owned();
        } else if policies.service != service {
            return Err(PolicyError::ServiceMismatch {
                service: service.to_owned(),
                found: policies.service,
            });
        }
        policies.validate()?;
        Ok(policies)
    }

    /// Writes the file as the release manager does (byte for byte for files it wrote).
    ///
    /// # Errors
    /// Only when JSON serialisation itself fails.
    pub fn to_json(&self) -> Result<String, PolicyError> {
        json::to_go_pretty(self).map_err(|e| PolicyError::Write {
            service: self.service.clone(),
            message: e.to_string(),
        })
    }

    /// Whether any policy is set (the release manager treats a file without any as absent).
    #[must_use]
    pub fn has_policies(&self) -> bool {
        !self.auto_releases.is_empty() || !self.branch_restrictions.is_empty()
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let empty = |path: String| PolicyError::Empty {
            service: self.service.clone(),
            path,
        };
        for (i, p) in self.auto_releases.iter().enumerate() {
            for (field, value) in [
                ("id", &p.id),
                ("branch", &p.branch),
                ("environment", &p.environment),
            ] {
                if value.is_empty() {
                    return Err(empty(format!("autoReleases[{i}].{field}")));
                }
            }
            if let Some(first) = self.auto_releases[..i]
                .iter()
                .find(|q| q.environment == p.environment)
            {
                return Err(PolicyError::DuplicateEnvironment {
                    service: self.service.clone(),
                    environment: p.environment.clone(),
                    kind: "auto-release",
                    first: first.id.clone(),
                    second: p.id.clone(),
                });
            }
        }
        for (i, p) in self.branch_restrictions.iter().enumerate() {
            for (field, value) in [
                ("id", &p.id),
                ("branchRegex", &p.branch_regex),
                ("environment", &p.environment),
            ] {
                if value.is_empty() {
                    return Err(empty(format!("branchRestrictions[{i}].{field}")));
                }
            }
            if let Some(first) = self.branch_restrictions[..i]
                .iter()
                .find(|q| q.environment == p.environment)
            {
                return Err(PolicyError::DuplicateEnvironment {
                    service: self.service.clone(),
                    environment: p.environment.clone(),
                    kind: "branch-restriction",
                    first: first.id.clone(),
                    second: p.id.clone(),
                });
            }
            if let Err(e) = Regex::new(&p.branch_regex) {
                return Err(PolicyError::InvalidRegex {
                    policy: p.id.clone(),
                    regex: p.branch_regex.clone(),
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The branch restriction in force for `env`: the server's if it has one, else the service's.
    #[must_use]
    pub fn restriction_for<'a>(
        &'a self,
        global: &'a GlobalBranchRestrictions,
        env: &str,
    ) -> Option<EffectiveRestriction<'a>> {
        if let Some(policy) = global.for_environment(env) {
            return Some(EffectiveRestriction {
                policy,
                global: true,
            });
        }
        self.branch_restrictions
            .iter()
            .find(|r| r.environment == env)
            .map(|policy| EffectiveRestriction {
                policy,
                global: false,
            })
    }

    /// Everything `policy list` shows.
    #[must_use]
    pub fn list<'a>(&'a self, global: &'a GlobalBranchRestrictions) -> PolicyList<'a> {
        let mut branch_restrictions: Vec<_> = global
            .iter()
            .map(|policy| EffectiveRestriction {
                policy,
                global: true,
            })
            .collect();
        let mut overridden = Vec::new();
        for policy in &self.branch_restrictions {
            if global.for_environment(&policy.environment).is_some() {
                overridden.push(policy);
            } else {
                branch_restrictions.push(EffectiveRestriction {
                    policy,
                    global: false,
                });
            }
        }
        PolicyList {
            auto_releases: &self.auto_releases,
            branch_restrictions,
            overridden,
        }
    }

    /// Whether an artifact of `branch` may be released to `env`.
    ///
    /// # Errors
    /// [`PolicyViolation`] naming the restriction that forbids it.
    pub fn check_release(
        &self,
        global: &GlobalBranchRestrictions,
        env: &str,
        branch: &str,
    ) -> Result<(), Box<PolicyViolation>> {
        let Some(restriction) = self.restriction_for(global, env) else {
            return Ok(());
        };
        let (allowed, invalid_regex) = match regex_matches(&restriction.policy.branch_regex, branch)
        {
            Ok(allowed) => (allowed, None),
            Err(e) => (false, Some(e)),
        };
        if allowed {
            return Ok(());
        }
        Err(Box::new(PolicyViolation {
            service: self.service.clone(),
            environment: env.to_owned(),
            branch: branch.to_owned(),
            policy: restriction.policy.id.clone(),
            branch_regex: restriction.policy.branch_regex.clone(),
            global: restriction.global,
            invalid_regex,
        }))
    }

    /// The environments a new artifact of `branch` is auto-released to, in policy order.
    /// Callers still check each with [`ServicePolicies::check_release`]: a server-wide
    /// restriction added after the auto-release may forbid it.
    #[must_use]
    pub fn auto_release_targets(&self, branch: &str) -> Vec<String> {
        self.auto_releases
            .iter()
            .filter(|p| same_branch(&p.branch, branch))
            .map(|p| p.environment.clone())
            .collect()
    }

    /// Sets the auto-release of `branch` to `env`, replacing the environment's previous one.
    /// Returns the policy id.
    ///
    /// # Errors
    /// An empty branch or environment, or [`PolicyError::Conflict`] when the branch restriction in
    /// force for `env` does not allow `branch`.
    pub fn apply_auto_release(
        &mut self,
        global: &GlobalBranchRestrictions,
        branch: &str,
        env: &str,
    ) -> Result<String, PolicyError> {
        self.require("branch", branch)?;
        self.require("environment", env)?;
        let id = auto_release_id(branch, env);
        if let Err(violation) = self.check_release(global, env, branch) {
            return Err(PolicyError::Conflict {
                existing: violation.policy.clone(),
                reason: format!(
                    "auto-release of branch '{branch}' to '{env}' would always be refused: {}branch-restriction policy '{}' allows only branches matching '{}'",
                    if violation.global { "global " } else { "" },
                    violation.policy,
                    violation.branch_regex
                ),
                new: id,
            });
        }
        let policy = AutoReleasePolicy {
            id: id.clone(),
            branch: branch.to_owned(),
            environment: env.to_owned(),
        };
        match self.auto_releases.iter_mut().find(|p| p.environment == env) {
            Some(existing) => *existing = policy,
            None => self.auto_releases.push(policy),
        }
        Ok(id)
    }

    /// Sets the branch restriction of `env`, replacing the environment's previous one. Returns
    /// the policy id.
    ///
    /// # Errors
    /// [`PolicyError::InvalidRegex`]; [`PolicyError::Conflict`] when a server-wide restriction
    /// governs `env` with another regex, or when an auto-release to `env` is of a branch the
    /// regex does not match.
    pub fn apply_branch_restriction(
        &mut self,
        global: &GlobalBranchRestrictions,
        env: &str,
        branch_regex: &str,
    ) -> Result<String, PolicyError> {
        self.require("environment", env)?;
        self.require("branch regex", branch_regex)?;
        let id = branch_restriction_id(env);
        let regex = Regex::new(branch_regex).map_err(|e| PolicyError::InvalidRegex {
            policy: id.clone(),
            regex: branch_regex.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(global) = global.for_environment(env)
            && global.branch_regex != branch_regex
        {
            return Err(PolicyError::Conflict {
                new: id,
                existing: global.id.clone(),
                reason: format!(
                    "the server restricts '{env}' to branches matching '{}' for every service; a service cannot override it",
                    global.branch_regex
                ),
            });
        }
        if let Some(auto) = self
            .auto_releases
            .iter()
            .find(|p| p.environment == env && !regex.is_match(&p.branch))
        {
            return Err(PolicyError::Conflict {
                new: id,
                existing: auto.id.clone(),
                reason: format!(
                    "auto-release policy '{}' releases branch '{}' to '{env}', which '{branch_regex}' does not match; delete it first",
                    auto.id, auto.branch
                ),
            });
        }
        let policy = BranchRestrictionPolicy {
            id: id.clone(),
            branch_regex: branch_regex.to_owned(),
            environment: env.to_owned(),
        };
        match self
            .branch_restrictions
            .iter_mut()
            .find(|p| p.environment == env)
        {
            Some(existing) => *existing = policy,
            None => self.branch_restrictions.push(policy),
        }
        Ok(id)
    }

    /// Deletes the policies with these ids, all or none. Returns how many were deleted.
    ///
    /// # Errors
    /// [`PolicyError::GlobalNotDeletable`] for a server-wide restriction,
    /// [`PolicyError::UnknownId`] for an id the service does not have (listing the ones it has).
    pub fn delete<S: AsRef<str>>(
        &mut self,
        global: &GlobalBranchRestrictions,
        ids: &[S],
    ) -> Result<usize, PolicyError> {
        for id in ids {
            let id = id.as_ref();
            if let Some(g) = global.by_id(id) {
                return Err(PolicyError::GlobalNotDeletable {
                    id: id.to_owned(),
                    environment: g.environment.clone(),
                });
            }
            let known = self.auto_releases.iter().any(|p| p.id == id)
                || self.branch_restrictions.iter().any(|p| p.id == id);
            if !known {
                return Err(PolicyError::UnknownId {
                    service: self.service.clone(),
                    id: id.to_owned(),
                    known: self
                        .auto_releases
                        .iter()
                        .map(|p| p.id.clone())
                        .chain(self.branch_restrictions.iter().map(|p| p.id.clone()))
                        .collect(),
                    global: global.restrictions.iter().map(|p| p.id.clone()).collect(),
                });
            }
        }
        let before = self.auto_releases.len() + self.branch_restrictions.len();
        let doomed = |id: &str| ids.iter().any(|d| d.as_ref() == id);
        self.auto_releases.retain(|p| !doomed(&p.id));
        self.branch_restrictions.retain(|p| !doomed(&p.id));
        Ok(before - self.auto_releases.len() - self.branch_restrictions.len())
    }

    fn require(&self, what: &str, value: &str) -> Result<(), PolicyError> {
        if value.trim().is_empty() {
            return Err(PolicyError::Empty {
                service: self.service.clone(),
                path: what.to_owned(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for EffectiveRestriction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} allows branches matching '{}'{}",
            self.policy.id,
            self.policy.environment,
            self.policy.branch_regex,
            if self.global { " (global)" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_global() -> GlobalBranchRestrictions {
        GlobalBranchRestrictions::default()
    }

    #[test]
    fn ids_follow_the_release_manager() {
        let mut policies = ServicePolicies::new("example");
        assert_eq!(
            policies
                .apply_auto_release(&no_global(), "master", "dev")
                .unwrap(),
            "auto-release-master-dev"
        );
        assert_eq!(
            policies
                .apply_branch_restriction(&no_global(), "prod", "^master$")
                .unwrap(),
            "branch-restriction-prod"
        );
        assert_eq!(
            policies.to_json().unwrap(),
            "{\n  \"service\": \"example\",\n  \"autoReleases\": [\n    {\n      \"id\": \"auto-release-master-dev\",\n      \"branch\": \"master\",\n      \"environment\": \"dev\"\n    }\n  ],\n  \"branchRestrictions\": [\n    {\n      \"id\": \"branch-restriction-prod\",\n      \"branchRegex\": \"^master$\",\n      \"environment\": \"prod\"\n    }\n  ]\n}\n"
        );
    }

    #[test]
    fn applying_again_replaces_the_environment_policy_in_place() {
        let mut policies = ServicePolicies::new("example");
        policies
            .apply_auto_release(&no_global(), "master", "dev")
            .unwrap();
        policies
            .apply_auto_release(&no_global(), "master", "staging")
            .unwrap();
        policies
            .apply_auto_release(&no_global(), "main", "dev")
            .unwrap();
        let ids: Vec<_> = policies
            .auto_releases
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["auto-release-main-dev", "auto-release-master-staging"]
        );
        assert_eq!(policies.auto_release_targets("master"), ["staging"]);
        assert_eq!(policies.auto_release_targets("main"), ["dev"]);
    }

    #[test]
    fn auto_release_targets_take_slash_and_underscore_as_equal() {
        let mut policies = ServicePolicies::new("example");
        policies
            .apply_auto_release(&no_global(), "feature/x", "dev")
            .unwrap();
        assert_eq!(policies.auto_release_targets("feature_x"), ["dev"]);
        assert!(policies.auto_release_targets("feature-x").is_empty());
    }

    #[test]
    fn auto_release_conflicting_with_a_restriction_names_both_policies() {
        let mut policies = ServicePolicies::new("example");
        policies
            .apply_branch_restriction(&no_global(), "prod", "^master$")
            .unwrap();
        let err = policies
            .apply_auto_release(&no_global(), "feature", "prod")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy 'auto-release-feature-prod' conflicts with policy 'branch-restriction-prod': auto-release of branch 'feature' to 'prod' would always be refused: branch-restriction policy 'branch-restriction-prod' allows only branches matching '^master$'"
        );
        assert!(policies.auto_releases.is_empty());
        policies
            .apply_auto_release(&no_global(), "master", "prod")
            .unwrap();
    }

    #[test]
    fn restriction_conflicting_with_an_auto_release_names_both_policies() {
        let mut policies = ServicePolicies::new("example");
        policies
            .apply_auto_release(&no_global(), "develop", "dev")
            .unwrap();
        let err = policies
            .apply_branch_restriction(&no_global(), "dev", "^master$")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy 'branch-restriction-dev' conflicts with policy 'auto-release-develop-dev': auto-release policy 'auto-release-develop-dev' releases branch 'develop' to 'dev', which '^master$' does not match; delete it first"
        );
        assert!(policies.branch_restrictions.is_empty());
    }

    #[test]
    fn invalid_regex_is_refused_with_the_policy_named() {
        let mut policies = ServicePolicies::new("example");
        let err = policies
            .apply_branch_restriction(&no_global(), "prod", "^(master")
            .unwrap_err();
        assert!(err.to_string().starts_with("branch regex '^(master' of policy 'branch-restriction-prod' is not a valid regular expression"), "{err}");
    }

    #[test]
    fn release_manager_regexes_compile() {
        let mut policies = ServicePolicies::new("example");
        policies
            .apply_branch_restriction(&no_global(), "prod", r"^(master|hotfix\/.+)$")
            .unwrap();
        assert!(
            policies
                .check_release(&no_global(), "prod", "hotfix/login")
                .is_ok()
        );
        assert!(
            policies
                .check_release(&no_global(), "prod", "feature/login")
                .is_err()
        );
    }

    #[test]
    fn check_release_names_the_policy_at_fault() {
        let global =
            GlobalBranchRestrictions::parse_list("production=^master$, dev=^development$").unwrap();
        let mut policies = ServicePolicies::new("example");
        policies
            .apply_branch_restriction(&global, "staging", "^(master|release/.+)$")
            .unwrap();
        assert!(
            policies
                .check_release(&global, "staging", "release/1.2")
                .is_ok()
        );
        assert!(policies.check_release(&global, "qa", "anything").is_ok());
        let err = policies
            .check_release(&global, "staging", "feature")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "branch 'feature' of service 'example' may not be released to 'staging': branch-restriction policy 'branch-restriction-staging' allows only branches matching '^(master|release/.+)$'"
        );
        let err = policies
            .check_release(&global, "production", "feature")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "branch 'feature' of service 'example' may not be released to 'production': global branch-restriction policy 'global-branch-restriction-production' allows only branches matching '^master$'"
        );
    }

    #[test]
    fn global_restrictions_override_local_ones_and_cannot_be_deleted() {
        let file = r#"{"service": "example", "branchRestrictions": [{"id": "branch-restriction-prod", "branchRegex": ".*", "environment": "prod"}]}"#;
        let mut policies = ServicePolicies::from_json("example", file).unwrap();
        let global = GlobalBranchRestrictions::parse(&["prod=^main$"]).unwrap();
        assert!(policies.check_release(&global, "prod", "feature").is_err());
        let list = policies.list(&global);
        assert_eq!(list.branch_restrictions.len(), 1);
        assert!(list.branch_restrictions[0].global);
        assert_eq!(list.overridden[0].id, "branch-restriction-prod");

        let err = policies
            .apply_branch_restriction(&global, "prod", ".*")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy 'branch-restriction-prod' conflicts with policy 'global-branch-restriction-prod': the server restricts 'prod' to branches matching '^main$' for every service; a service cannot override it"
        );
        let err = policies
            .apply_auto_release(&global, "feature", "prod")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("global branch-restriction policy 'global-branch-restriction-prod'"),
            "{err}"
        );

        let err = policies
            .delete(&global, &["global-branch-restriction-prod"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy 'global-branch-restriction-prod' is a global policy of the server (for environment 'prod') and cannot be deleted"
        );
        let err = ServicePolicies::new("example")
            .delete(&global, &["nosuch"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "service 'example' has no policy 'nosuch'; it has no policies of its own; the server's global policies (which cannot be deleted) are global-branch-restriction-prod"
        );
    }

    #[test]
    fn delete_is_all_or_nothing_and_names_unknown_ids() {
        let mut policies = ServicePolicies::new("example");
        policies
            .apply_auto_release(&no_global(), "master", "dev")
            .unwrap();
        policies
            .apply_branch_restriction(&no_global(), "prod", "^master$")
            .unwrap();
        let err = policies
            .delete(
                &no_global(),
                &["auto-release-master-dev", "auto-release-x-dev"],
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "service 'example' has no policy 'auto-release-x-dev'; its policies are auto-release-master-dev, branch-restriction-prod"
        );
        assert!(policies.has_policies());
        assert_eq!(
            policies
                .delete(
                    &no_global(),
                    &["auto-release-master-dev", "branch-restriction-prod"]
                )
                .unwrap(),
            2
        );
        assert!(!policies.has_policies());
        assert_eq!(
            policies.to_json().unwrap(),
            "{\n  \"service\": \"example\"\n}\n"
        );
        let err = policies
            .delete(&no_global(), &["branch-restriction-prod"])
            .unwrap_err();
        assert!(
            err.to_string().ends_with("; it has no policies of its own"),
            "{err}"
        );
    }

    #[test]
    fn global_restriction_list_errors_name_the_item() {
        for (list, expected) in [
            (
                "prod",
                "global branch restriction 'prod' is not of the form <environment>=<branch regex>",
            ),
            (
                "prod=",
                "global branch restriction 'prod=' has an empty environment or branch regex",
            ),
            (
                "prod=a,prod=b",
                "global branch restriction 'prod=b' is a second restriction for environment 'prod'",
            ),
            (
                "prod=(a",
                "global branch restriction 'prod=(a' has an invalid regular expression",
            ),
        ] {
            let err = GlobalBranchRestrictions::parse_list(list)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let global = GlobalBranchRestrictions::parse(&["prod=^(a|b=c)$", " "]).unwrap();
        assert_eq!(
            global.for_environment("prod").unwrap().branch_regex,
            "^(a|b=c)$"
        );
    }

    #[test]
    fn an_empty_file_is_a_service_without_policies() {
        let policies = ServicePolicies::from_json("example", "\n").unwrap();
        assert_eq!(policies, ServicePolicies::new("example"));
    }
}
