//! The one stored contract of a task: what a deploy, a release or a policy change asks one
//! repository branch to become. Every producer builds it with its constructor, the store keeps
//! it as JSON, and the writer lands it as it is — it *is* the [`tug_git::Change`].

use serde::{Deserialize, Serialize};
use tug_git::{ChangeError, CommitMeta, FileSource, FileWrite, Identity};
use tug_release::ReleaseRecord;
use tug_release::trailers::{TUG_ACTOR, TUG_REQUEST, TrailerError};
use tug_spec::{PathUpdate, PathsAt};

use crate::{CHANGE_TRAILER, Created, GitFiles, describe_paths, generated_title};

/// A file written whole, after the edits: a policies file, a manifest copied from a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeFile {
    pub path: String,
    /// Base64 in the stored JSON, so any bytes survive it.
    #[serde(rename = "content_base64", with = "base64_bytes")]
    pub content: Vec<u8>,
}

/// What a file must hold when a change applies: the content it was computed from (`None`: the
/// file must not exist). A read-modify-write change (a policies file) that finds something else
/// fails instead of overwriting a concurrent change; its author re-reads and tries again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePrecondition {
    pub path: String,
    #[serde(rename = "content_base64", with = "base64_opt_bytes")]
    pub content: Option<Vec<u8>>,
}

/// The start of the message of a change refused by a [`FilePrecondition`], for callers that
/// retry such a change from a fresh read.
pub const CHANGED_CONCURRENTLY: &str = "changed since it was read";

/// Everything a writer needs to apply one task again, even after a restart. The field names are
/// the stored format: renaming one breaks tasks queued by an older version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskChange {
    /// The remote, as configured when the request was accepted.
    pub url: String,
    /// The path updates, with where each group sits in the request (for error messages).
    pub segments: Vec<PathsAt>,
    pub author_name: String,
    pub author_email: String,
    /// The requester's message; its first line becomes the title. Generated when absent.
    pub message: Option<String>,
    /// Trailers after tug's own (`Tug-Request`, `Tug-Change`), in order.
    pub trailers: Vec<(String, String)>,
    /// Commit even when nothing changes.
    pub allow_empty: bool,
    /// Chosen when the request was accepted, so re-applying the task writes the same value.
    pub redeploy_value: String,
    /// Refuse edits that would only add (see `tug_spec::Context::strict`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// Files written whole after the edits; a whole file wins over an edit of the same path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<WholeFile>,
    /// Directories `files` own: any other file under them is deleted, so a release that copies
    /// a new set of manifests leaves none of the previous set behind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace_dirs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preconditions: Vec<FilePrecondition>,
    /// Who asked (the authenticated name), written as the `Tug-Actor` trailer; empty for a
    /// task stored by an older version, which then has no such trailer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub actor: String,
    /// The job's id, written as the `Tug-Request` trailer. Not stored: it is the job's own id,
    /// set by whoever lands the change ([`TaskChange::for_request`]).
    #[serde(skip)]
    pub request_id: String,
    /// What the last application added (`tug_spec::Applied::created`).
    #[serde(skip)]
    pub created: Created,
}

impl TaskChange {
    /// A deploy request's change on one branch; the request's path updates are added with
    /// [`TaskChange::push_segment`].
    #[must_use]
    pub fn deploy(url: impl Into<String>, author: &Identity, message: Option<String>) -> Self {
        TaskChange {
            url: url.into(),
            segments: Vec::new(),
            author_name: author.name.clone(),
            author_email: author.email.clone(),
            message,
            trailers: Vec::new(),
            allow_empty: false,
            redeploy_value: String::new(),
            strict: false,
            files: Vec::new(),
            replace_dirs: Vec::new(),
            preconditions: Vec::new(),
            actor: String::new(),
            request_id: String::new(),
            created: Created::default(),
        }
    }

    /// A release: the record's title and trailers (structured until the commit is written), the
    /// edits of its targets, or the files it copies. Always strict: a release sets what the
    /// artifact names, and an edit that would only add is a mistake.
    ///
    /// # Errors
    /// A record whose trailers would not read back the same.
    pub fn release(
        url: impl Into<String>,
        author: &Identity,
        record: &ReleaseRecord,
        segments: Vec<PathsAt>,
        files: Vec<WholeFile>,
        replace_dirs: Vec<String>,
    ) -> Result<Self, TrailerError> {
        let mut change = Self::deploy(url, author, Some(record.title()));
        change.trailers = record.trailers()?;
        change.segments = segments;
        change.files = files;
        change.replace_dirs = replace_dirs;
        change.strict = true;
        Ok(change)
    }

