//! Release commits: the title and trailers that record a release in git, so that what runs where,
//! who put it there and why can be rebuilt from the repository's history alone.
//!
//! ```text
//! [prod/api] promote master-0017d995e3-67e9d69164 by alice@example.com
//!
//! Service: api
//! Environment: prod
//! Artifact-ID: master-0017d995e3-67e9d69164
//! Release-intent: promote
//! Promoted-from: staging
//! Released-by: Alice Example <alice@example.com>
//! Tug-Request: 01890a5d-ac96-774b-bcce-b302099a8057
//! ```
//!
//! The reader also understands the release manager's commits (`Release-intent: ReleaseArtifact`,
//! `Artifact-released-by:`, `Promoted-from-environment:`, `Rollback-of-artifact-id:`, and titles
//! without trailers), so history written before the move to tug counts as well.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::intent::Intent;
use crate::validate::path_component_problem;

pub const SERVICE: &str = "Service";
pub const ENVIRONMENT: &str = "Environment";
pub const ARTIFACT_ID: &str = "Artifact-ID";
pub const RELEASE_INTENT: &str = "Release-intent";
pub const PROMOTED_FROM: &str = "Promoted-from";
pub const ROLLBACK_OF: &str = "Rollback-of";
pub const RELEASED_BY: &str = "Released-by";
/// The request (job) id of every commit tug writes: a writer that crashed after pushing finds its
/// commit by it.
pub const TUG_REQUEST: &str = "Tug-Request";
/// Who asked for the commit, as tug authenticated them (a token's name): written on every commit
/// a tug server lands for a request, next to `Tug-Request`.
pub const TUG_ACTOR: &str = "Tug-Actor";
/// Who lifted a rollback pin (an empty commit that also carries `Service` and `Environment`).
pub const UNPINNED_BY: &str = "Unpinned-by";

/// The trailers of a commit message, in order: its last block of `Key: value` lines. The one
/// trailer parser of tug (release history, unpins, recovery of a writer's own commits).
#[must_use]
pub fn parse_trailers(message: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = message.lines().map(|l| l.trim_end_matches('\r')).collect();
    trailer_block(&lines)
}

/// A person as git writes one: `Name <email>`, `Name`, or `<email>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Person {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
}

impl Person {
    #[must_use]
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            email: email.into(),
        }
    }

    /// Short form for titles and messages: the email where known, as the release manager did.
    #[must_use]
    pub fn short(&self) -> &str {
        if self.email.is_empty() {
            &self.name
        } else {
            &self.email
        }
    }

    fn problem(&self) -> Option<String> {
        if self.name.trim().is_empty() && self.email.trim().is_empty() {
            return Some("has neither name nor email".to_owned());
        }
        if self.name != self.name.trim() {
            return Some(format!(
                "name '{}' has leading or trailing spaces",
                self.name
            ));
        }
        if self.name.contains(['<', '>', '\n', '\r']) {
            return Some(format!(
                "name {:?} contains '<', '>' or a line break",
                self.name
            ));
        }
        if self
            .email
            .contains(|c: char| c == '<' || c == '>' || c.is_whitespace())
        {
            return Some(format!(
                "email {:?} contains '<', '>' or white space",
                self.email
            ));
        }
        None
    }

    /// Reads `Name <email>`, `<email>` or a bare name.
    fn parse(text: &str) -> Self {
        let text = text.trim();
        match text.strip_suffix('>').and_then(|t| t.rsplit_once('<')) {
            Some((name, email)) => Self::new(name.trim(), email.trim()),
            None => Self::new(text, ""),
        }
    }

    /// Reads the `by …` of a title, where the release manager wrote a bare email.
    fn parse_title_part(text: &str) -> Self {
        let person = Self::parse(text);
        if person.email.is_empty() && person.name.contains('@') && !person.name.contains(' ') {
            return Self::new("", person.name);
        }
        person
    }
}

impl fmt::Display for Person {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name.is_empty(), self.email.is_empty()) {
            (false, false) => write!(f, "{} <{}>", self.name, self.email),
            (false, true) => f.write_str(&self.name),
            (true, _) => write!(f, "<{}>", self.email),
        }
    }
}

