//! Object ids, hashing and tree encoding, done in-process so that a commit costs a few path
//! components rather than a process per object.

use std::cmp::Ordering;

use sha1::{Digest, Sha1};

use crate::error::GitError;
pub use crate::oid::ObjectId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Blob,
    Tree,
    Commit,
    Tag,
}

impl ObjectKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ObjectKind::Blob => "blob",
            ObjectKind::Tree => "tree",
            ObjectKind::Commit => "commit",
            ObjectKind::Tag => "tag",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "blob" => Some(ObjectKind::Blob),
            "tree" => Some(ObjectKind::Tree),
            "commit" => Some(ObjectKind::Commit),
            "tag" => Some(ObjectKind::Tag),
            _ => None,
        }
    }
}

pub(crate) fn hash_object(kind: ObjectKind, data: &[u8]) -> ObjectId {
    let mut hasher = Sha1::new();
    hasher.update(format!("{} {}\0", kind.name(), data.len()).as_bytes());
    hasher.update(data);
    ObjectId(hasher.finalize().into())
}

/// What a tree entry points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Executable,
    Symlink,
    Dir,
    Submodule,
}

impl EntryKind {
    pub(crate) fn from_mode(mode: &[u8]) -> Option<Self> {
        match mode {
            b"40000" | b"040000" => Some(EntryKind::Dir),
            b"100755" => Some(EntryKind::Executable),
            b"120000" => Some(EntryKind::Symlink),
            b"160000" => Some(EntryKind::Submodule),
            // Old repositories carry group-writable file modes such as 100664; they are files.
            m if m.starts_with(b"100") => Some(EntryKind::File),
            _ => None,
        }
    }
}

/// One entry of a tree object. The mode keeps its original spelling so that rewriting a tree
/// leaves untouched entries byte-identical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    pub(crate) mode: Vec<u8>,
    pub(crate) name: Vec<u8>,
    pub(crate) oid: ObjectId,
}

impl TreeEntry {
    pub(crate) fn kind(&self) -> Option<EntryKind> {
        EntryKind::from_mode(&self.mode)
    }

    fn is_dir(&self) -> bool {
        self.kind() == Some(EntryKind::Dir)
    }
}

pub(crate) fn parse_tree(oid: ObjectId, data: &[u8]) -> Result<Vec<TreeEntry>, GitError> {
    let corrupt = |reason: &str| GitError::CorruptObject {
        oid,
        reason: reason.to_owned(),
    };
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| corrupt("tree entry without mode"))?;
        let mode = rest[..space].to_vec();
        rest = &rest[space + 1..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| corrupt("tree entry without name end"))?;
        let name = rest[..nul].to_vec();
        rest = &rest[nul + 1..];
        if rest.len() < 20 {
            return Err(corrupt("tree entry with truncated object id"));
        }
        let mut id = [0u8; 20];
        id.copy_from_slice(&rest[..20]);
        rest = &rest[20..];
        entries.push(TreeEntry {
            mode,
            name,
            oid: ObjectId(id),
        });
    }
    Ok(entries)
}

/// git's tree order: byte order of names, where a directory compares as if its name ended in
/// '/' (so `a.txt` < `a/` < `a0`).
pub(crate) fn tree_order(a: &TreeEntry, b: &TreeEntry) -> Ordering {
    let common = a.name.len().min(b.name.len());
    match a.name[..common].cmp(&b.name[..common]) {
        Ordering::Equal => {}
        other => return other,
    }
    let tail = |entry: &TreeEntry| -> u8 {
        match entry.name.get(common) {
            Some(&byte) => byte,
            None if entry.is_dir() => b'/',
            None => 0,
        }
    };
    tail(a).cmp(&tail(b))
}

pub(crate) fn serialize_tree(entries: &mut [TreeEntry]) -> Vec<u8> {
    entries.sort_by(tree_order);
    let mut out = Vec::with_capacity(entries.len() * 48);
    for entry in entries.iter() {
        out.extend_from_slice(&entry.mode);
        out.push(b' ');
        out.extend_from_slice(&entry.name);
        out.push(0);
        out.extend_from_slice(entry.oid.as_bytes());
    }
    out
}

/// The tree a commit points at.
pub(crate) fn commit_tree(oid: ObjectId, data: &[u8]) -> Result<ObjectId, GitError> {
    data.strip_prefix(b"tree ")
        .and_then(|rest| rest.get(..40))
        .and_then(|hex| std::str::from_utf8(hex).ok())
        .and_then(ObjectId::from_hex)
        .ok_or_else(|| GitError::CorruptObject {
            oid,
            reason: "commit without a tree line".to_owned(),
        })
}

pub(crate) const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mode: &str, name: &str) -> TreeEntry {
        TreeEntry {
            mode: mode.as_bytes().to_vec(),
            name: name.as_bytes().to_vec(),
            oid: ObjectId([0; 20]),
        }
    }

    #[test]
    fn directories_sort_as_if_their_name_ended_in_a_slash() {
        let mut entries = vec![
            entry("100644", "a0"),
            entry("40000", "a"),
            entry("100644", "a.txt"),
            entry("100644", "a-b"),
        ];
        serialize_tree(&mut entries);
        let names: Vec<_> = entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        assert_eq!(names, ["a-b", "a.txt", "a", "a0"]);
        // A file named like a directory sorts before it would as a directory.
        let mut entries = vec![entry("100644", "a0"), entry("100644", "a")];
        serialize_tree(&mut entries);
        assert_eq!(entries[0].name, b"a");
    }

    #[test]
    fn hash_matches_git_for_the_empty_tree_and_a_blob() {
        assert_eq!(hash_object(ObjectKind::Tree, b"").to_hex(), EMPTY_TREE);
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            hash_object(ObjectKind::Blob, b"hello\n").to_hex(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn tree_round_trips_byte_for_byte() {
        let mut entries = vec![
            entry("100644", "b.yaml"),
            entry("40000", "apps"),
            entry("100755", "run.sh"),
        ];
        let bytes = serialize_tree(&mut entries);
        let oid = hash_object(ObjectKind::Tree, &bytes);
        let mut parsed = parse_tree(oid, &bytes).unwrap();
        assert_eq!(parsed, entries);
        assert_eq!(serialize_tree(&mut parsed), bytes);
    }
}
