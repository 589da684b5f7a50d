//! Object ids, hashing and tree encoding, done in-process so that a commit costs a few path
//! components rather than a process per object.

use std::cmp::Ordering;
use std::sync::Arc;

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

/// How many bytes of a tree object (header included) lie between two of its recorded hash
/// states: a multiple of SHA-1's 64-byte block, so a state holds no buffered input.
const HASH_STEP: usize = 4096;

/// The SHA-1 states of a tree object's id after every [`HASH_STEP`] bytes of the object. A
/// copy of the tree that differs only from some offset on — one entry of a directory of
/// thousands pointed at a new object — is hashed from the last state before that offset, so
/// each change of a batch hashes half of a large directory on average instead of all of it.
#[derive(Clone)]
pub(crate) struct TreeHashes {
    /// The length of the tree's bytes: states of a tree of another length hash another header.
    len: usize,
    states: Arc<[Sha1]>,
}

impl std::fmt::Debug for TreeHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TreeHashes({} bytes, {} states)",
            self.len,
            self.states.len()
        )
    }
}

/// The id of the tree object `raw`, and its [`TreeHashes`]. With `known`, the states of a tree
/// of the same length whose bytes equal `raw` before offset `same_before`, the states up to
/// that offset are taken from it instead of hashed again.
pub(crate) fn hash_tree(raw: &[u8], known: Option<(&TreeHashes, usize)>) -> (ObjectId, TreeHashes) {
    let header = format!("tree {}\0", raw.len());
    let head = header.len();
    let total = head + raw.len();
    let count = total / HASH_STEP;
    let mut states: Vec<Sha1> = Vec::with_capacity(count);
    // A state stays valid while everything it covers is unchanged.
    let reuse = match known {
        Some((hashes, same_before)) if hashes.len == raw.len() => {
            ((head + same_before) / HASH_STEP).min(count)
        }
        _ => 0,
    };
    let (mut hasher, mut at) = match known.and_then(|(hashes, _)| hashes.states.get(..reuse)) {
        Some(kept @ [.., last]) => {
            states.extend_from_slice(kept);
            (last.clone(), reuse * HASH_STEP)
        }
        _ => {
            let mut hasher = Sha1::new();
            hasher.update(header.as_bytes());
            (hasher, head)
        }
    };
    while states.len() < count {
        let next = (states.len() + 1) * HASH_STEP;
        hasher.update(&raw[at - head..next - head]);
        at = next;
        states.push(hasher.clone());
    }
    hasher.update(&raw[at - head..]);
    let hashes = TreeHashes {
        len: raw.len(),
        states: states.into(),
    };
    (ObjectId(hasher.finalize().into()), hashes)
}

/// A tree made from another by pointing some of its entries at other objects
/// ([`Tree::with_ids`]): its bytes, entries, id and hash states.
pub(crate) struct Repointed {
    pub(crate) raw: Arc<[u8]>,
    pub(crate) spans: Arc<[EntrySpan]>,
    pub(crate) oid: ObjectId,
    pub(crate) hashes: TreeHashes,
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

/// A tree object as read: its bytes, and where each entry's fields lie in them. Parsing
/// records offsets only, so reading a directory of thousands of entries costs one allocation,
/// and pointing entries at other objects — what almost every change does to the directories on
/// its path — is a copy of the bytes with 20 of them replaced per entry.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    raw: Arc<[u8]>,
    spans: Arc<[EntrySpan]>,
    /// Known when this tree was hashed in-process, as a batch's trees are.
    hashes: Option<TreeHashes>,
}

/// One entry of a [`Tree`]: the mode is `raw[start..space]`, the name `raw[space + 1..nul]`,
/// the object id the 20 bytes after `nul`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntrySpan {
    start: u32,
    space: u32,
    nul: u32,
}

/// An entry of a [`Tree`], borrowed from its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryRef<'a> {
    pub(crate) mode: &'a [u8],
    pub(crate) name: &'a [u8],
    pub(crate) oid: ObjectId,
}