/// One release as recorded in its commit message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseRecord {
    pub service: String,
    pub environment: String,
    pub artifact_id: String,
    pub intent: Intent,
    pub released_by: Person,
    /// The tug request that made the release; absent in commits the release manager wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// A commit message that cannot be written or read as a release; names the trailer at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrailerError {
    #[error("release record field {field} {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error(
        "commit '{title}' is not a release commit: it has no {SERVICE}/{ENVIRONMENT}/{ARTIFACT_ID} trailers and its title is not '[env/service] <verb> <artifact> by <who>'"
    )]
    NotARelease { title: String },
    #[error("release commit '{title}' lacks the {trailer} trailer its {intent} intent needs")]
    Missing {
        title: String,
        trailer: &'static str,
        intent: String,
    },
    #[error("release commit '{title}' has an unknown {RELEASE_INTENT} '{value}'")]
    UnknownIntent { title: String, value: String },
    #[error("release commit '{title}': trailer {trailer} {problem}")]
    BadTrailer {
        title: String,
        trailer: &'static str,
        problem: String,
    },
}

impl ReleaseRecord {
    fn check(&self) -> Result<(), TrailerError> {
        let invalid = |field, problem| Err(TrailerError::Invalid { field, problem });
        for (field, value) in [
            (SERVICE, &self.service),
            (ENVIRONMENT, &self.environment),
            (ARTIFACT_ID, &self.artifact_id),
        ] {
            if let Some(problem) = path_component_problem(value) {
                return invalid(field, problem);
            }
        }
        match &self.intent {
            Intent::Promote { from_env } => {
                if let Some(problem) = path_component_problem(from_env) {
                    return invalid(PROMOTED_FROM, problem);
                }
            }
            Intent::Rollback { of_artifact } => {
                if let Some(problem) = path_component_problem(of_artifact) {
                    return invalid(ROLLBACK_OF, problem);
                }
            }
            Intent::Release | Intent::AutoRelease | Intent::Redeploy => {}
        }
        if let Some(problem) = self.released_by.problem() {
            return invalid(RELEASED_BY, problem);
        }
        if let Some(request) = &self.request
            && (request.is_empty() || request.contains(char::is_whitespace))
        {
            return invalid(
                TUG_REQUEST,
                format!("{request:?} is empty or contains white space"),
            );
        }
        Ok(())
    }

    /// The commit title: `[env/service] <verb> <artifact> by <who>`.
    #[must_use]
    pub fn title(&self) -> String {
        format!(
            "[{}/{}] {} {} by {}",
            self.environment,
            self.service,
            self.intent.word(),
            self.artifact_id,
            self.released_by.short()
        )
    }

    /// The trailers that record this release, in the order tug writes them; structured until
    /// the commit is written.
    ///
    /// # Errors
    /// A value that would not read back the same (empty, a line break, an unsafe name), naming
    /// the trailer.
    pub fn trailers(&self) -> Result<Vec<(String, String)>, TrailerError> {
        self.check()?;
        let mut trailers = Vec::new();
        let mut trailer =
            |key: &str, value: &str| trailers.push((key.to_owned(), value.to_owned()));
        trailer(SERVICE, &self.service);
        trailer(ENVIRONMENT, &self.environment);
        trailer(ARTIFACT_ID, &self.artifact_id);
        trailer(RELEASE_INTENT, self.intent.word());
        match &self.intent {
            Intent::Promote { from_env } => trailer(PROMOTED_FROM, from_env),
            Intent::Rollback { of_artifact } => trailer(ROLLBACK_OF, of_artifact),
            Intent::Release | Intent::AutoRelease | Intent::Redeploy => {}
        }
        trailer(RELEASED_BY, &self.released_by.to_string());
        if let Some(request) = &self.request {
            trailer(TUG_REQUEST, request);
        }
        Ok(trailers)
    }

