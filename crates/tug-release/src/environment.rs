//! Environments in promotion order.
//!
//! Configuration is one flat list in which each environment names the environment it is promoted
//! from with `after`:
//!
//! ```yaml
//! environments:
//!   - { name: dev, repository: platform, branch: main }
//!   - { name: staging, after: dev }
//!   - { name: prod, after: staging }
//!   - { name: perf, after: dev }
//! ```
//!
//! An environment without `after` starts a chain (artifacts reach it by release or auto-release);
//! several environments may follow the same one, so chains may branch (`dev → staging → prod` and
//! `dev → perf` above). Each environment has at most one predecessor, which is what `promote` needs
//! to know where to take the artifact from.

use serde::{Deserialize, Serialize};

use crate::validate::path_component_problem;

/// One environment as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: String,
    /// The environment this one is promoted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The configured repository holding this environment's manifests, when not the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The branch of that repository, when not its default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

impl Environment {
    /// An environment that starts a chain.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            after: None,
            repository: None,
            branch: None,
        }
    }

    /// An environment promoted from `after`.
    #[must_use]
    pub fn after(name: impl Into<String>, after: impl Into<String>) -> Self {
        Self {
            after: Some(after.into()),
            ..Self::new(name)
        }
    }
}

/// What is wrong with the environments configuration; each variant names the environment at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    #[error("environments[{index}]: name {problem}")]
    InvalidName { index: usize, problem: String },
    #[error(
        "environment '{name}' is defined twice (environments[{first}] and environments[{second}])"
    )]
    Duplicate {
        name: String,
        first: usize,
        second: usize,
    },
    #[error("environment '{name}' comes after '{after}', which is not a defined environment")]
    UnknownPredecessor { name: String, after: String },
    #[error("environment '{name}' comes after itself")]
    SelfPredecessor { name: String },
    #[error("environments {} form a cycle: each comes after the one before it", .cycle.join(" → "))]
    Cycle { cycle: Vec<String> },
    #[error("environment '{0}' is not defined")]
    Unknown(String),
}

/// Validated environments, kept in promotion order: every environment comes after its
/// predecessor; otherwise the configured order is kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Environments {
    ordered: Vec<Environment>,
}

impl Environments {
    /// Validates names (unique, usable as directory names), predecessors (defined, no cycles).
    ///
    /// # Errors
    /// The first problem found, naming the environment at fault.
    pub fn new(environments: Vec<Environment>) -> Result<Self, EnvironmentError> {
        for (index, env) in environments.iter().enumerate() {
            if let Some(problem) = path_component_problem(&env.name) {
                return Err(EnvironmentError::InvalidName { index, problem });
            }
            if let Some(first) = environments[..index]
                .iter()
                .position(|e| e.name == env.name)
            {
                return Err(EnvironmentError::Duplicate {
                    name: env.name.clone(),
                    first,
                    second: index,
                });
            }
        }
        for env in &environments {
            if let Some(after) = &env.after {
                if *after == env.name {
                    return Err(EnvironmentError::SelfPredecessor {
                        name: env.name.clone(),
                    });
                }
                if !environments.iter().any(|e| e.name == *after) {
                    return Err(EnvironmentError::UnknownPredecessor {
                        name: env.name.clone(),
                        after: after.clone(),
                    });
                }
            }
        }
        for env in &environments {
            // Following predecessors from any environment must reach a chain start within as many
            // steps as there are environments; otherwise the walk is going round a cycle.
            let mut path = vec![env.name.clone()];
            let mut current = env;
            while let Some(after) = &current.after {
                if let Some(start) = path.iter().position(|n| n == after) {
                    // Written in promotion direction, starting and ending at the repeated name.
                    let mut cycle = vec![after.clone()];
                    cycle.extend(path[start..].iter().rev().cloned());
                    return Err(EnvironmentError::Cycle { cycle });
                }
                path.push(after.clone());
                match environments.iter().find(|e| e.name == *after) {
                    Some(next) => current = next,
                    None => break,
                }
            }
        }
        // Stable topological order: repeatedly take, in configured order, every environment whose
        // predecessor is already placed. Terminates because there are no cycles.
        let mut ordered: Vec<Environment> = Vec::with_capacity(environments.len());
        let mut remaining = environments;
        while !remaining.is_empty() {
            let (ready, waiting): (Vec<_>, Vec<_>) = remaining.into_iter().partition(|e| {
                e.after
                    .as_ref()
                    .is_none_or(|a| ordered.iter().any(|o| o.name == *a))
            });
            ordered.extend(ready);
            remaining = waiting;
        }
        Ok(Self { ordered })
    }

