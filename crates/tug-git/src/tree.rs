//! Reading files at a commit and rewriting only the trees on the paths a change writes.

use std::collections::BTreeMap;

use crate::error::{ChangeError, GitError};
use crate::object::{EntryKind, EntryRef, ObjectId, ObjectKind, TreeEntry, serialize_tree};
use crate::pack::Batch;
use crate::store::ObjectView;

/// Read access to the files of one commit, given to a [`crate::Change`].
pub trait FileSource {
    /// The content of the file (or executable) at `path`; `None` when nothing is there.
    /// A directory, symlink or submodule at `path` is an error.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ChangeError>;
    /// What is at `path`; `None` when nothing is there. `""` is the root directory.
    fn entry_kind(&self, path: &str) -> Result<Option<EntryKind>, ChangeError>;
    /// The entries of the directory at `path` in git's order; `""` is the root directory.
    fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>, ChangeError>;
}

/// Every file under the directory `dir` of `files`, recursively, as repository paths in git's
/// order; submodules are left out. Nothing (not an error) when `dir` is not a directory.
pub fn files_under(files: &dyn FileSource, dir: &str) -> Result<Vec<String>, ChangeError> {
    fn walk(files: &dyn FileSource, dir: &str, out: &mut Vec<String>) -> Result<(), ChangeError> {
        for entry in files.list_dir(dir)? {
            let path = if dir.is_empty() {
                entry.name
            } else {
                format!("{dir}/{}", entry.name)
            };
            match entry.kind {
                EntryKind::Dir => walk(files, &path, out)?,
                EntryKind::Submodule => {}
                EntryKind::File | EntryKind::Executable | EntryKind::Symlink => out.push(path),
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if files.entry_kind(dir)? == Some(EntryKind::Dir) {
        walk(files, dir, &mut out)?;
    }
    Ok(out)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryKind,
}

/// One file a change writes or deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWrite {
    pub path: String,
    pub action: FileAction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileAction {
    /// Writes the content. An existing file keeps its executable bit; a new file is not
    /// executable unless `executable` says so.
    Put {
        content: Vec<u8>,
        executable: Option<bool>,
    },
    Delete,
}

impl FileWrite {
    pub fn put(path: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            action: FileAction::Put {
                content: content.into(),
                executable: None,
            },
        }
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            action: FileAction::Delete,
        }
    }
}

/// Splits a repository path into components, refusing absolute paths, `.`/`..` and empty
/// components (which is also what keeps a change inside the repository).
pub fn split_path(path: &str) -> Result<Vec<&str>, ChangeError> {
    if path.is_empty() {
        return Err(ChangeError::path(path, "empty path"));
    }
    if path.starts_with('/') {
        return Err(ChangeError::path(path, "absolute paths are not allowed"));
    }
    let components: Vec<&str> = path.split('/').collect();
    for component in &components {
        match *component {
            "" => return Err(ChangeError::path(path, "empty path component")),
            "." | ".." => {
                return Err(ChangeError::path(
                    path,
                    "`.` and `..` components are not allowed",
                ));
            }
            ".git" => return Err(ChangeError::path(path, "`.git` components are not allowed")),
            c if c.contains('\0') => return Err(ChangeError::path(path, "NUL byte in path")),
            _ => {}
        }
    }
    Ok(components)
}

/// The files of one tree, read through the mirror's object reader (and, while a landing builds
/// its commits, from the objects it has created so far).
pub struct TreeView<'a> {
    objects: ObjectView<'a>,
    root: ObjectId,
}

impl<'a> TreeView<'a> {
    pub(crate) fn new(objects: ObjectView<'a>, root: ObjectId) -> Self {
        Self { objects, root }
    }

    pub fn root(&self) -> ObjectId {
        self.root
    }

