//! A deploy request through the git write path: the edits of a branch update become a
//! [`tug_git::Change`], with a commit message that says what changed and trailers that let history be
//! rebuilt from git alone. Used by `tug apply --push` and by the server's writers, so both write the
//! same commits.

use tug_git::{ChangeError, CommitMeta, DirEntry, EntryKind, FileSource, FileWrite, Identity};
use tug_spec::{Files, FilesError, PathUpdate, PathsAt};

/// Trailer carrying the request (task) id: a writer that crashed after pushing finds its commit by it.
pub const REQUEST_TRAILER: &str = "Tug-Request";
/// One trailer per edit, describing it.
pub const CHANGE_TRAILER: &str = "Tug-Change";

/// The files of a commit in a mirror, as the spec layer reads them.
pub struct GitFiles<'a>(pub &'a dyn FileSource);

fn files_error(path: &str, e: &ChangeError) -> FilesError {
    FilesError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl Files for GitFiles<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
        match self.0.entry_kind(path).map_err(|e| files_error(path, &e))? {
            None => Ok(None),
            Some(EntryKind::Symlink) => Err(FilesError::Symlink {
                path: path.to_owned(),
            }),
            Some(EntryKind::File | EntryKind::Executable) => {
                self.0.read_file(path).map_err(|e| files_error(path, &e))
            }
            Some(EntryKind::Dir) => Err(FilesError::Io {
                path: path.to_owned(),
                message: "is a directory".to_owned(),
            }),
            Some(EntryKind::Submodule) => Err(FilesError::Io {
                path: path.to_owned(),
                message: "is a submodule".to_owned(),
            }),
        }
    }

    fn list(&self, dir: &str) -> Result<Option<Vec<String>>, FilesError> {
        if !dir.is_empty() {
            match self.0.entry_kind(dir).map_err(|e| files_error(dir, &e))? {
                None => return Ok(None),
                Some(EntryKind::Dir) => {}
                Some(EntryKind::Symlink) => {
                    return Err(FilesError::Symlink {
                        path: dir.to_owned(),
                    });
                }
                Some(_) => {
                    return Err(FilesError::Io {
                        path: dir.to_owned(),
                        message: "is not a directory".to_owned(),
                    });
                }
            }
        }
        let entries: Vec<DirEntry> = self.0.list_dir(dir).map_err(|e| files_error(dir, &e))?;
        Ok(Some(
            entries
                .into_iter()
                .filter(|e| matches!(e.kind, EntryKind::File | EntryKind::Executable))
                .map(|e| e.name)
                .collect(),
        ))
    }
}

/// Who asked and how the commit should read.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub author: Identity,
    /// The requester's message; its first line becomes the title. Generated when absent.
    pub message: Option<String>,
    /// Extra trailers, after tug's own.
    pub trailers: Vec<(String, String)>,
    /// Commit even when nothing changes.
    pub allow_empty: bool,
}

/// The edits of one request on one branch.
#[derive(Debug, Clone)]
pub struct DeployChange {
    /// Recorded as the `Tug-Request` trailer.
    pub request_id: String,
    /// The path updates, with where each group sits in the request (for error messages).
    pub segments: Vec<PathsAt>,
    pub context: tug_spec::Context,
    pub commit: CommitInfo,
    /// What the last application of the edits added (`tug_spec::Applied::created`); clones
    /// share it, so the caller of `tug_git::land` reads it from its own copy.
    pub created: Created,
}

/// The additions of the latest [`tug_git::Change::apply`] of a [`DeployChange`].
#[derive(Debug, Clone, Default)]
pub struct Created(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Created {
    /// The additions of the latest application, one line each.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set(&self, lines: Vec<String>) {
        if let Ok(mut c) = self.0.lock() {
            *c = lines;
        }
    }
}

