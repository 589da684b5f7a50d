//! What runs where, computed from release history (newest first), and the rollback pin.
//!
//! A rollback pins its environment: auto-releases must not undo it until a person releases or
//! promotes to that environment again, or lifts the pin explicitly ([`Unpin`]). Pins are not
//! stored anywhere of their own: they follow from the history in git plus the unpins the server
//! records, so they survive any rebuild of the server's database from git.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::environment::Environments;
use crate::intent::Intent;
use crate::trailers::{Person, ReleaseRecord};

/// A release as found in history: its record, the commit that made it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecordedRelease {
    pub record: ReleaseRecord,
    pub commit: String,
    pub at: Timestamp,
}

/// An environment held at a rolled-back artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pin {
    pub env: String,
    pub service: String,
    pub artifact: String,
    pub by: Person,
    pub at: Timestamp,
}

/// An explicit lifting of the pin on one environment of one service; lifts pins made at or
/// before `at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Unpin {
    pub env: String,
    pub service: String,
    pub by: Person,
    pub at: Timestamp,
}

/// An auto-release refused because of a pin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "auto-release to '{}' of service '{}' is held back: {} rolled it back to '{}' at {}; release or promote to '{}' by hand, or unpin it, to resume auto-releases",
    .pin.env, .pin.service, .pin.by.short(), .pin.artifact, .pin.at, .pin.env
)]
pub struct AutoReleaseBlocked {
    pub pin: Box<Pin>,
}

/// One environment of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentStatus<'a> {
    pub environment: String,
    /// The newest release; `None` when the service was never released there.
    pub current: Option<&'a RecordedRelease>,
    /// What rollback goes back to by default (see [`previous_release`]).
    pub previous: Option<&'a RecordedRelease>,
    pub pin: Option<Pin>,
}

fn releases_of<'a, 'k>(
    history: &'a [RecordedRelease],
    service: &'k str,
    env: &'k str,
) -> impl Iterator<Item = &'a RecordedRelease> + use<'a, 'k> {
    history
        .iter()
        .filter(move |r| r.record.service == service && r.record.environment == env)
}

/// The release running in `env`: the newest one recorded.
#[must_use]
pub fn current_release<'a>(
    history: &'a [RecordedRelease],
    service: &str,
    env: &str,
) -> Option<&'a RecordedRelease> {
    releases_of(history, service, env).next()
}

/// The release a rollback of `env` returns to by default: the newest earlier release of another
/// artifact that has not itself been rolled back since. Rolling back twice therefore walks back
/// two artifacts instead of flipping between the last two.
#[must_use]
pub fn previous_release<'a>(
    history: &'a [RecordedRelease],
    service: &str,
    env: &str,
) -> Option<&'a RecordedRelease> {
    let mut releases = releases_of(history, service, env);
    let current = releases.next()?;
    let mut rolled_back: Vec<&str> = Vec::new();
    if let Intent::Rollback { of_artifact } = &current.record.intent {
        rolled_back.push(of_artifact);
    }
    for release in releases {
        let artifact = release.record.artifact_id.as_str();
        if artifact != current.record.artifact_id && !rolled_back.contains(&artifact) {
            return Some(release);
        }
        if let Intent::Rollback { of_artifact } = &release.record.intent {
            rolled_back.push(of_artifact);
        }
    }
    None
}

/// The pin on `env`, if its latest release (redeploys aside) is a rollback not lifted since.
#[must_use]
pub fn pin(history: &[RecordedRelease], unpins: &[Unpin], service: &str, env: &str) -> Option<Pin> {
    let latest =
        releases_of(history, service, env).find(|r| r.record.intent != Intent::Redeploy)?;
    if !matches!(latest.record.intent, Intent::Rollback { .. }) {
        return None;
    }
    let lifted = unpins
        .iter()
        .any(|u| u.service == service && u.env == env && u.at >= latest.at);
    (!lifted).then(|| Pin {
        env: env.to_owned(),
        service: service.to_owned(),
        artifact: latest.record.artifact_id.clone(),
        by: latest.record.released_by.clone(),
        at: latest.at,
    })
}

/// Whether an auto-release policy may release to `env` now.
///
/// # Errors
/// [`AutoReleaseBlocked`] naming the pin (environment, artifact, who rolled back and when).
pub fn auto_release_allowed(
    history: &[RecordedRelease],
    unpins: &[Unpin],
    service: &str,
    env: &str,
) -> Result<(), AutoReleaseBlocked> {
    match pin(history, unpins, service, env) {
        Some(pin) => Err(AutoReleaseBlocked { pin: Box::new(pin) }),
        None => Ok(()),
    }
}

/// Status of one environment.
#[must_use]
pub fn environment_status<'a>(
    history: &'a [RecordedRelease],
    unpins: &[Unpin],
    service: &str,
    env: &str,
) -> EnvironmentStatus<'a> {
    EnvironmentStatus {
        environment: env.to_owned(),
        current: current_release(history, service, env),
        previous: previous_release(history, service, env),
        pin: pin(history, unpins, service, env),
    }
}

