//! Release decisions: given what is known about one service — its history, its policies, the
//! environments in promotion order — what a request should do, or why it must not.
//!
//! Every function here answers from the [`Facts`] it is given; the caller loads them, acts on the
//! answer and turns a [`Refusal`] into its own error. Where a decision needs something only the
//! caller can look up (the newest artifact of a branch, the branch an artifact was built from),
//! it is made in two steps: [`Facts::choose`] says which artifact, [`Facts::admit`] whether it may
//! go there.

use crate::artifact::ImageReference;
use crate::environment::{EnvironmentError, Environments};
use crate::intent::Intent;
use crate::policy::{GlobalBranchRestrictions, PolicyViolation, ServicePolicies};
use crate::service::Services;
use crate::status::{
    AutoReleaseBlocked, Pin, RecordedRelease, Unpin, auto_release_allowed, current_release, pin,
    previous_release,
};

/// Everything a decision about one service reads.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub service: &'a str,
    pub environments: &'a Environments,
    pub services: &'a Services,
    /// Releases of the service, newest first.
    pub history: &'a [RecordedRelease],
    pub unpins: &'a [Unpin],
    pub policies: &'a ServicePolicies,
    pub global: &'a GlobalBranchRestrictions,
}

/// What a person asks for in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// An artifact by id, or the newest of a branch.
    Release {
        artifact_id: Option<String>,
        branch: Option<String>,
    },
    /// What runs in `from_env` (default: the environment's predecessor).
    Promote { from_env: Option<String> },
    /// An explicit earlier artifact, or the one before the running one.
    Rollback { artifact_id: Option<String> },
}

/// What should happen: `artifact_id` goes to `environment`, for `intent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub environment: String,
    pub artifact_id: String,
    pub intent: Intent,
}

/// The first step of a decision: the artifact, or the branch whose newest artifact it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Artifact(Decision),
    /// The caller looks the newest artifact of `branch` up and goes on with
    /// [`Facts::admit`]; the branch itself is already known to be allowed.
    NewestOfBranch {
        environment: String,
        branch: String,
    },
}

/// What an auto-release of one artifact does in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoRelease {
    pub environment: String,
    pub outcome: Result<Decision, Refusal>,
}

/// Nothing to do, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Nothing {
    #[error(
        "no auto-release policy of service '{service}' targets '{environment}'; nothing is released"
    )]
    NoAutoRelease {
        service: String,
        environment: String,
    },
    #[error("no artifact of branch {} is registered; nothing is released", .branches.join(", "))]
    NoCandidate { branches: Vec<String> },
    #[error(
        "'{environment}' already runs '{artifact_id}', the newest auto-release candidate; nothing is released"
    )]
    AlreadyRunning {
        environment: String,
        artifact_id: String,
    },
    #[error(
        "artifact '{artifact_id}' is not auto-released to '{environment}'; nothing is released"
    )]
    NotAutoReleased {
        environment: String,
        artifact_id: String,
    },
}

/// Why a request must not happen; each names what is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "a release names the artifact (artifactId) or a branch whose newest artifact to release"
    )]
    NoArtifactNamed,
    /// The environment released to is not configured.
    #[error(transparent)]
    Environment(EnvironmentError),
    /// The environment to promote from is not configured.
    #[error("fromEnv: {0}")]
    UnknownFromEnv(EnvironmentError),
    #[error(
        "environment '{environment}' is not promoted from another environment; release to it, or name fromEnv"
    )]
    NoPreviousEnvironment { environment: String },
    #[error("nothing of service '{service}' runs in '{from_env}' to promote to '{environment}'")]
    NothingToPromote {
        service: String,
        from_env: String,
        environment: String,
    },
    #[error(
        "service '{service}' was never released to '{environment}'; there is nothing to roll back"
    )]
    NeverReleased {
        service: String,
        environment: String,
    },
    #[error(
        "service '{service}' has no earlier artifact in '{environment}' to roll back to from '{running}'"
    )]
    NothingToRollBackTo {
        service: String,
        environment: String,
        running: String,
    },
    #[error("service '{service}' has no target in environment '{environment}'")]
    NoTarget {
        service: String,
        environment: String,
    },
    #[error(transparent)]
    BranchRestricted(Box<PolicyViolation>),
    #[error(transparent)]
    Pinned(AutoReleaseBlocked),
    #[error("service '{service}' is not pinned in '{environment}'")]
    NotPinned {
        service: String,
        environment: String,
    },
}