impl tug_git::Change for DeployChange {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError> {
        let applied = tug_spec::apply_segments(&self.segments, &GitFiles(files), &self.context)
            .map_err(|e| ChangeError::Invalid(e.to_string()))?;
        // A re-application (after a rejected push) replaces what an earlier one found.
        self.created.set(applied.created);
        Ok(applied
            .changes
            .into_iter()
            .map(|c| FileWrite::put(c.path, c.content))
            .collect())
    }

    fn commit_meta(&self) -> CommitMeta {
        let paths: Vec<PathUpdate> = self
            .segments
            .iter()
            .flat_map(|s| s.paths.iter().cloned())
            .collect();
        let edits = describe_paths(&paths);
        let (title, body) = match self.commit.message.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => match m.split_once('\n') {
                Some((title, rest)) => (title.trim().to_owned(), rest.trim().to_owned()),
                None => (m.to_owned(), String::new()),
            },
            _ => (generated_title(&paths, &edits), String::new()),
        };
        let mut meta = CommitMeta::new(self.commit.author.clone(), title).with_body(body);
        meta.allow_empty = self.commit.allow_empty;
        meta = meta.with_trailer(REQUEST_TRAILER, self.request_id.clone());
        for e in edits {
            meta = meta.with_trailer(CHANGE_TRAILER, e);
        }
        for (k, v) in &self.commit.trailers {
            meta = meta.with_trailer(k.clone(), v.clone());
        }
        meta
    }
}

/// A file written whole, after the edits: a policies file, a manifest copied from a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WholeFile {
    pub path: String,
    pub content: Vec<u8>,
}

/// What a file must hold when a change applies: the content it was computed from (`None`: the
/// file must not exist). A read-modify-write change (a policies file) that finds something else
/// fails instead of overwriting a concurrent change; its author re-reads and tries again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePrecondition {
    pub path: String,
    pub content: Option<Vec<u8>>,
}

/// The start of the message of a change refused by a [`FilePrecondition`], for callers that
/// retry such a change from a fresh read.
pub const CHANGED_CONCURRENTLY: &str = "changed since it was read";

/// A deploy change plus files written whole. `replace_dirs` are directories the files own: any
/// file under one of them that the change does not write is deleted, so a release that copies a
/// new set of manifests leaves none of the previous set behind.
#[derive(Debug, Clone)]
pub struct ChangeWithFiles {
    pub edits: DeployChange,
    pub files: Vec<WholeFile>,
    pub replace_dirs: Vec<String>,
    pub preconditions: Vec<FilePrecondition>,
}

/// Every file under `dir` (recursively), as repository paths.
fn files_under(
    files: &dyn FileSource,
    dir: &str,
    out: &mut Vec<String>,
) -> Result<(), ChangeError> {
    match files.entry_kind(dir)? {
        Some(EntryKind::Dir) => {}
        _ => return Ok(()),
    }
    for entry in files.list_dir(dir)? {
        let path = format!("{dir}/{}", entry.name);
        match entry.kind {
            EntryKind::Dir => files_under(files, &path, out)?,
            EntryKind::Submodule => {}
            EntryKind::File | EntryKind::Executable | EntryKind::Symlink => out.push(path),
        }
    }
    Ok(())
}