/// Status of every environment, in promotion order.
#[must_use]
pub fn service_status<'a>(
    environments: &Environments,
    history: &'a [RecordedRelease],
    unpins: &[Unpin],
    service: &str,
) -> Vec<EnvironmentStatus<'a>> {
    environments
        .iter()
        .map(|env| environment_status(history, unpins, service, &env.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Environment;

    fn release(env: &str, artifact: &str, intent: Intent, minute: i64) -> RecordedRelease {
        RecordedRelease {
            record: ReleaseRecord {
                service: "api".to_owned(),
                environment: env.to_owned(),
                artifact_id: artifact.to_owned(),
                intent,
                released_by: Person::new("Alice", "alice@example.com"),
                request: None,
            },
            commit: format!("c{minute}"),
            at: Timestamp::from_second(minute * 60).unwrap(),
        }
    }

    fn rollback(env: &str, to: &str, of: &str, minute: i64) -> RecordedRelease {
        release(
            env,
            to,
            Intent::Rollback {
                of_artifact: of.to_owned(),
            },
            minute,
        )
    }

    fn newest_first(mut history: Vec<RecordedRelease>) -> Vec<RecordedRelease> {
        history.reverse();
        history
    }

    #[test]
    fn current_and_previous_per_environment() {
        let history = newest_first(vec![
            release("dev", "a", Intent::AutoRelease, 1),
            release("dev", "b", Intent::AutoRelease, 2),
            release(
                "prod",
                "a",
                Intent::Promote {
                    from_env: "dev".to_owned(),
                },
                3,
            ),
            release("dev", "b", Intent::Redeploy, 4),
        ]);
        let envs = Environments::new(vec![
            Environment::new("dev"),
            Environment::after("prod", "dev"),
        ])
        .unwrap();
        let status = service_status(&envs, &history, &[], "api");
        assert_eq!(status[0].environment, "dev");
        assert_eq!(status[0].current.unwrap().record.artifact_id, "b");
        assert_eq!(status[0].previous.unwrap().record.artifact_id, "a");
        assert_eq!(status[1].current.unwrap().record.artifact_id, "a");
        assert_eq!(status[1].previous, None);
        assert_eq!(
            environment_status(&history, &[], "web", "dev").current,
            None
        );
    }

    #[test]
    fn repeated_rollbacks_walk_back_instead_of_flipping() {
        let history = newest_first(vec![
            release("prod", "x", Intent::Release, 1),
            release("prod", "a", Intent::Release, 2),
            release("prod", "b", Intent::Release, 3),
            rollback("prod", "a", "b", 4),
        ]);
        assert_eq!(
            previous_release(&history, "api", "prod")
                .unwrap()
                .record
                .artifact_id,
            "x"
        );
        let history = newest_first(vec![
            release("prod", "x", Intent::Release, 1),
            release("prod", "a", Intent::Release, 2),
            release("prod", "b", Intent::Release, 3),
            rollback("prod", "a", "b", 4),
            rollback("prod", "x", "a", 5),
        ]);
        assert_eq!(previous_release(&history, "api", "prod"), None);
    }

    #[test]
    fn a_rollback_pins_until_a_manual_release_or_unpin() {
        let mut history = newest_first(vec![
            release("prod", "a", Intent::AutoRelease, 1),
            release("prod", "b", Intent::AutoRelease, 2),
            rollback("prod", "a", "b", 3),
            release("prod", "a", Intent::Redeploy, 4),
        ]);
        let err = auto_release_allowed(&history, &[], "api", "prod").unwrap_err();
        assert_eq!(err.pin.artifact, "a");
        assert_eq!(
            err.to_string(),
            "auto-release to 'prod' of service 'api' is held back: alice@example.com rolled it back to 'a' at 1970-01-01T00:03:00Z; release or promote to 'prod' by hand, or unpin it, to resume auto-releases"
        );
        assert!(auto_release_allowed(&history, &[], "api", "dev").is_ok());

        let unpin = |minute: i64| Unpin {
            env: "prod".to_owned(),
            service: "api".to_owned(),
            by: Person::new("Bob", ""),
            at: Timestamp::from_second(minute * 60).unwrap(),
        };
        assert!(
            auto_release_allowed(&history, &[unpin(2)], "api", "prod").is_err(),
            "an older unpin does not lift a newer pin"
        );
        assert!(auto_release_allowed(&history, &[unpin(5)], "api", "prod").is_ok());

        history.insert(0, release("prod", "c", Intent::Release, 6));
        assert!(auto_release_allowed(&history, &[], "api", "prod").is_ok());
        assert_eq!(pin(&history, &[], "api", "prod"), None);
    }
}