    /// The entry at `path`, refusing to look through a symlink or file on the way.
    fn lookup(&self, path: &str) -> Result<Option<(EntryKind, ObjectId)>, ChangeError> {
        if path.is_empty() {
            return Ok(Some((EntryKind::Dir, self.root)));
        }
        let components = split_path(path)?;
        let mut tree = self.root;
        let last = components.len() - 1;
        for (depth, component) in components.iter().enumerate() {
            let entries = self.objects.read_tree(tree)?;
            let Some(entry) = entries
                .position(component.as_bytes())
                .and_then(|position| entries.get(position))
            else {
                return Ok(None);
            };
            let kind = entry_kind(&entry, tree)?;
            if depth == last {
                return Ok(Some((kind, entry.oid)));
            }
            match kind {
                EntryKind::Dir => tree = entry.oid,
                EntryKind::Symlink => {
                    let prefix = components[..=depth].join("/");
                    return Err(ChangeError::path(
                        path,
                        format!("{prefix} is a symlink; tug does not follow symlinks"),
                    ));
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

fn entry_kind(entry: &EntryRef<'_>, tree: ObjectId) -> Result<EntryKind, GitError> {
    entry.kind().ok_or_else(|| GitError::CorruptObject {
        oid: tree,
        reason: format!(
            "unknown mode {} for {}",
            String::from_utf8_lossy(entry.mode),
            String::from_utf8_lossy(entry.name)
        ),
    })
}

impl FileSource for TreeView<'_> {
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ChangeError> {
        match self.lookup(path)? {
            None => Ok(None),
            Some((EntryKind::File | EntryKind::Executable, oid)) => {
                Ok(Some(self.objects.read_kind(oid, ObjectKind::Blob)?))
            }
            Some((kind, _)) => Err(ChangeError::path(
                path,
                format!("is a {}, not a file", kind_name(kind)),
            )),
        }
    }

    fn entry_kind(&self, path: &str) -> Result<Option<EntryKind>, ChangeError> {
        Ok(self.lookup(path)?.map(|(kind, _)| kind))
    }

    fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>, ChangeError> {
        match self.lookup(path)? {
            Some((EntryKind::Dir, oid)) => self
                .objects
                .read_tree(oid)?
                .iter()
                .map(|entry| {
                    Ok(DirEntry {
                        name: String::from_utf8_lossy(entry.name).into_owned(),
                        kind: entry_kind(&entry, oid)?,
                    })
                })
                .collect(),
            Some((kind, _)) => Err(ChangeError::path(
                path,
                format!("is a {}, not a directory", kind_name(kind)),
            )),
            None => Err(ChangeError::path(path, "no such directory")),
        }
    }
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "file",
        EntryKind::Executable => "executable file",
        EntryKind::Symlink => "symlink",
        EntryKind::Dir => "directory",
        EntryKind::Submodule => "submodule",
    }
}

/// The writes of one change arranged by directory.
#[derive(Default)]
struct PathNode<'w> {
    children: BTreeMap<&'w str, PathNode<'w>>,
    action: Option<&'w FileAction>,
    /// A written path at or below this node, to name in errors.
    example: &'w str,
}

/// Applies `writes` to the tree `root` (read through `objects`, which must see `batch`) and
/// returns the new root tree; the new blobs and trees go into `batch`. Only the trees on the written paths are read and rewritten; unchanged content
/// yields the same object ids, so a change that writes what is already there gives back `root`
/// itself.
pub(crate) fn apply_writes(
    objects: ObjectView<'_>,
    batch: &Batch,
    root: ObjectId,
    writes: &[FileWrite],
) -> Result<ObjectId, ChangeError> {
    let mut top = PathNode::default();
    for write in writes {
        let components = split_path(&write.path)?;
        let mut node = &mut top;
        for (depth, component) in components.iter().enumerate() {
            if node.action.is_some() {
                let prefix = components[..depth].join("/");
                return Err(ChangeError::path(
                    &write.path,
                    format!("{prefix} is written as a file by the same change"),
                ));
            }
            node = node.children.entry(component).or_default();
            if node.example.is_empty() {
                node.example = &write.path;
            }
        }
        if node.action.is_some() {
            return Err(ChangeError::path(
                &write.path,
                "written twice by the same change",
            ));
        }
        if !node.children.is_empty() {
            return Err(ChangeError::path(
                &write.path,
                "written as a file and as a directory by the same change",
            ));
        }
        node.action = Some(&write.action);
    }
    match rewrite_tree(objects, batch, Some(root), &top, "")? {
        Some(oid) => Ok(oid),
        // Every file was deleted: the commit points at the empty tree.
        None => Ok(batch.add(ObjectKind::Tree, b"", Some(""))),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Returns the new tree id, or `None` when the tree ends up empty (git stores no empty trees).
fn rewrite_tree(
    objects: ObjectView<'_>,
    batch: &Batch,
    tree: Option<ObjectId>,
    node: &PathNode<'_>,
    prefix: &str,
) -> Result<Option<ObjectId>, ChangeError> {
    let current = match tree {
        Some(oid) => Some(objects.read_tree(oid)?),
        None => None,
    };
    let existing_entry = |name: &str| {
        let current = current.as_ref()?;
        let position = current.position(name.as_bytes())?;
        Some((position, current.get(position)?))
    };
    // What each written name becomes: its position in the current tree, if any, and its new
    // entry, `None` when it goes away. Names are distinct, so one's edit never moves another.
    let mut edits: Vec<(&str, Option<usize>, Option<TreeEntry>)> =
        Vec::with_capacity(node.children.len());
    for (name, child) in &node.children {
        let path = join(prefix, name);
        let found = existing_entry(name);
        let existing = match &found {
            Some((_, entry)) => Some(entry_kind(entry, tree.unwrap_or(entry.oid))?),
            None => None,
        };
        let replacement: Option<TreeEntry> = if let Some(action) = child.action {
            match existing {
                Some(EntryKind::Symlink) => {
                    return Err(ChangeError::path(
                        &path,
                        "is a symlink; tug does not write through symlinks",
                    ));
                }
                Some(EntryKind::Dir) => {
                    return Err(ChangeError::path(&path, "is a directory, not a file"));
                }
                Some(EntryKind::Submodule) => {
                    return Err(ChangeError::path(&path, "is a submodule, not a file"));
                }
                _ => {}
            }
            match action {
                FileAction::Delete => None,
                FileAction::Put {
                    content,
                    executable,
                } => {
                    let executable = executable.unwrap_or(existing == Some(EntryKind::Executable));
                    let keep_mode = found
                        .filter(|_| executable == (existing == Some(EntryKind::Executable)))
                        .map(|(_, entry)| entry.mode.to_vec());
                    let mode = keep_mode.unwrap_or_else(|| {
                        if executable {
                            b"100755".to_vec()
                        } else {
                            b"100644".to_vec()
                        }
                    });
                    let oid = crate::object::hash_object(ObjectKind::Blob, content);
                    let same =
                        found.is_some_and(|(_, entry)| entry.oid == oid && entry.mode == mode);
                    if !same {
                        batch.add(ObjectKind::Blob, content, None);
                    }
                    Some(TreeEntry {
                        mode,
                        name: name.as_bytes().to_vec(),
                        oid,
                    })
                }
            }
        } else {
            let subtree = match existing {
                None => None,
                Some(EntryKind::Dir) => found.map(|(_, entry)| entry.oid),
                Some(EntryKind::Symlink) => {
                    return Err(ChangeError::path(
                        child.example,
                        format!("{path} is a symlink; tug does not write through symlinks"),
                    ));
                }
                Some(kind) => {
                    return Err(ChangeError::path(
                        child.example,
                        format!("{path} is a {}, not a directory", kind_name(kind)),
                    ));
                }
            };
            rewrite_tree(objects, batch, subtree, child, &path)?.map(|oid| {
                let mode = found
                    .map(|(_, entry)| entry.mode.to_vec())
                    .unwrap_or_else(|| b"40000".to_vec());
                TreeEntry {
                    mode,
                    name: name.as_bytes().to_vec(),
                    oid,
                }
            })
        };
        let unchanged = match (&found, &replacement) {
            (Some((_, old)), Some(new)) => {
                old.oid == new.oid
                    && old.mode == new.mode.as_slice()
                    && old.name == new.name.as_slice()
            }
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            edits.push((name, found.map(|(position, _)| position), replacement));
        }
    }
    if edits.is_empty() {
        return Ok(tree);
    }
    // Almost every change only points entries at new objects: patch those ids into a copy of
    // the tree instead of rebuilding a directory of thousands of entries.
    if let Some(current) = &current {
        let repoint: Option<Vec<(usize, ObjectId)>> = edits
            .iter()
            .map(|(_, position, replacement)| match (position, replacement) {
                (Some(position), Some(new)) => current
                    .get(*position)
                    .filter(|old| old.mode == new.mode.as_slice())
                    .map(|_| (*position, new.oid)),
                _ => None,
            })
            .collect();
        if let Some(ids) = repoint {
            return Ok(Some(batch.add_tree(prefix, current.with_ids(&ids))));
        }
    }
    let mut entries = current.map(|tree| tree.to_entries()).unwrap_or_default();
    for (name, _, replacement) in edits {
        let position = entries.iter().position(|e| e.name == name.as_bytes());
        match (position, replacement) {
            (Some(i), Some(new)) => entries[i] = new,
            (Some(i), None) => {
                entries.remove(i);
            }
            (None, Some(new)) => entries.push(new),
            (None, None) => {}
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let data = serialize_tree(&mut entries);
    Ok(Some(batch.add(ObjectKind::Tree, &data, Some(prefix))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_inside_the_repository() {
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "a/../b",
            "./a",
            "a/",
            ".git/config",
            "a/.git/x",
        ] {
            assert!(split_path(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            split_path("apps/svc/dev/kustomization.yaml").unwrap().len(),
            4
        );
    }
}