impl Refusal {
    /// A stable name for the kind of refusal.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoArtifactNamed => "no-artifact-named",
            Self::Environment(_) => "unknown-environment",
            Self::UnknownFromEnv(_) => "unknown-from-env",
            Self::NoPreviousEnvironment { .. } => "no-previous-environment",
            Self::NothingToPromote { .. } => "nothing-to-promote",
            Self::NeverReleased { .. } => "never-released",
            Self::NothingToRollBackTo { .. } => "nothing-to-roll-back-to",
            Self::NoTarget { .. } => "no-target",
            Self::BranchRestricted(_) => "branch-restricted",
            Self::Pinned(_) => "pinned",
            Self::NotPinned { .. } => "not-pinned",
        }
    }
}

impl<'a> Facts<'a> {
    /// The same facts with the service's history (newest first) and unpins.
    #[must_use]
    pub fn with_history(self, history: &'a [RecordedRelease], unpins: &'a [Unpin]) -> Self {
        Self {
            history,
            unpins,
            ..self
        }
    }

    /// Which artifact `request` sends to `env`, and with which intent.
    ///
    /// # Errors
    /// A [`Refusal`] when the request names nothing, there is nothing to promote or roll back
    /// to, or the branch asked for may not go to `env`.
    pub fn choose(&self, env: &str, request: &Request) -> Result<Choice, Refusal> {
        let decided = |artifact_id: &str, intent: Intent| {
            Ok(Choice::Artifact(Decision {
                environment: env.to_owned(),
                artifact_id: artifact_id.to_owned(),
                intent,
            }))
        };
        match request {
            Request::Release {
                artifact_id: Some(id),
                ..
            } => decided(id, Intent::Release),
            Request::Release {
                artifact_id: None,
                branch: Some(branch),
            } => {
                // A branch the environment does not take is refused as such, whether or not an
                // artifact of it exists.
                self.check_branch(env, branch)?;
                Ok(Choice::NewestOfBranch {
                    environment: env.to_owned(),
                    branch: branch.clone(),
                })
            }
            Request::Release { .. } => Err(Refusal::NoArtifactNamed),
            Request::Promote { from_env } => {
                let from = match from_env {
                    Some(from) => {
                        self.environments
                            .get(from)
                            .map_err(Refusal::UnknownFromEnv)?;
                        from.clone()
                    }
                    None => self
                        .environments
                        .predecessor(env)
                        .map_err(Refusal::Environment)?
                        .map(|p| p.name.clone())
                        .ok_or_else(|| Refusal::NoPreviousEnvironment {
                            environment: env.to_owned(),
                        })?,
                };
                let running =
                    current_release(self.history, self.service, &from).ok_or_else(|| {
                        Refusal::NothingToPromote {
                            service: self.service.to_owned(),
                            from_env: from.clone(),
                            environment: env.to_owned(),
                        }
                    })?;
                decided(
                    &running.record.artifact_id,
                    Intent::Promote { from_env: from },
                )
            }
            Request::Rollback { artifact_id } => {
                let running =
                    current_release(self.history, self.service, env).ok_or_else(|| {
                        Refusal::NeverReleased {
                            service: self.service.to_owned(),
                            environment: env.to_owned(),
                        }
                    })?;
                let to = match artifact_id {
                    Some(id) => id.as_str(),
                    None => previous_release(self.history, self.service, env)
                        .map(|r| r.record.artifact_id.as_str())
                        .ok_or_else(|| Refusal::NothingToRollBackTo {
                            service: self.service.to_owned(),
                            environment: env.to_owned(),
                            running: running.record.artifact_id.clone(),
                        })?,
                };
                decided(
                    to,
                    Intent::Rollback {
                        of_artifact: running.record.artifact_id.clone(),
                    },
                )
            }
        }
    }

    /// Whether the chosen artifact, built from `branch`, may go where `decision` sends it.
    ///
    /// # Errors
    /// [`Refusal::BranchRestricted`] naming the policy that forbids it.
    pub fn admit(&self, decision: Decision, branch: &str) -> Result<Decision, Refusal> {
        self.check_branch(&decision.environment, branch)?;
        Ok(decision)
    }

    /// The environments an auto-release policy sends a new artifact of `branch` to (only
    /// `only_env`, when given), in policy order, each with whether it may be released there
    /// as far as configuration and policies tell. Pins are checked by [`Facts::auto_release_to`],
    /// against history as it is once the environment's branch is brought up to date.
    #[must_use]
    pub fn auto_release_targets(
        &self,
        branch: &str,
        only_env: Option<&str>,
    ) -> Vec<(String, Result<(), Refusal>)> {
        self.policies
            .auto_release_targets(branch)
            .into_iter()
            .filter(|env| only_env.is_none_or(|only| only == env))
            .map(|env| {
                let allowed = self
                    .has_target(&env)
                    .and_then(|()| self.check_branch(&env, branch));
                (env, allowed)
            })
            .collect()
    }

