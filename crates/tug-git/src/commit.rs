//! Commit metadata: identities, time, messages with trailers.

use crate::error::GitError;
use crate::object::ObjectId;

/// A person or bot as git records it: `Name <email>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Identity {
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            email: email.into(),
        }
    }

    fn validate(&self) -> Result<(), GitError> {
        for value in [&self.name, &self.email] {
            if value.contains(['<', '>', '\n', '\0']) {
                return Err(GitError::InvalidIdentity {
                    value: value.clone(),
                    reason: "must not contain '<', '>', newlines or NUL".to_owned(),
                });
            }
        }
        if self.name.trim().is_empty() {
            return Err(GitError::InvalidIdentity {
                value: self.name.clone(),
                reason: "name is empty".to_owned(),
            });
        }
        Ok(())
    }
}

/// Seconds since the epoch and the UTC offset of the recorded time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub seconds: i64,
    pub offset_minutes: i32,
}

impl Timestamp {
    fn git_format(self) -> String {
        let sign = if self.offset_minutes < 0 { '-' } else { '+' };
        let offset = self.offset_minutes.unsigned_abs();
        format!(
            "{} {sign}{:02}{:02}",
            self.seconds,
            offset / 60,
            offset % 60
        )
    }
}

impl From<jiff::Timestamp> for Timestamp {
    /// Commits are written in UTC.
    fn from(at: jiff::Timestamp) -> Self {
        Timestamp {
            seconds: at.as_second(),
            offset_minutes: 0,
        }
    }
}

/// What one change's commit says: who asked for it and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitMeta {
    pub author: Identity,
    pub title: String,
    pub body: String,
    /// `Key: value` lines at the end of the message, in order.
    pub trailers: Vec<(String, String)>,
    /// Commit even when the change leaves every file as it was (an explicit redeploy).
    pub allow_empty: bool,
}

impl CommitMeta {
    pub fn new(author: Identity, title: impl Into<String>) -> Self {
        Self {
            author,
            title: title.into(),
            body: String::new(),
            trailers: Vec::new(),
            allow_empty: false,
        }
    }

    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn with_trailer(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.trailers.push((key.into(), value.into()));
        self
    }

    pub fn message(&self) -> Result<String, GitError> {
        format_message(&self.title, &self.body, &self.trailers)
    }
}

/// Checks a trailer key: letters, digits and '-', as git's trailer parser expects.
pub fn validate_trailer_key(key: &str) -> Result<(), GitError> {
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(GitError::InvalidTrailer {
            key: key.to_owned(),
            reason: "a trailer key is one or more ASCII letters, digits or '-'".to_owned(),
        });
    }
    Ok(())
}

/// Formats `title`, a blank line, `body`, a blank line and the trailers, one per line.
pub fn format_message(
    title: &str,
    body: &str,
    trailers: &[(String, String)],
) -> Result<String, GitError> {
    let title = title.trim();
    if title.is_empty() || title.contains('\n') {
        return Err(GitError::InvalidTrailer {
            key: "title".to_owned(),
            reason: "the commit title must be one non-empty line".to_owned(),
        });
    }
    let mut message = format!("{title}\n");
    let body = body.trim_matches('\n');
    if !body.trim().is_empty() {
        message.push('\n');
        message.push_str(body);
        message.push('\n');
    }
    if !trailers.is_empty() {
        message.push('\n');
        for (key, value) in trailers {
            validate_trailer_key(key)?;
            if value.contains(['\n', '\r']) {
                return Err(GitError::InvalidTrailer {
                    key: key.clone(),
                    reason: "value spans several lines".to_owned(),
                });
            }
            message.push_str(&format!("{key}: {}\n", value.trim()));
        }
    }
    Ok(message)
}

/// The trailers of a commit message, to check what [`format_message`] writes. tug reads
/// trailers with `tug_release::trailers::parse_trailers`, its one parser.
#[cfg(test)]
fn parse_trailers(message: &str) -> Vec<(String, String)> {
    let trimmed = message.trim_end();
    let Some(start) = trimmed.rfind("\n\n").map(|i| i + 2) else {
        return Vec::new();
    };
    let mut trailers = Vec::new();
    for line in trimmed[start..].lines() {
        let Some((key, value)) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
        else {
            return Vec::new();
        };
        if validate_trailer_key(key).is_err() {
            return Vec::new();
        }
        trailers.push((key.to_owned(), value.trim().to_owned()));
    }
    trailers
}

pub(crate) fn serialize_commit(
    tree: ObjectId,
    parent: Option<ObjectId>,
    author: &Identity,
    committer: &Identity,
    time: Timestamp,
    message: &str,
) -> Result<Vec<u8>, GitError> {
    author.validate()?;
    committer.validate()?;
    let mut out = format!("tree {tree}\n");
    if let Some(parent) = parent {
        out.push_str(&format!("parent {parent}\n"));
    }
    let when = time.git_format();
    out.push_str(&format!(
        "author {} <{}> {when}\n",
        author.name.trim(),
        author.email.trim()
    ));
    out.push_str(&format!(
        "committer {} <{}> {when}\n\n",
        committer.name.trim(),
        committer.email.trim()
    ));
    out.push_str(message);
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips_its_trailers() {
        let trailers = vec![
            ("Service".to_owned(), "checkout".to_owned()),
            ("Tug-Request".to_owned(), "r-1".to_owned()),
        ];
        let message = format_message("deploy checkout", "Bumps the image.\n", &trailers).unwrap();
        assert_eq!(
            message,
            "deploy checkout\n\nBumps the image.\n\nService: checkout\nTug-Request: r-1\n"
        );
        assert_eq!(parse_trailers(&message), trailers);
    }

    #[test]
    fn a_prose_last_paragraph_has_no_trailers() {
        assert!(parse_trailers("title\n\nthis is: not only\ntrailers here\n").is_empty());
        assert!(parse_trailers("title only\n").is_empty());
    }

    #[test]
    fn bad_trailers_and_identities_are_refused() {
        assert!(format_message("t", "", &[("Bad Key".to_owned(), "v".to_owned())]).is_err());
        assert!(format_message("t", "", &[("K".to_owned(), "a\nb".to_owned())]).is_err());
        assert!(Identity::new("Eve <x>", "e@x").validate().is_err());
    }

    #[test]
    fn timestamps_carry_their_offset() {
        assert_eq!(
            Timestamp {
                seconds: 10,
                offset_minutes: -90
            }
            .git_format(),
            "10 -0130"
        );
        assert_eq!(
            Timestamp {
                seconds: 10,
                offset_minutes: 120
            }
            .git_format(),
            "10 +0200"
        );
    }
}