    /// The full commit message: title, blank line, trailers, trailing newline.
    ///
    /// # Errors
    /// As [`ReleaseRecord::trailers`].
    pub fn to_commit_message(&self) -> Result<String, TrailerError> {
        let mut message = format!("{}\n\n", self.title());
        for (key, value) in self.trailers()? {
            message.push_str(&key);
            message.push_str(": ");
            message.push_str(&value);
            message.push('\n');
        }
        Ok(message)
    }

    /// Reads a release back from a commit message (tug's or the release manager's).
    ///
    /// # Errors
    /// [`TrailerError::NotARelease`] for other commits; other variants name the trailer at fault.
    pub fn from_commit_message(message: &str) -> Result<Self, TrailerError> {
        let lines: Vec<&str> = message.lines().map(|l| l.trim_end_matches('\r')).collect();
        let title = lines.first().copied().unwrap_or_default().trim().to_owned();
        let trailers = trailer_block(&lines);
        let field = |names: &[&str]| -> Option<String> {
            // The last occurrence wins, as with `git interpret-trailers`.
            trailers
                .iter()
                .rev()
                .find(|(key, _)| names.iter().any(|n| key.eq_ignore_ascii_case(n)))
                .map(|(_, value)| value.clone())
        };
        let parsed_title = parse_title(&title);

        let from_title = |pick: fn(&TitleParts) -> String| parsed_title.as_ref().map(pick);
        let service = field(&[SERVICE]).or_else(|| from_title(|t| t.service.clone()));
        let environment = field(&[ENVIRONMENT]).or_else(|| from_title(|t| t.environment.clone()));
        let artifact_id = field(&[ARTIFACT_ID]).or_else(|| from_title(|t| t.artifact_id.clone()));
        let (Some(service), Some(environment), Some(artifact_id)) =
            (service, environment, artifact_id)
        else {
            return Err(TrailerError::NotARelease { title });
        };

        let released_by = match field(&[RELEASED_BY, "Artifact-released-by"]) {
            Some(text) => Person::parse(&text),
            None => parsed_title
                .as_ref()
                .map(|t| Person::parse_title_part(&t.who))
                .unwrap_or_default(),
        };

        let intent_word =
            field(&[RELEASE_INTENT]).or_else(|| parsed_title.as_ref().map(|t| t.verb.clone()));
        let missing = |trailer, intent: &str| TrailerError::Missing {
            title: title.clone(),
            trailer,
            intent: intent.to_owned(),
        };
        let intent = match intent_word.as_deref().unwrap_or("release") {
            "release" | "ReleaseArtifact" | "ReleaseBranch" => Intent::Release,
            "auto-release" | "auto release" | "AutoRelease" => Intent::AutoRelease,
            "redeploy" => Intent::Redeploy,
            word @ ("promote" | "Promote") => Intent::Promote {
                from_env: field(&[PROMOTED_FROM, "Promoted-from-environment"])
                    .ok_or_else(|| missing(PROMOTED_FROM, word))?,
            },
            word @ ("rollback" | "Rollback") => Intent::Rollback {
                of_artifact: field(&[ROLLBACK_OF, "Rollback-of-artifact-id"])
                    .ok_or_else(|| missing(ROLLBACK_OF, word))?,
            },
            other => {
                return Err(TrailerError::UnknownIntent {
                    title,
                    value: other.to_owned(),
                });
            }
        };
        let request = field(&[TUG_REQUEST]);
        if request.as_deref().is_some_and(str::is_empty) {
            return Err(TrailerError::BadTrailer {
                title,
                trailer: TUG_REQUEST,
                problem: "is empty".to_owned(),
            });
        }
        Ok(Self {
            service,
            environment,
            artifact_id,
            intent,
            released_by,
            request,
        })
    }
}

/// The trailers: the trailing run of `Key: value` lines after the title (git's last paragraph;
/// the release manager's fields may follow the title without a blank line).
fn trailer_block(lines: &[&str]) -> Vec<(String, String)> {
    let mut end = lines.len();
    while end > 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut start = end;
    while start > 1 {
        match parse_trailer(lines[start - 1]) {
            Some(_) => start -= 1,
            None => break,
        }
    }
    lines[start..end]
        .iter()
        .filter_map(|l| parse_trailer(l))
        .collect()
}