impl EntryRef<'_> {
    pub(crate) fn kind(&self) -> Option<EntryKind> {
        EntryKind::from_mode(self.mode)
    }

    pub(crate) fn to_entry(self) -> TreeEntry {
        TreeEntry {
            mode: self.mode.to_vec(),
            name: self.name.to_vec(),
            oid: self.oid,
        }
    }
}

impl Tree {
    pub(crate) fn parse(oid: ObjectId, raw: Arc<[u8]>) -> Result<Self, GitError> {
        let corrupt = |reason: &str| GitError::CorruptObject {
            oid,
            reason: reason.to_owned(),
        };
        if u32::try_from(raw.len()).is_err() {
            return Err(corrupt("tree larger than 4 GiB"));
        }
        let mut spans = Vec::new();
        let mut at = 0;
        while at < raw.len() {
            let space = at
                + raw[at..]
                    .iter()
                    .position(|&b| b == b' ')
                    .ok_or_else(|| corrupt("tree entry without mode"))?;
            let nul = space
                + 1
                + raw[space + 1..]
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| corrupt("tree entry without name end"))?;
            if raw.len() - (nul + 1) < 20 {
                return Err(corrupt("tree entry with truncated object id"));
            }
            // Offsets fit: the whole tree is shorter than 4 GiB.
            let offset = |at: usize| at as u32;
            spans.push(EntrySpan {
                start: offset(at),
                space: offset(space),
                nul: offset(nul),
            });
            at = nul + 21;
        }
        Ok(Self {
            raw,
            spans: spans.into(),
            hashes: None,
        })
    }

    /// The tree object's bytes.
    pub(crate) fn bytes(&self) -> Arc<[u8]> {
        self.raw.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The memory this tree holds: its bytes and its entries' offsets.
    pub(crate) fn size(&self) -> usize {
        self.raw.len() + std::mem::size_of_val(&*self.spans)
    }

    pub(crate) fn get(&self, index: usize) -> Option<EntryRef<'_>> {
        let span = self.spans.get(index)?;
        let (start, space, nul) = (span.start as usize, span.space as usize, span.nul as usize);
        let mut id = [0u8; 20];
        id.copy_from_slice(&self.raw[nul + 1..nul + 21]);
        Some(EntryRef {
            mode: &self.raw[start..space],
            name: &self.raw[space + 1..nul],
            oid: ObjectId(id),
        })
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> {
        (0..self.len()).filter_map(|index| self.get(index))
    }

    /// The position of the entry called `name`.
    pub(crate) fn position(&self, name: &[u8]) -> Option<usize> {
        // A tree out of git's order (written by some other tool) is still read right.
        self.search(name).or_else(|| {
            self.spans
                .iter()
                .position(|span| self.name_at(span) == Some(name))
        })
    }

    fn name_at(&self, span: &EntrySpan) -> Option<&[u8]> {
        self.raw.get(span.space as usize + 1..span.nul as usize)
    }

    /// [`Tree::position`] in a tree in git's order, where a directory sorts as if its name
    /// ended in '/': the entry is where `name` sorts as a file, or where it sorts as a
    /// directory. A directory of thousands of services is searched in a dozen steps.
    fn search(&self, name: &[u8]) -> Option<usize> {
        for as_dir in [false, true] {
            let key = name.iter().chain(as_dir.then_some(&b'/'));
            let at = self.spans.partition_point(|span| {
                let entry_dir = self
                    .raw
                    .get(span.start as usize..span.space as usize)
                    .and_then(EntryKind::from_mode)
                    == Some(EntryKind::Dir);
                let entry = self.name_at(span).unwrap_or_default();
                entry
                    .iter()
                    .chain(entry_dir.then_some(&b'/'))
                    .cmp(key.clone())
                    .is_lt()
            });
            if self.spans.get(at).and_then(|span| self.name_at(span)) == Some(name) {
                return Some(at);
            }
        }
        None
    }

    pub(crate) fn to_entries(&self) -> Vec<TreeEntry> {
        self.iter().map(EntryRef::to_entry).collect()
    }

    /// This tree with the entries at the given positions pointing at other objects. The new
    /// tree's entries lie at the same offsets, so they are shared, and its id is hashed from
    /// the first byte that changed when this tree's hash states are known.
    pub(crate) fn with_ids(&self, ids: &[(usize, ObjectId)]) -> Repointed {
        let mut raw: Arc<[u8]> = Arc::from(&*self.raw);
        let mut first = raw.len();
        // Just made, so not shared: written in place rather than copied again.
        let bytes = Arc::make_mut(&mut raw);
        for &(index, oid) in ids {
            if let Some(span) = self.spans.get(index) {
                let at = span.nul as usize + 1;
                bytes[at..at + 20].copy_from_slice(oid.as_bytes());
                first = first.min(at);
            }
        }
        let (oid, hashes) = hash_tree(&raw, self.hashes.as_ref().map(|h| (h, first)));
        Repointed {
            raw,
            spans: self.spans.clone(),
            oid,
            hashes,
        }
    }

    /// A tree made of `raw` whose entries are known to lie at `spans`, with its hash states.
    pub(crate) fn from_parts(
        raw: Arc<[u8]>,
        spans: Arc<[EntrySpan]>,
        hashes: Option<TreeHashes>,
    ) -> Self {
        Self { raw, spans, hashes }
    }
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
        let tree = Tree::parse(oid, Arc::from(bytes.as_slice())).unwrap();
        let mut parsed = tree.to_entries();
        assert_eq!(parsed, entries);
        assert_eq!(serialize_tree(&mut parsed), bytes);
        assert_eq!(tree.position(b"run.sh"), Some(2));
        assert_eq!(tree.position(b"run"), None);

        // Pointing entries elsewhere keeps every other byte, and the offsets stay valid.
        let (b, r) = (ObjectId([7; 20]), ObjectId([9; 20]));
        let patched = tree.with_ids(&[(0, b), (2, r)]);
        let mut expected = entries.clone();
        expected[0].oid = b;
        expected[2].oid = r;
        assert_eq!(*patched.raw, *serialize_tree(&mut expected));
        assert_eq!(patched.oid, hash_object(ObjectKind::Tree, &patched.raw));
        let patched = Tree::from_parts(patched.raw, patched.spans, Some(patched.hashes));
        assert_eq!(patched.to_entries(), expected);
    }

    /// A directory of `count` services, each a subdirectory.
    fn large_tree(count: usize) -> Tree {
        let mut entries: Vec<TreeEntry> = (0..count)
            .map(|i| TreeEntry {
                mode: b"40000".to_vec(),
                name: format!("svc-{i:04}").into_bytes(),
                oid: ObjectId([(i % 251) as u8; 20]),
            })
            .collect();
        let bytes = serialize_tree(&mut entries);
        let oid = hash_object(ObjectKind::Tree, &bytes);
        Tree::parse(oid, Arc::from(bytes.as_slice())).unwrap()
    }

    #[test]
    fn trees_hashed_from_their_last_unchanged_state_get_the_ids_git_gives_them() {
        // Entries at the start, on both sides of a state, in the middle and at the end; over a
        // chain of versions, as a batch makes them, each hashed from the one before.
        let mut tree = large_tree(2_000);
        assert!(tree.raw.len() > 16 * HASH_STEP);
        let last = tree.len() - 1;
        let step_entry = tree
            .spans
            .iter()
            .position(|span| span.nul as usize + 1 >= HASH_STEP)
            .unwrap();
        let changes: Vec<Vec<usize>> = vec![
            vec![1_000],
            vec![0],
            vec![step_entry - 1],
            vec![step_entry],
            vec![last],
            vec![3, 1_500],
            vec![1_000],
        ];
        let mut hashed_from_a_state = 0;
        for (round, positions) in changes.iter().enumerate() {
            let ids: Vec<(usize, ObjectId)> = positions
                .iter()
                .map(|&p| (p, ObjectId([round as u8 + 1; 20])))
                .collect();
            let had_states = tree.hashes.is_some();
            let next = tree.with_ids(&ids);
            assert_eq!(
                next.oid,
                hash_object(ObjectKind::Tree, &next.raw),
                "round {round}, entries {positions:?}"
            );
            let (_, fresh) = hash_tree(&next.raw, None);
            assert_eq!(next.hashes.states.len(), fresh.states.len());
            for (kept, computed) in next.hashes.states.iter().zip(fresh.states.iter()) {
                assert_eq!(
                    kept.clone().finalize(),
                    computed.clone().finalize(),
                    "round {round}: a state differs from the one hashing the tree whole gives"
                );
            }
            hashed_from_a_state += usize::from(had_states);
            tree = Tree::from_parts(next.raw, next.spans, Some(next.hashes));
        }
        assert_eq!(hashed_from_a_state, changes.len() - 1);
    }

    #[test]
    fn hash_states_of_a_tree_of_another_length_are_not_used() {
        // The same number of states, another header.
        let small = large_tree(1_000);
        let large = large_tree(1_001);
        assert_eq!(small.raw.len() / HASH_STEP, large.raw.len() / HASH_STEP);
        let (_, states) = hash_tree(&small.raw, None);
        let (oid, _) = hash_tree(&large.raw, Some((&states, large.raw.len())));
        assert_eq!(oid, hash_object(ObjectKind::Tree, &large.raw));
        // A tree below one step has no states; its id is still right.
        let tiny = large_tree(3);
        let (oid, states) = hash_tree(&tiny.raw, None);
        assert!(states.states.is_empty());
        assert_eq!(oid, hash_object(ObjectKind::Tree, &tiny.raw));
    }

    #[test]
    fn entries_are_found_by_name_in_git_order_and_out_of_it() {
        // Files and directories whose names sort differently as one or the other.
        let mut entries = vec![
            entry("40000", "a"),
            entry("100644", "a-b"),
            entry("100644", "a.txt"),
            entry("40000", "a0"),
            entry("100644", "b"),
            entry("40000", "b.d"),
            entry("160000", "c"),
        ];
        for i in 0..500 {
            entries.push(entry("40000", &format!("svc-{i:04}")));
        }
        let bytes = serialize_tree(&mut entries);
        let tree = Tree::parse(ObjectId([1; 20]), Arc::from(bytes.as_slice())).unwrap();
        for (at, e) in entries.iter().enumerate() {
            assert_eq!(
                tree.position(&e.name),
                Some(at),
                "{}",
                String::from_utf8_lossy(&e.name)
            );
        }
        for missing in ["", "a/", "a.", "svc-0500", "svc-", "zzz", "0"] {
            assert_eq!(tree.position(missing.as_bytes()), None, "{missing}");
        }
        // Written out of order by another tool: still found.
        let mut raw = Vec::new();
        for e in [entry("100644", "z"), entry("100644", "a")] {
            raw.extend_from_slice(&e.mode);
            raw.push(b' ');
            raw.extend_from_slice(&e.name);
            raw.push(0);
            raw.extend_from_slice(e.oid.as_bytes());
        }
        let tree = Tree::parse(ObjectId([2; 20]), Arc::from(raw)).unwrap();
        assert_eq!(tree.search(b"a"), None);
        assert_eq!(tree.position(b"a"), Some(1));
        assert_eq!(tree.position(b"z"), Some(0));
    }

    #[test]
    fn truncated_trees_are_corrupt() {
        let mut entries = vec![entry("100644", "a"), entry("40000", "b")];
        let bytes = serialize_tree(&mut entries);
        for cut in [3, 9, bytes.len() - 1] {
            let error = Tree::parse(ObjectId([1; 20]), Arc::from(&bytes[..cut])).unwrap_err();
            assert!(
                matches!(error, GitError::CorruptObject { .. }),
                "cut at {cut}: {error}"
            );
        }
    }
}
