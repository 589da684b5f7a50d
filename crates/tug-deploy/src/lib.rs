//! A deploy request through the git write path: the edits of a branch update become a
//! [`tug_git::Change`], with a commit message that says what changed and trailers that let history be
//! rebuilt from git alone. Used by `tug apply --push` and by the server's writers, so both write the
//! same commits.

use tug_git::{ChangeError, DirEntry, EntryKind, FileSource};
use tug_spec::{Files, FilesError, PathUpdate};

mod change;

pub use change::{CHANGED_CONCURRENTLY, FilePrecondition, TaskChange, WholeFile};
/// Trailer carrying the request (task) id: a writer that crashed after pushing finds its commit by it.
pub use tug_release::trailers::TUG_ACTOR as ACTOR_TRAILER;
pub use tug_release::trailers::TUG_REQUEST as REQUEST_TRAILER;
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

/// The additions of the latest [`tug_git::Change::apply`] of a [`DeployChange`].
#[derive(Debug, Clone, Default)]
pub struct Created(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Created {
    /// The additions of the latest application, one line each.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub(crate) fn set(&self, lines: Vec<String>) {
        if let Ok(mut c) = self.0.lock() {
            *c = lines;
        }
    }
}

pub(crate) fn generated_title(paths: &[PathUpdate], edits: &[String]) -> String {
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
        let change = |read: Option<&[u8]>| {
            TaskChange::files(
                "file:///r",
                &Identity::new("CI", "ci@example.com"),
                "[policies/api] apply".into(),
                Vec::new(),
                vec![WholeFile {
                    path: "policies/api.json".into(),
                    content: b"{\"v\":3}".to_vec(),
                }],
                vec![FilePrecondition {
                    path: "policies/api.json".into(),
                    content: read.map(<[u8]>::to_vec),
                }],
            )
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
    use tug_git::{FileWrite, Identity};
    use tug_spec::{ImageSpec, KustomizeUpdate, PathsAt};

    fn kustomize(path: &str, tag: &str) -> PathUpdate {
        PathUpdate {
            path: path.into(),
            kustomize: Some(KustomizeUpdate {
                images: vec![ImageSpec {
                    name: "registry.example.com/app".into(),
                    new_tag: Some(tag.into()),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }
    }

    fn change(paths: Vec<PathUpdate>, message: Option<&str>) -> TaskChange {
        let mut change = TaskChange::deploy(
            "file:///r",
            &Identity::new("CI", "ci@example.com"),
            message.map(str::to_owned),
        )
        .for_request("req-1");
        change.redeploy_value = "t".into();
        change.trailers = vec![("Source-Commit".into(), "abc123".into())];
        change.push_segment(PathsAt {
            field: "paths".into(),
            paths,
        });
        change
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
        let mut change = change(Vec::new(), Some("[dev/web] release a by b"));
        change.segments.clear();
        change.files = vec![
            WholeFile {
                path: "dev/releases/dev/web/same.yaml".into(),
                content: b"same".to_vec(),
            },
            WholeFile {
                path: "dev/releases/dev/web/new.yaml".into(),
                content: b"new".to_vec(),
            },
        ];
        change.replace_dirs = vec!["dev/releases/dev/web".into()];
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
    fn the_stored_form_keeps_its_field_names_and_any_bytes() {
        let mut change = change(vec![kustomize("a", "1")], None);
        change.files = vec![WholeFile {
            path: "bin".into(),
            content: vec![0, 159, 146, 150],
        }];
        change.preconditions = vec![FilePrecondition {
            path: "gone".into(),
            content: None,
        }];
        let stored = serde_json::to_value(&change).unwrap();
        assert_eq!(stored["files"][0]["content_base64"], "AJ+Slg==");
        assert_eq!(
            stored["preconditions"][0]["content_base64"],
            serde_json::Value::Null
        );
        assert!(
            stored.get("request_id").is_none(),
            "the job id is not stored twice"
        );
        let back: TaskChange = serde_json::from_value(stored).unwrap();
        assert_eq!(back.files, change.files);
        assert_eq!(back.preconditions, change.preconditions);
        assert_eq!(back.segments, change.segments);
    }

    #[test]
    fn the_actor_is_stored_and_written_as_a_trailer_after_the_request() {
        let change = change(vec![kustomize("a", "1")], None).by_actor("ci-bot");
        let stored = serde_json::to_value(&change).unwrap();
        assert_eq!(stored["actor"], "ci-bot");
        let back: TaskChange = serde_json::from_value(stored).unwrap();
        let meta = tug_git::Change::commit_meta(&back.for_request("req-1"));
        assert_eq!(
            meta.trailers[..2],
            [
                (REQUEST_TRAILER.to_owned(), "req-1".to_owned()),
                (ACTOR_TRAILER.to_owned(), "ci-bot".to_owned()),
            ]
        );

        // A task stored before the actor was recorded lands without the trailer.
        let mut old = serde_json::to_value(change).unwrap();
        old.as_object_mut().unwrap().remove("actor");
        let back: TaskChange = serde_json::from_value(old).unwrap();
        let meta = tug_git::Change::commit_meta(&back.for_request("req-1"));
        assert!(meta.trailers.iter().all(|(k, _)| k != ACTOR_TRAILER));
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
