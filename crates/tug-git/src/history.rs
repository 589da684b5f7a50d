//! Reading a branch's first-parent history with messages, in-process through the mirror's object
//! reader: what the release index is rebuilt from.

use crate::error::GitError;
use crate::mirror::Mirror;
use crate::object::{ObjectId, ObjectKind};

/// One commit of a branch's history, as the release index needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryCommit {
    pub commit: ObjectId,
    /// Committer time, seconds since the epoch.
    pub committed_at: i64,
    pub author_name: String,
    pub author_email: String,
    pub committer_name: String,
    pub committer_email: String,
    /// The whole message (title, body, trailers).
    pub message: String,
}

/// The part of a history walk that was read, and whether it reached the commit to stop at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    /// Newest first; excludes the commit the walk stopped at.
    pub commits: Vec<HistoryCommit>,
    /// True when the walk met `stop_at`; false when it reached the root or the limit first (so a
    /// `stop_at` that is no longer an ancestor, after a force push, shows as false).
    pub reached_stop: bool,
}

impl Mirror {
    /// Walks the first-parent history from `tip` back to (not including) `stop_at`, reading at
    /// most `max_commits` commits. Merges count as one step on the branch, as `git log
    /// --first-parent` shows them.
    pub fn first_parent_history(
        &self,
        tip: ObjectId,
        stop_at: Option<ObjectId>,
        max_commits: usize,
    ) -> Result<History, GitError> {
        let mut commits = Vec::new();
        let mut next = Some(tip);
        while let Some(oid) = next {
            if Some(oid) == stop_at {
                return Ok(History {
                    commits,
                    reached_stop: true,
                });
            }
            if commits.len() >= max_commits {
                break;
            }
            let data = self.store().read_kind(oid, ObjectKind::Commit)?;
            let (commit, parent) = parse_commit(oid, &data)?;
            commits.push(commit);
            next = parent;
        }
        Ok(History {
            commits,
            reached_stop: false,
        })
    }
}

/// Splits `Name <email> 1700000000 +0000` into name, email and time.
fn parse_person(value: &str) -> Option<(String, String, i64)> {
    let (name, rest) = value.split_once('<')?;
    let (email, rest) = rest.split_once('>')?;
    let seconds = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.trim().to_owned(), email.trim().to_owned(), seconds))
}

fn parse_commit(oid: ObjectId, data: &[u8]) -> Result<(HistoryCommit, Option<ObjectId>), GitError> {
    let corrupt = |reason: &str| GitError::CorruptObject {
        oid,
        reason: reason.to_owned(),
    };
    let text = String::from_utf8_lossy(data);
    let (headers, message) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut parent = None;
    let mut author = None;
    let mut committer = None;
    for line in headers.lines() {
        // Continuation lines (a signature's) start with a space and belong to the header above.
        if line.starts_with(' ') {
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "parent" if parent.is_none() => {
                parent = Some(
                    ObjectId::from_hex(value.trim())
                        .ok_or_else(|| corrupt("a parent is not a commit id"))?,
                );
            }
            "author" => author = parse_person(value),
            "committer" => committer = parse_person(value),
            _ => {}
        }
    }
    let (committer_name, committer_email, committed_at) =
        committer.ok_or_else(|| corrupt("the committer line is missing or malformed"))?;
    let (author_name, author_email, _) =
        author.unwrap_or_else(|| (String::new(), String::new(), committed_at));
    Ok((
        HistoryCommit {
            commit: oid,
            committed_at,
            author_name,
            author_email,
            committer_name,
            committer_email,
            message: message.to_owned(),
        },
        parent,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_first_parent_author_committer_and_message() {
        let oid = ObjectId::from_bytes([1; 20]);
        let data = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
parent 0202020202020202020202020202020202020202\n\
parent 0303030303030303030303030303030303030303\n\
author Alice Example <alice@example.com> 1700000000 +0100\n\
committer tug <tug@localhost> 1700000060 +0000\n\
gpgsig -----BEGIN PGP SIGNATURE-----\n \n -----END PGP SIGNATURE-----\n\
\n\
[dev/api] release a-1 by alice@example.com\n\nService: api\n";
        let (commit, parent) = parse_commit(oid, data).unwrap();
        assert_eq!(parent, ObjectId::from_hex(&"02".repeat(20)));
        assert_eq!(commit.author_name, "Alice Example");
        assert_eq!(commit.author_email, "alice@example.com");
        assert_eq!(commit.committer_name, "tug");
        assert_eq!(commit.committed_at, 1_700_000_060);
        assert_eq!(
            commit.message,
            "[dev/api] release a-1 by alice@example.com\n\nService: api\n"
        );
    }

    #[test]
    fn a_commit_without_committer_is_corrupt() {
        let oid = ObjectId::from_bytes([1; 20]);
        let err =
            parse_commit(oid, b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\nx\n").unwrap_err();
        assert!(err.to_string().contains("committer"), "{err}");
    }
}