    /// The auto-release of `artifact_id`, built from `branch`, to `env`.
    ///
    /// # Errors
    /// [`Refusal::NoTarget`], [`Refusal::BranchRestricted`], or [`Refusal::Pinned`] when a
    /// rollback holds the environment.
    pub fn auto_release_to(
        &self,
        env: &str,
        artifact_id: &str,
        branch: &str,
    ) -> Result<Decision, Refusal> {
        self.has_target(env)?;
        self.check_branch(env, branch)?;
        auto_release_allowed(self.history, self.unpins, self.service, env)
            .map_err(Refusal::Pinned)?;
        Ok(Decision {
            environment: env.to_owned(),
            artifact_id: artifact_id.to_owned(),
            intent: Intent::AutoRelease,
        })
    }

    /// What an auto-release of `artifact_id`, built from `branch`, does in each environment
    /// (only `only_env`, when given), as history stands.
    #[must_use]
    pub fn auto_release(
        &self,
        artifact_id: &str,
        branch: &str,
        only_env: Option<&str>,
    ) -> Vec<AutoRelease> {
        self.auto_release_targets(branch, only_env)
            .into_iter()
            .map(|(environment, allowed)| {
                let outcome =
                    allowed.and_then(|()| self.auto_release_to(&environment, artifact_id, branch));
                AutoRelease {
                    environment,
                    outcome,
                }
            })
            .collect()
    }

    /// The branches whose newest artifact an auto-release policy sends to `env`: where to look
    /// for what a lifted pin held back.
    ///
    /// # Errors
    /// [`Nothing::NoAutoRelease`] when no policy targets `env`.
    pub fn auto_release_branches(&self, env: &str) -> Result<Vec<String>, Nothing> {
        let branches: Vec<String> = self
            .policies
            .auto_releases
            .iter()
            .filter(|p| p.environment == env)
            .map(|p| p.branch.clone())
            .collect();
        if branches.is_empty() {
            return Err(Nothing::NoAutoRelease {
                service: self.service.to_owned(),
                environment: env.to_owned(),
            });
        }
        Ok(branches)
    }

    /// Whether `newest`, the newest artifact of `branches`, was held back from `env`: the
    /// artifact to auto-release there now that its pin is lifted.
    ///
    /// # Errors
    /// [`Nothing::NoCandidate`] when no artifact of those branches exists,
    /// [`Nothing::AlreadyRunning`] when `env` runs it.
    pub fn held_back<'n>(
        &self,
        env: &str,
        branches: &[String],
        newest: Option<&'n str>,
    ) -> Result<&'n str, Nothing> {
        let Some(newest) = newest else {
            return Err(Nothing::NoCandidate {
                branches: branches.to_vec(),
            });
        };
        if current_release(self.history, self.service, env)
            .is_some_and(|c| c.record.artifact_id == newest)
        {
            return Err(Nothing::AlreadyRunning {
                environment: env.to_owned(),
                artifact_id: newest.to_owned(),
            });
        }
        Ok(newest)
    }

    fn has_target(&self, env: &str) -> Result<(), Refusal> {
        if self.environments.get(env).is_err()
            || self.services.target_for(self.service, env).is_err()
        {
            return Err(Refusal::NoTarget {
                service: self.service.to_owned(),
                environment: env.to_owned(),
            });
        }
        Ok(())
    }

    fn check_branch(&self, env: &str, branch: &str) -> Result<(), Refusal> {
        self.policies
            .check_release(self.global, env, branch)
            .map_err(Refusal::BranchRestricted)
    }
}

/// The pin an unpin of `env` lifts. Unlike the other decisions it reads no policies.
///
/// # Errors
/// [`Refusal::NotPinned`].
pub fn unpin(
    history: &[RecordedRelease],
    unpins: &[Unpin],
    service: &str,
    env: &str,
) -> Result<Pin, Refusal> {
    pin(history, unpins, service, env).ok_or_else(|| Refusal::NotPinned {
        service: service.to_owned(),
        environment: env.to_owned(),
    })
}

/// Whether releasing `image` of `artifact_id` over what runs (`running`: its artifact id and
/// image) needs a pod-template bump: with the same tag but another build, the image reference
/// alone may not change, so the pods would keep running the old build.
#[must_use]
pub fn needs_redeploy(
    running: Option<(&str, &ImageReference)>,
    artifact_id: &str,
    image: &ImageReference,
) -> bool {
    running.is_some_and(|(running_id, running_image)| {
        running_image.tag == image.tag
            && (running_id != artifact_id || running_image.digest != image.digest)
    })
}