impl tug_git::Change for ChangeWithFiles {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError> {
        for p in &self.preconditions {
            if files.read_file(&p.path)? != p.content {
                return Err(ChangeError::edit(
                    p.path.clone(),
                    format!("{CHANGED_CONCURRENTLY} (another change landed first)"),
                ));
            }
        }
        let mut writes: Vec<FileWrite> = if self.edits.segments.is_empty() {
            Vec::new()
        } else {
            tug_git::Change::apply(&self.edits, files)?
        };
        // A whole file wins over an edit of the same path: it was computed as the final content.
        writes.retain(|w| !self.files.iter().any(|f| f.path == w.path));
        for dir in &self.replace_dirs {
            let dir = dir.trim_end_matches('/');
            let mut existing = Vec::new();
            files_under(files, dir, &mut existing)?;
            for path in existing {
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
        let mut meta = self.edits.commit_meta();
        let position = meta
            .trailers
            .iter()
            .rposition(|(k, _)| k == CHANGE_TRAILER || k == REQUEST_TRAILER)
            .map_or(0, |i| i + 1);
        let described: Vec<(String, String)> = self
            .files
            .iter()
            .map(|f| (CHANGE_TRAILER.to_owned(), format!("write {}", f.path)))
            .collect();
        meta.trailers.splice(position..position, described);
        meta
    }
}

fn generated_title(paths: &[PathUpdate], edits: &[String]) -> String {
    match (paths, edits) {
        ([p], [one]) => format!("deploy({}): {}", display_path(&p.path), strip_location(one)),
        ([p], many) => format!("deploy({}): {} edits", display_path(&p.path), many.len()),
        (ps, many) => format!("deploy: {} edits in {} paths", many.len(), ps.len()),
    }
}

fn display_path(path: &str) -> String {
    tug_spec::normalize_repo_path(path)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| ".".to_owned())
}

/// Edit descriptions end with " in <path>"; the title names the path already.
fn strip_location(edit: &str) -> &str {
    edit.rsplit_once(" in ").map_or(edit, |(what, _)| what)
}

/// One line per edit, from the request alone (not from the files), so the same request always
/// describes itself the same way; each edit kind words itself in `tug_spec`.
pub fn describe_paths(paths: &[PathUpdate]) -> Vec<String> {
    paths.iter().flat_map(PathUpdate::describe).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_precondition_refuses_a_file_that_changed_since_it_was_read() {
        let files = MemoryFiles(vec![("policies/api.json", "{\"v\":2}")]);
        let change = |read: Option<&[u8]>| ChangeWithFiles {
            edits: change(Vec::new(), Some("[policies/api] apply")),
            files: vec![WholeFile {
                path: "policies/api.json".into(),
                content: b"{\"v\":3}".to_vec(),
            }],
            replace_dirs: Vec::new(),
            preconditions: vec![FilePrecondition {
                path: "policies/api.json".into(),
                content: read.map(<[u8]>::to_vec),
            }],
        };
        let writes = tug_git::Change::apply(&change(Some(b"{\"v\":2}")), &files).unwrap();
        assert_eq!(
            writes,
            vec![FileWrite::put("policies/api.json", b"{\"v\":3}".to_vec())]
        );
        for stale in [Some(b"{\"v\":1}".as_slice()), None] {
            let error = tug_git::Change::apply(&change(stale), &files).unwrap_err();
            assert!(error.to_string().contains(CHANGED_CONCURRENTLY), "{error}");
        }
    }

    use super::*;
    use tug_spec::{ImageRef, KustomizeUpdate};

    fn kustomize(path: &str, tag: &str) -> PathUpdate {
        PathUpdate {
            path: path.into(),
            kustomize: Some(KustomizeUpdate {
                images: vec![ImageRef {
                    name: "registry.example.com/app".into(),
                    new_tag: Some(tag.into()),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    fn change(paths: Vec<PathUpdate>, message: Option<&str>) -> DeployChange {
        DeployChange {
            request_id: "req-1".into(),
            segments: vec![PathsAt {
                field: "paths".into(),
                paths,
            }],
            context: tug_spec::Context {
                redeploy_value: "t".into(),
                strict: false,
            },
            created: Created::default(),
            commit: CommitInfo {
                author: Identity::new("CI", "ci@example.com"),
                message: message.map(str::to_owned),
                trailers: vec![("Source-Commit".into(), "abc123".into())],
                allow_empty: false,
            },
        }
    }

    /// Files in memory, for changes that only write whole files.
    struct MemoryFiles(Vec<(&'static str, &'static str)>);

    impl FileSource for MemoryFiles {
        fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ChangeError> {
            Ok(self
                .0
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, c)| c.as_bytes().to_vec()))
        }
        fn entry_kind(&self, path: &str) -> Result<Option<EntryKind>, ChangeError> {
            if self.0.iter().any(|(p, _)| *p == path) {
                return Ok(Some(EntryKind::File));
            }
            let prefix = format!("{path}/");
            Ok(self
                .0
                .iter()
                .any(|(p, _)| p.starts_with(&prefix))
                .then_some(EntryKind::Dir))
        }
        fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>, ChangeError> {
            let prefix = format!("{path}/");
            let mut names: Vec<DirEntry> = Vec::new();
            for (p, _) in &self.0 {
                if let Some(rest) = p.strip_prefix(&prefix) {
                    let (name, kind) = match rest.split_once('/') {
                        Some((dir, _)) => (dir, EntryKind::Dir),
                        None => (rest, EntryKind::File),
                    };
                    if !names.iter().any(|e| e.name == name) {
                        names.push(DirEntry {
                            name: name.to_owned(),
                            kind,
                        });
                    }
                }
            }
            Ok(names)
        }
    }

    #[test]
    fn whole_files_replace_the_directory_they_own() {
        let files = MemoryFiles(vec![
            ("dev/releases/dev/web/old.yaml", "old"),
            ("dev/releases/dev/web/same.yaml", "same"),
            ("dev/releases/dev/web/sub/nested.yaml", "nested"),
            ("dev/other.yaml", "kept"),
        ]);
        let change = ChangeWithFiles {
            edits: change(Vec::new(), Some("[dev/web] release a by b")),
            files: vec![
                WholeFile {
                    path: "dev/releases/dev/web/same.yaml".into(),
                    content: b"same".to_vec(),
                },
                WholeFile {
                    path: "dev/releases/dev/web/new.yaml".into(),
                    content: b"new".to_vec(),
                },
            ],
            replace_dirs: vec!["dev/releases/dev/web".into()],
            preconditions: Vec::new(),
        };
        let mut writes = tug_git::Change::apply(&change, &files).unwrap();
        writes.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(
            writes,
            vec![
                FileWrite::put("dev/releases/dev/web/new.yaml", b"new".to_vec()),
                FileWrite::delete("dev/releases/dev/web/old.yaml"),
                FileWrite::delete("dev/releases/dev/web/sub/nested.yaml"),
            ]
        );
        let meta = tug_git::Change::commit_meta(&change);
        assert_eq!(meta.title, "[dev/web] release a by b");
        assert_eq!(
            meta.trailers,
            vec![
                ("Tug-Request".to_owned(), "req-1".to_owned()),
                (
                    "Tug-Change".to_owned(),
                    "write dev/releases/dev/web/same.yaml".to_owned()
                ),
                (
                    "Tug-Change".to_owned(),
                    "write dev/releases/dev/web/new.yaml".to_owned()
                ),
                ("Source-Commit".to_owned(), "abc123".to_owned()),
            ]
        );
    }

    #[test]
    fn generated_title_names_path_and_image() {
        let meta =
            tug_git::Change::commit_meta(&change(vec![kustomize("apps/a/dev/", "1.2.3")], None));
        assert_eq!(
            meta.title,
            "deploy(apps/a/dev): set image registry.example.com/app:1.2.3"
        );
        assert_eq!(
            meta.trailers,
            vec![
                ("Tug-Request".to_owned(), "req-1".to_owned()),
                (
                    "Tug-Change".to_owned(),
                    "set image registry.example.com/app:1.2.3 in apps/a/dev".to_owned()
                ),
                ("Source-Commit".to_owned(), "abc123".to_owned()),
            ]
        );
    }

    #[test]
    fn user_message_becomes_title_and_body() {
        let meta = tug_git::Change::commit_meta(&change(
            vec![kustomize("a", "1"), kustomize("b", "2")],
            Some("update image tag to v1.2.3\n\nfrom pipeline 42\n"),
        ));
        assert_eq!(meta.title, "update image tag to v1.2.3");
        assert_eq!(meta.body, "from pipeline 42");
        assert_eq!(
            meta.trailers
                .iter()
                .filter(|(k, _)| k == CHANGE_TRAILER)
                .count(),
            2
        );
    }
}