fn parse_trailer(line: &str) -> Option<(String, String)> {
    let (key, value) = line.split_once(':')?;
    let key_ok = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    key_ok.then(|| (key.to_owned(), value.trim().to_owned()))
}

struct TitleParts {
    environment: String,
    service: String,
    verb: String,
    artifact_id: String,
    who: String,
}

/// `[env/service] <verb words> <artifact> by <who>`.
fn parse_title(title: &str) -> Option<TitleParts> {
    let rest = title.strip_prefix('[')?;
    let (scope, rest) = rest.split_once("] ")?;
    let (environment, service) = scope.split_once('/')?;
    let (action, who) = rest.split_once(" by ")?;
    let (verb, artifact_id) = action.rsplit_once(' ')?;
    if environment.is_empty() || service.is_empty() || artifact_id.is_empty() || verb.is_empty() {
        return None;
    }
    Some(TitleParts {
        environment: environment.to_owned(),
        service: service.to_owned(),
        verb: verb.to_owned(),
        artifact_id: artifact_id.to_owned(),
        who: who.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(intent: Intent) -> ReleaseRecord {
        ReleaseRecord {
            service: "api".to_owned(),
            environment: "prod".to_owned(),
            artifact_id: "master-0017d995e3-67e9d69164".to_owned(),
            intent,
            released_by: Person::new("Alice Example", "alice@example.com"),
            request: Some("01890a5d-ac96-774b-bcce-b302099a8057".to_owned()),
        }
    }

    #[test]
    fn renders_title_and_trailers() {
        let message = record(Intent::Promote {
            from_env: "staging".to_owned(),
        })
        .to_commit_message()
        .unwrap();
        assert_eq!(
            message,
            "[prod/api] promote master-0017d995e3-67e9d69164 by alice@example.com\n\n\
             Service: api\nEnvironment: prod\nArtifact-ID: master-0017d995e3-67e9d69164\n\
             Release-intent: promote\nPromoted-from: staging\n\
             Released-by: Alice Example <alice@example.com>\n\
             Tug-Request: 01890a5d-ac96-774b-bcce-b302099a8057\n"
        );
        let rollback = record(Intent::Rollback {
            of_artifact: "master-bad".to_owned(),
        })
        .to_commit_message()
        .unwrap();
        assert!(rollback.starts_with(
            "[prod/api] rollback master-0017d995e3-67e9d69164 by alice@example.com\n"
        ));
        assert!(rollback.contains("\nRollback-of: master-bad\n"));
        let auto = record(Intent::AutoRelease).to_commit_message().unwrap();
        assert!(auto.starts_with("[prod/api] auto-release "), "{auto}");
    }

    /// A small deterministic generator, so the round-trip covers many combinations without
    /// depending on a random source.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(self.0 >> 33).unwrap()
        }
        fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
            options[self.next() % options.len()]
        }
    }

    #[test]
    fn parse_of_render_is_identity() {
        let names = ["api", "web-frontend", "x", "svc_1", "a.b", "v1+build"];
        let artifacts = [
            "master-0017d995e3-67e9d69164",
            "feature_x-1-2",
            "main-4f1c2d9a7b",
            "1.2.3",
        ];
        let people = [
            "Alice Example",
            "Bjørn Sørensen",
            "",
            "ci-bot",
            "O'Brien, Pat",
            "bob@home",
            "Stand by Me",
        ];
        let emails = ["alice@example.com", "", "ops+release@example.org"];
        let mut rng = Lcg(7);
        for _ in 0..2000 {
            let intent = match rng.next() % 5 {
                0 => Intent::Release,
                1 => Intent::Promote {
                    from_env: rng.pick(&names).to_owned(),
                },
                2 => Intent::Rollback {
                    of_artifact: rng.pick(&artifacts).to_owned(),
                },
                3 => Intent::AutoRelease,
                _ => Intent::Redeploy,
            };
            let mut person = Person::new(rng.pick(&people), rng.pick(&emails));
            if person.name.is_empty() && person.email.is_empty() {
                person.email = "someone@example.com".to_owned();
            }
            let original = ReleaseRecord {
                service: rng.pick(&names).to_owned(),
                environment: rng.pick(&names).to_owned(),
                artifact_id: rng.pick(&artifacts).to_owned(),
                intent,
                released_by: person,
                request: rng
                    .next()
                    .is_multiple_of(2)
                    .then(|| format!("req-{}", rng.next())),
            };
            let message = original.to_commit_message().unwrap();
            let parsed = ReleaseRecord::from_commit_message(&message)
                .unwrap_or_else(|e| panic!("{e}\n{message}"));
            assert_eq!(parsed, original, "{message}");
        }
    }

    #[test]
    fn reads_release_manager_commits() {
        let message = "[prod/example] release master-1c1508405e-67e9d69164 by kni@example.com\n\n\
            Service: example\nEnvironment: prod\nArtifact-ID: master-1c1508405e-67e9d69164\n\
            Artifact-released-by: Kasper Nissen <kni@example.com>\n\
            Artifact-created-by: Peter Petersen <pp@example.com>\n\
            Release-intent: Promote\nPromoted-from-environment: dev\n";
        let record = ReleaseRecord::from_commit_message(message).unwrap();
        assert_eq!(
            record.intent,
            Intent::Promote {
                from_env: "dev".to_owned()
            }
        );
        assert_eq!(
            record.released_by,
            Person::new("Kasper Nissen", "kni@example.com")
        );
        assert_eq!(record.request, None);

        let title_only = "[dev/example] rollback master-1c1508405e-67e9d69164 by kni@example.com";
        let err = ReleaseRecord::from_commit_message(title_only).unwrap_err();
        assert_eq!(
            err.to_string(),
            "release commit '[dev/example] rollback master-1c1508405e-67e9d69164 by kni@example.com' lacks the Rollback-of trailer its rollback intent needs"
        );
        let old = ReleaseRecord::from_commit_message(
            "[dev/example] release master-1-2 by kni@example.com\n",
        )
        .unwrap();
        assert_eq!(old.environment, "dev");
        assert_eq!(old.released_by, Person::new("", "kni@example.com"));
        assert_eq!(old.intent, Intent::Release);
    }

    #[test]
    fn ignores_other_trailers_and_body_text() {
        let message = "[prod/api] release main-1 by alice@example.com\n\nWhy: a body line that is prose.\nMore prose here.\n\n\
            Service: api\nEnvironment: prod\nArtifact-ID: main-1\nRelease-intent: release\n\
            Released-by: Alice <alice@example.com>\nSigned-off-by: Alice <alice@example.com>\n";
        let record = ReleaseRecord::from_commit_message(message).unwrap();
        assert_eq!(record.artifact_id, "main-1");
        assert_eq!(record.intent, Intent::Release);
    }

    #[test]
    fn errors_name_the_trailer() {
        let err = ReleaseRecord::from_commit_message("Merge branch 'main'\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("commit 'Merge branch 'main'' is not a release commit"),
            "{err}"
        );
        let err = ReleaseRecord::from_commit_message(
            "[prod/api] release main-1 by a\n\nService: api\nEnvironment: prod\nArtifact-ID: main-1\nRelease-intent: deploy\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "release commit '[prod/api] release main-1 by a' has an unknown Release-intent 'deploy'"
        );

        let mut bad = record(Intent::Release);
        bad.released_by = Person::new("", "");
        assert_eq!(
            bad.to_commit_message().unwrap_err().to_string(),
            "release record field Released-by has neither name nor email"
        );
        let mut bad = record(Intent::Release);
        bad.environment = "prod\nService: other".to_owned();
        assert!(
            bad.to_commit_message()
                .unwrap_err()
                .to_string()
                .starts_with("release record field Environment")
        );
        let mut bad = record(Intent::Release);
        bad.request = Some("a b".to_owned());
        assert!(
            bad.to_commit_message()
                .unwrap_err()
                .to_string()
                .starts_with("release record field Tug-Request")
        );
    }
}
