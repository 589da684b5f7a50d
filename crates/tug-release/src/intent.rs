//! Why a release happened.

use serde::{Deserialize, Serialize};

/// The reason for one release; recorded in the `Release-intent` trailer of its commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Intent {
    /// A person released an artifact (by id or as the newest of a branch).
    Release,
    /// A person promoted what runs in `from_env` to the environment after it.
    Promote {
        #[serde(rename = "fromEnv")]
        from_env: String,
    },
    /// A person rolled back from `of_artifact` to an earlier artifact. Pins the environment.
    Rollback {
        #[serde(rename = "ofArtifact")]
        of_artifact: String,
    },
    /// An auto-release policy released a new artifact of its branch.
    AutoRelease,
    /// The running artifact was deployed again unchanged (a restart through git).
    Redeploy,
}

impl Intent {
    /// The word used in the commit title and the `Release-intent` trailer.
    #[must_use]
    pub fn word(&self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Promote { .. } => "promote",
            Self::Rollback { .. } => "rollback",
            Self::AutoRelease => "auto-release",
            Self::Redeploy => "redeploy",
        }
    }

    /// Whether a person asked for this release (rather than a policy).
    #[must_use]
    pub fn is_manual(&self) -> bool {
        !matches!(self, Self::AutoRelease)
    }
}
