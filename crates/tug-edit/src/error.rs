//! Errors of the edit engine. Every refusal names the file and, where one exists, the 1-based line
//! and column in the file the problem was found at.

use std::fmt;

/// Why an edit was refused. The input is never modified: [`crate::apply`] returns this instead of
/// an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError {
    /// The file name the caller passed to [`crate::apply`].
    pub file: String,
    /// 1-based line in the file, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column (in characters) in the file, when the problem has a position.
    pub column: Option<usize>,
    /// What went wrong.
    pub kind: EditErrorKind,
}

impl EditError {
    pub(crate) fn new(file: &str, kind: EditErrorKind) -> Self {
        EditError {
            file: file.to_owned(),
            line: None,
            column: None,
            kind,
        }
    }

    pub(crate) fn at(file: &str, pos: Option<Pos>, kind: EditErrorKind) -> Self {
        EditError {
            file: file.to_owned(),
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            kind,
        }
    }
}

/// A 1-based line and column in the edited file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl EditErrorKind {
    pub(crate) fn path_kind(path: &str, at: &str, expected: &str, found: &str) -> Self {
        EditErrorKind::PathKind {
            path: path.to_owned(),
            message: format!("expected {expected} at {at}, found {found}"),
        }
    }
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(col)) => write!(f, "{}:{}:{}: {}", self.file, line, col, self.kind),
            (Some(line), None) => write!(f, "{}:{}: {}", self.file, line, self.kind),
            _ => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

impl std::error::Error for EditError {}

/// The reason of an [`EditError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditErrorKind {
    /// The file is not valid UTF-8.
    #[error("file is not valid UTF-8")]
    InvalidUtf8,
    /// The file is not valid YAML.
    #[error("invalid YAML: {0}")]
    InvalidYaml(String),
    /// The file exceeds one of the engine's size limits.
    #[error("file is too large to edit safely: {0}")]
    TooLarge(String),
    /// Expanding the aliases of the file would produce more nodes than any real manifest has.
    #[error(
        "aliases would expand to more than {limit} nodes (alias bomb?); refusing to edit this file"
    )]
    AliasBomb {
        /// The node limit that was exceeded.
        limit: usize,
    },
    /// A mapping has the same key twice. YAML forbids it and readers disagree on which value
    /// wins (Helm, Go's `sigs.k8s.io/yaml` and PyYAML keep the last), so no edit is safe.
    #[error(
        "duplicate key {key:?} (first on line {first_line}); readers such as Helm and kubectl keep the last value, so remove one of them before editing"
    )]
    DuplicateKey {
        /// The key.
        key: String,
        /// The line of its first occurrence.
        first_line: usize,
    },
    /// An alias refers to the node that contains it.
    #[error("alias *{0} refers to a node that contains it; refusing to edit this file")]
    RecursiveAlias(String),
    /// The YAML path of the edit could not be parsed.
    #[error("invalid path {path:?} at column {column}: {message}")]
    PathSyntax {
        /// The path as given.
        path: String,
        /// 1-based column in the path.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// The path continues below a scalar.
    #[error("path {path} goes through the scalar at {at}, which has no children")]
    PathThroughScalar {
        /// The path as given.
        path: String,
        /// The part of the path that resolved to the scalar.
        at: String,
    },
    /// The path expects a different kind of node.
    #[error("path {path}: {message}")]
    PathKind {
        /// The path as given.
        path: String,
        /// What the path needs where, and what the file has there.
        message: String,
    },
    /// A part of the path that the engine does not create is missing.
    #[error("path {path}: {message}")]
    PathNotFound {
        /// The path as given.
        path: String,
        /// What is missing.
        message: String,
    },
    /// The edit would go through an alias.
    #[error("{what} goes through the alias *{alias}; edit the anchored node instead")]
    ThroughAlias {
        /// The edited thing.
        what: String,
        /// The alias name.
        alias: String,
    },
    /// The edit would go through a `<<` merge key.
    #[error("{what} may come from a `<<` merge key; edit the merged node instead")]
    ThroughMerge {
        /// The edited thing.
        what: String,
    },
    /// The edit would change an anchored node that aliases elsewhere share.
    #[error(
        "{what} is inside the anchor &{anchor}, which aliases share; editing it would change them too"
    )]
    SharedAnchor {
        /// The edited thing.
        what: String,
        /// The anchor name.
        anchor: String,
    },
    /// A redeploy annotation key is not a Kubernetes qualified name.
    #[error(
        "invalid annotation key {key:?}: {reason}; an annotation key is [PREFIX/]NAME, PREFIX a DNS subdomain of at most 253 characters, NAME 1 to 63 of [A-Za-z0-9-_.] starting and ending with a letter or digit"
    )]
    AnnotationKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A chart version that cannot be written.
    #[error("invalid chart version {version:?}: {reason}")]
    ChartVersion {
        /// The version as given.
        version: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More than one target matches where the edit needs exactly one.
    #[error("{0}")]
    Ambiguous(String),
    /// The value is not of the requested type.
    #[error("value {value:?} is not a {expected}")]
    ValueType {
        /// The value as given.
        value: String,
        /// The type it was required to have.
        expected: &'static str,
    },
    /// The target holds a mapping or sequence, not a scalar.
    #[error("{what} is a {found}; only scalars can be set")]
    NotAScalar {
        /// The edited thing.
        what: String,
        /// The node kind found.
        found: &'static str,
    },
    /// No container, kustomize image or Helm image matched.
    #[error("{0}")]
    NoMatch(String),
    /// The image spec does not fit the file.
    #[error("{0}")]
    ImageMismatch(String),
    /// The image spec is malformed.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The file has a layout the engine does not edit.
    #[error("{0}")]
    Unsupported(String),
    /// The engine's own check found that the edit would change more than its target. The input is
    /// left untouched; this is a bug in the engine worth reporting with the file.
    #[error("edit refused by verification: {0}")]
    Verification(String),
}
