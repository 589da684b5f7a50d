//! Errors of the git write path.

use std::path::PathBuf;

use crate::oid::ObjectId;

/// A failure of a git operation. [`GitError::is_transient`] tells a caller whether retrying the
/// same request later can succeed (remote unreachable, branch too busy) or not (credentials,
/// hooks, corrupt data, a bad path).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The writer lost its hold on the branch (another replica took its lease over) before it
    /// pushed; nothing was pushed.
    #[error("this writer no longer holds branch {branch}; nothing was pushed")]
    Fenced { branch: String },
    #[error("cannot reach remote {url} during git {op}: {detail}")]
    Unreachable {
        op: &'static str,
        url: String,
        detail: String,
    },
    #[error("remote {url} refused the credentials during git {op}: {detail}")]
    AuthFailed {
        op: &'static str,
        url: String,
        detail: String,
    },
    #[error("remote {url} rejected the push to branch {branch}: {reason}")]
    PushRejected {
        url: String,
        branch: String,
        reason: String,
    },
    #[error("branch {branch} on {url} moved under every one of {attempts} push attempts")]
    BranchContended {
        url: String,
        branch: String,
        attempts: u32,
    },
    #[error("git {op} failed ({status}): {detail}")]
    Command {
        op: &'static str,
        status: String,
        detail: String,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("repository {path} is not supported: {reason}")]
    UnsupportedRepository { path: PathBuf, reason: String },
    #[error("remote URL is refused: {reason}")]
    InvalidRemote { reason: String },
    #[error("branch name {branch:?} is invalid: {reason}")]
    InvalidBranch { branch: String, reason: String },
    #[error("trailer key {key:?} is invalid: {reason}")]
    InvalidTrailer { key: String, reason: String },
    #[error("identity {value:?} is invalid: {reason}")]
    InvalidIdentity { value: String, reason: String },
    /// The commit could not be signed. The reason is tug's words, `ssh-keygen`'s or the OpenPGP
    /// parser's, none of which ever quote the key.
    #[error("cannot sign with key file {key_file}: {reason}")]
    Signing { key_file: PathBuf, reason: String },
    #[error("object {oid} is missing from the mirror")]
    MissingObject { oid: ObjectId },
    #[error("object {oid} is malformed: {reason}")]
    CorruptObject { oid: ObjectId, reason: String },
    #[error("git cat-file of mirror {path} failed: {detail}")]
    ObjectReader { path: PathBuf, detail: String },
    #[error("ref {name} in {path} is malformed: {reason}")]
    CorruptRef {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("ref {name} in {path} changed while it was being updated")]
    RefRace { path: PathBuf, name: String },
}

impl GitError {
    /// True when the same operation may succeed if tried again later without any change by a
    /// human: the network failed, the branch was too busy, or a local ref kept changing under
    /// the update (another process was writing it).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GitError::Unreachable { .. }
                | GitError::BranchContended { .. }
                | GitError::RefRace { .. }
        )
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        GitError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Why one change of a batch could not be applied. The change is skipped; the rest of the batch
/// goes on.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change's own logic refused (target missing, value invalid, ...).
    #[error("{path}: {message}")]
    Edit { path: String, message: String },
    /// The change as a whole is invalid, independent of one file.
    #[error("{0}")]
    Invalid(String),
    /// A path given by the change cannot be read or written at that commit.
    #[error("path {path:?}: {reason}")]
    Path { path: String, reason: String },
    /// The mirror failed underneath the change; the whole landing stops.
    #[error(transparent)]
    Git(#[from] GitError),
}

impl ChangeError {
    pub fn edit(path: impl Into<String>, message: impl Into<String>) -> Self {
        ChangeError::Edit {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn path(path: &str, reason: impl Into<String>) -> Self {
        ChangeError::Path {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }
}