    /// Files written whole from what was read (a policies file), or an empty commit that only
    /// records something in its trailers (an unpin, when `files` is empty).
    #[must_use]
    pub fn files(
        url: impl Into<String>,
        author: &Identity,
        title: String,
        trailers: Vec<(String, String)>,
        files: Vec<WholeFile>,
        preconditions: Vec<FilePrecondition>,
    ) -> Self {
        let mut change = Self::deploy(url, author, Some(title));
        change.trailers = trailers;
        change.allow_empty = files.is_empty();
        change.strict = true;
        change.files = files;
        change.preconditions = preconditions;
        change
    }

    /// Adds a group of path updates, with where it sits in the request.
    pub fn push_segment(&mut self, segment: PathsAt) {
        self.segments.push(segment);
    }

    /// The change as the job `request_id` lands it.
    #[must_use]
    pub fn for_request(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }

    /// The change as `actor` (the name the requester authenticated as) asked for it.
    #[must_use]
    pub fn by_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Every path update, in request order.
    pub fn paths(&self) -> impl Iterator<Item = &PathUpdate> {
        self.segments.iter().flat_map(|s| s.paths.iter())
    }

    fn context(&self) -> tug_spec::Context {
        tug_spec::Context {
            redeploy_value: self.redeploy_value.clone(),
            strict: self.strict,
        }
    }
}

impl tug_git::Change for TaskChange {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError> {
        for p in &self.preconditions {
            if files.read_file(&p.path)? != p.content {
                return Err(ChangeError::edit(
                    p.path.clone(),
                    format!("{CHANGED_CONCURRENTLY} (another change landed first)"),
                ));
            }
        }
        let mut writes: Vec<FileWrite> = if self.segments.is_empty() {
            Vec::new()
        } else {
            let applied =
                tug_spec::apply_segments(&self.segments, &GitFiles(files), &self.context())
                    .map_err(|e| ChangeError::Invalid(e.to_string()))?;
            // A re-application (after a rejected push) replaces what an earlier one found.
            self.created.set(applied.created);
            applied
                .changes
                .into_iter()
                .map(|c| FileWrite::put(c.path, c.content))
                .collect()
        };
        // A whole file wins over an edit of the same path: it was computed as the final content.
        writes.retain(|w| !self.files.iter().any(|f| f.path == w.path));
        for dir in &self.replace_dirs {
            let dir = dir.trim_end_matches('/');
            for path in tug_git::files_under(files, dir)? {
                if !self.files.iter().any(|f| f.path == path) {
                    writes.retain(|w| w.path != path);
                    writes.push(FileWrite::delete(path));
                }
            }
        }
        for f in &self.files {
            // Unchanged content is not rewritten, so a release of what runs is a no-op.
            if files.read_file(&f.path)?.as_deref() != Some(f.content.as_slice()) {
                writes.push(FileWrite::put(f.path.clone(), f.content.clone()));
            }
        }
        Ok(writes)
    }

    fn commit_meta(&self) -> CommitMeta {
        let paths: Vec<PathUpdate> = self.paths().cloned().collect();
        let edits = describe_paths(&paths);
        let (title, body) = match self.message.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => match m.split_once('\n') {
                Some((title, rest)) => (title.trim().to_owned(), rest.trim().to_owned()),
                None => (m.to_owned(), String::new()),
            },
            _ => (generated_title(&paths, &edits), String::new()),
        };
        let author = Identity::new(self.author_name.clone(), self.author_email.clone());
        let mut meta = CommitMeta::new(author, title).with_body(body);
        meta.allow_empty = self.allow_empty;
        meta = meta.with_trailer(TUG_REQUEST, self.request_id.clone());
        if !self.actor.is_empty() {
            meta = meta.with_trailer(TUG_ACTOR, self.actor.clone());
        }
        for e in edits {
            meta = meta.with_trailer(CHANGE_TRAILER, e);
        }
        for f in &self.files {
            meta = meta.with_trailer(CHANGE_TRAILER, format!("write {}", f.path));
        }
        for (k, v) in &self.trailers {
            meta = meta.with_trailer(k.clone(), v.clone());
        }
        meta
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

mod base64_opt_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` hands the field by reference.
    pub(super) fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
    }
}
