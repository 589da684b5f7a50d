//! The `rollout_feedback:` section: how Argo CD and Flux object names map to services.

use serde::Deserialize;

/// The `rollout_feedback:` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutFeedbackConfig {
    /// How an Argo CD Application or a Flux Kustomization/HelmRelease is named after the
    /// service and environment it deploys, tried in order: templates with `{service}` and
    /// `{env}`. A report whose revision is not a release commit is matched by its object name.
    #[serde(default = "default_names")]
    pub names: Vec<String>,
}

impl Default for RolloutFeedbackConfig {
    fn default() -> Self {
        RolloutFeedbackConfig {
            names: default_names(),
        }
    }
}

fn default_names() -> Vec<String> {
    vec!["{service}-{env}".to_owned(), "{env}-{service}".to_owned()]
}

impl RolloutFeedbackConfig {
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        for (i, name) in self.names.iter().enumerate() {
            let rest = name.replace("{service}", "").replace("{env}", "");
            if !name.contains("{service}") || rest.contains(['{', '}']) {
                return Err((
                    format!("rollout_feedback.names[{i}]"),
                    format!(
                        "'{name}' must hold {{service}} (and usually {{env}}) and no other variable"
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn describe(&self) -> String {
        self.names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}