    /// All environments in promotion order.
    pub fn iter(&self) -> std::slice::Iter<'_, Environment> {
        self.ordered.iter()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// The environment with this name.
    ///
    /// # Errors
    /// [`EnvironmentError::Unknown`] naming the environment.
    pub fn get(&self, name: &str) -> Result<&Environment, EnvironmentError> {
        self.ordered
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| EnvironmentError::Unknown(name.to_owned()))
    }

    /// The environment `env` is promoted from; `None` when `env` starts a chain.
    ///
    /// # Errors
    /// [`EnvironmentError::Unknown`] when `env` is not defined.
    pub fn predecessor(&self, env: &str) -> Result<Option<&Environment>, EnvironmentError> {
        match &self.get(env)?.after {
            Some(after) => self.get(after).map(Some),
            None => Ok(None),
        }
    }

    /// The environments promoted from `env`, in promotion order.
    ///
    /// # Errors
    /// [`EnvironmentError::Unknown`] when `env` is not defined.
    pub fn successors(&self, env: &str) -> Result<Vec<&Environment>, EnvironmentError> {
        self.get(env)?;
        Ok(self
            .ordered
            .iter()
            .filter(|e| e.after.as_deref() == Some(env))
            .collect())
    }

    /// The chain leading to `env`, from its chain start to `env` itself.
    ///
    /// # Errors
    /// [`EnvironmentError::Unknown`] when `env` is not defined.
    pub fn chain_to(&self, env: &str) -> Result<Vec<&Environment>, EnvironmentError> {
        let mut chain = vec![self.get(env)?];
        while let Some(previous) = self.predecessor(&chain[chain.len() - 1].name)? {
            chain.push(previous);
        }
        chain.reverse();
        Ok(chain)
    }
}

impl<'a> IntoIterator for &'a Environments {
    type Item = &'a Environment;
    type IntoIter = std::slice::Iter<'a, Environment>;

    fn into_iter(self) -> Self::IntoIter {
        self.ordered.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(envs: &Environments) -> Vec<&str> {
        envs.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn orders_environments_after_their_predecessors() {
        let envs = Environments::new(vec![
            Environment::after("prod", "staging"),
            Environment::after("perf", "dev"),
            Environment::after("staging", "dev"),
            Environment::new("dev"),
        ])
        .unwrap();
        assert_eq!(names(&envs), ["dev", "perf", "staging", "prod"]);
        assert_eq!(
            envs.predecessor("prod").unwrap().map(|e| e.name.as_str()),
            Some("staging")
        );
        assert_eq!(envs.predecessor("dev").unwrap(), None);
        let successors: Vec<_> = envs
            .successors("dev")
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(successors, ["perf", "staging"]);
        let chain: Vec<_> = envs
            .chain_to("prod")
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(chain, ["dev", "staging", "prod"]);
    }

    #[test]
    fn reads_the_documented_configuration_shape() {
        let json = r#"[
            {"name": "dev", "repository": "platform", "branch": "main"},
            {"name": "staging", "after": "dev"},
            {"name": "prod", "after": "staging"}
        ]"#;
        let envs: Vec<Environment> = serde_json::from_str(json).unwrap();
        let envs = Environments::new(envs).unwrap();
        assert_eq!(
            envs.get("dev").unwrap().repository.as_deref(),
            Some("platform")
        );
        assert_eq!(names(&envs), ["dev", "staging", "prod"]);
    }

    #[test]
    fn configuration_errors_name_the_environment() {
        let cases: Vec<(Vec<Environment>, &str)> = vec![
            (
                vec![Environment::new("dev"), Environment::new("dev")],
                "environment 'dev' is defined twice (environments[0] and environments[1])",
            ),
            (
                vec![Environment::new("dev"), Environment::after("prod", "qa")],
                "environment 'prod' comes after 'qa', which is not a defined environment",
            ),
            (
                vec![Environment::after("dev", "dev")],
                "environment 'dev' comes after itself",
            ),
            (
                vec![
                    Environment::new("dev"),
                    Environment::after("a", "c"),
                    Environment::after("b", "a"),
                    Environment::after("c", "b"),
                ],
                "environments a → b → c → a form a cycle: each comes after the one before it",
            ),
            (
                vec![Environment::new("../prod")],
                "environments[0]: name '../prod'",
            ),
        ];
        for (envs, expected) in cases {
            let err = Environments::new(envs).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}\n expected {expected}");
        }
    }

    #[test]
    fn unknown_environment_lookups_name_it() {
        let envs = Environments::new(vec![Environment::new("dev")]).unwrap();
        assert_eq!(
            envs.predecessor("prod").unwrap_err().to_string(),
            "environment 'prod' is not defined"
        );
    }

    #[test]
    fn unknown_configuration_fields_are_refused() {
        let err =
            serde_json::from_str::<Environment>(r#"{"name": "dev", "befor": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `befor`"), "{err}");
    }
}
