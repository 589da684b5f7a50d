//! Object access for one mirror: reads through one long-running `git cat-file --batch`; the
//! objects a landing creates are collected in a [`Batch`] and written as one pack.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use crate::env::GitEnv;
use crate::error::GitError;
use crate::object::{ObjectId, ObjectKind, Tree, commit_tree};
use crate::pack::{Batch, WrittenPack};

struct CatFile {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl CatFile {
    fn read(&mut self, oid: ObjectId) -> std::io::Result<Option<(ObjectKind, Vec<u8>)>> {
        self.request(&[oid])?;
        self.reply()
    }

    /// Asks for `oids` in one write; their replies come in the same order.
    fn request(&mut self, oids: &[ObjectId]) -> std::io::Result<()> {
        // One write per request: the pipe is unbuffered, and `writeln!` would wake the reader
        // once for the id and again for the newline.
        let mut lines = vec![b'\n'; 41 * oids.len()];
        for (oid, line) in oids.iter().zip(lines.chunks_mut(41)) {
            hex::encode_to_slice(oid.as_bytes(), &mut line[..40]).map_err(std::io::Error::other)?;
        }
        self.stdin.write_all(&lines)
    }

    fn reply(&mut self) -> std::io::Result<Option<(ObjectKind, Vec<u8>)>> {
        let mut header = String::new();
        if self.stdout.read_line(&mut header)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "git cat-file exited",
            ));
        }
        let header = header.trim_end();
        if header.ends_with(" missing") {
            return Ok(None);
        }
        let mut fields = header.split(' ');
        let (Some(_), Some(kind), Some(size), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(std::io::Error::other(format!(
                "unexpected git cat-file header {header:?}"
            )));
        };
        let kind = ObjectKind::parse(kind)
            .ok_or_else(|| std::io::Error::other(format!("unknown object type in {header:?}")))?;
        let size: usize = size
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad size in {header:?}")))?;
        let mut data = vec![0u8; size + 1];
        self.stdout.read_exact(&mut data)?;
        // The content is followed by a newline.
        data.truncate(size);
        Ok(Some((kind, data)))
    }

    /// Reads `oids` with their requests sent ahead of the replies, a few dozen at a time: the
    /// reader works through them without waiting for this side between two objects.
    fn read_many(
        &mut self,
        oids: &[ObjectId],
        mut each: impl FnMut(ObjectId, Option<(ObjectKind, Vec<u8>)>),
    ) -> std::io::Result<()> {
        for chunk in oids.chunks(PIPELINED_REQUESTS) {
            self.request(chunk)?;
            for &oid in chunk {
                each(oid, self.reply()?);
            }
        }
        Ok(())
    }
}

/// Requests written before their replies are read. Their lines (41 bytes each) must fit in the
/// pipe to `cat-file` as it is at its smallest (one 4 KiB page): a write that blocks while
/// `cat-file` blocks on writing replies nobody reads would hang both.
const PIPELINED_REQUESTS: usize = 64;

impl Drop for CatFile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) struct ObjectStore {
    git_dir: PathBuf,
    env: GitEnv,
    reader: Mutex<Option<CatFile>>,
    /// Objects written into this mirror's packs since it was opened.
    written: AtomicU64,
    /// Requests sent to the object reader since the mirror was opened.
    requests: AtomicU64,
    // Trees are immutable by name; a change reads the trees on its path once to look and once
    // to rewrite, and the next change of a batch reads most of them again.
    trees: Mutex<TreeCache>,
}

/// Parsed trees kept, by their size: every landed batch leaves a new version of the large
/// directories its next batch reads, and a cache counted in entries filled up with versions of
/// a 2,000-entry directory until it held most of the server's memory.
const TREE_CACHE_BYTES: usize = 2 << 20;

#[derive(Default)]
struct TreeCache {
    trees: HashMap<ObjectId, Tree>,
    bytes: usize,
}

impl TreeCache {
    fn insert(&mut self, oid: ObjectId, tree: Tree) {
        let size = tree.size();
        if self.bytes + size > TREE_CACHE_BYTES {
            self.trees.clear();
            self.bytes = 0;
        }
        if size <= TREE_CACHE_BYTES && self.trees.insert(oid, tree).is_none() {
            self.bytes += size;
        }
    }
}

impl ObjectStore {
    pub(crate) fn new(git_dir: PathBuf, env: GitEnv) -> Self {
        Self {
            git_dir,
            env,
            reader: Mutex::new(None),
            written: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            trees: Mutex::new(TreeCache::default()),
        }
    }

    fn spawn(&self) -> Result<CatFile, GitError> {
        let mut cmd = self.env.local(&self.git_dir);
        cmd.args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        self.env.observe(&cmd);
        let mut child = cmd.spawn().map_err(|e| self.env.spawn_error(e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(self.reader_error("no pipes to git cat-file".to_owned()));
        };
        Ok(CatFile {
            child,
            stdin,
            stdout: BufReader::with_capacity(64 * 1024, stdout),
        })
    }

    fn reader_error(&self, detail: String) -> GitError {
        GitError::ObjectReader {
            path: self.git_dir.clone(),
            detail,
        }
    }

    /// Reads an object; `None` when the mirror does not have it.
    pub(crate) fn read(&self, oid: ObjectId) -> Result<Option<(ObjectKind, Vec<u8>)>, GitError> {
        let mut guard = self
            .reader
            .lock()
            .map_err(|_| self.reader_error("reader lock poisoned".to_owned()))?;
        // A reader that died (killed, or the repository was repacked under it) is replaced once.
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.spawn()?);
            }
            let Some(cat_file) = guard.as_mut() else {
                continue;
            };
            self.requests.fetch_add(1, AtomicOrdering::Relaxed);
            match cat_file.read(oid) {
                Ok(found) => return Ok(found),
                Err(e) => {
                    *guard = None;
                    if attempt == 1 {
                        return Err(self.reader_error(e.to_string()));
                    }
                }
            }
        }
        Err(self.reader_error("git cat-file failed twice".to_owned()))
    }

    /// Reads `oids` in pipelined requests, handing each object (`None`: the mirror does not
    /// have it) to `each` in order.
    pub(crate) fn read_many(
        &self,
        oids: &[ObjectId],
        mut each: impl FnMut(ObjectId, Option<(ObjectKind, Vec<u8>)>),
    ) -> Result<(), GitError> {
        let mut guard = self
            .reader
            .lock()
            .map_err(|_| self.reader_error("reader lock poisoned".to_owned()))?;
        if guard.is_none() {
            *guard = Some(self.spawn()?);
        }
        let Some(cat_file) = guard.as_mut() else {
            return Err(self.reader_error("no git cat-file".to_owned()));
        };
        // No second try here: the objects handed out so far would be handed out again. A
        // reader that died is replaced by the next read.
        self.requests.fetch_add(
            oids.len().div_ceil(PIPELINED_REQUESTS) as u64,
            AtomicOrdering::Relaxed,
        );
        cat_file.read_many(oids, &mut each).map_err(|e| {
            *guard = None;
            self.reader_error(e.to_string())
        })
    }

    pub(crate) fn read_kind(&self, oid: ObjectId, want: ObjectKind) -> Result<Vec<u8>, GitError> {
        match self.read(oid)? {
            Some((kind, data)) if kind == want => Ok(data),
            Some((kind, _)) => Err(GitError::CorruptObject {
                oid,
                reason: format!("expected a {}, found a {}", want.name(), kind.name()),
            }),
            None => Err(GitError::MissingObject { oid }),
        }
    }

    /// The tree if it is in the cache, without reading it.
    fn cached_tree(&self, oid: ObjectId) -> Option<Tree> {
        self.trees
            .lock()
            .ok()
            .and_then(|cache| cache.trees.get(&oid).cloned())
    }

    pub(crate) fn read_tree(&self, oid: ObjectId) -> Result<Tree, GitError> {
        if let Some(entries) = self.cached_tree(oid) {
            return Ok(entries);
        }
        let entries = Tree::parse(oid, Arc::from(self.read_kind(oid, ObjectKind::Tree)?))?;
        if let Ok(mut cache) = self.trees.lock() {
            cache.insert(oid, entries.clone());
        }
        Ok(entries)
    }

    /// Keeps trees known to be read soon (the directories a landed batch wrote).
    pub(crate) fn cache_trees(&self, trees: Vec<(ObjectId, Tree)>) {
        if let Ok(mut cache) = self.trees.lock() {
            for (oid, tree) in trees {
                cache.insert(oid, tree);
            }
        }
    }

    pub(crate) fn tree_of_commit(&self, commit: ObjectId) -> Result<ObjectId, GitError> {
        commit_tree(commit, &self.read_kind(commit, ObjectKind::Commit)?)
    }

    /// Writes the objects of `batch` into the mirror as one pack.
    pub(crate) fn write_pack(&self, batch: &Batch) -> Result<Option<WrittenPack>, GitError> {
        let written = batch.write_pack(&self.git_dir.join("objects").join("pack"))?;
        if let Some(pack) = &written {
            self.written
                .fetch_add(pack.objects as u64, AtomicOrdering::Relaxed);
            tracing::debug!(
                pack = %pack.pack.display(),
                objects = pack.objects,
                deltas = pack.deltas,
                "wrote the objects of a batch"
            );
        }
        Ok(written)
    }

    /// How many requests this mirror has sent to its object reader.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(AtomicOrdering::Relaxed)
    }

    /// How many objects this mirror has written into packs.
    pub(crate) fn objects_written(&self) -> u64 {
        self.written.load(AtomicOrdering::Relaxed)
    }
}

/// Objects read ahead for one landing: what the changes of a batch will read, fetched in a few
/// pipelined requests instead of one round trip to `cat-file` per object. Probing a change
/// (running it on a view that reads nothing from the mirror) names what it needs next.
#[derive(Default)]
pub(crate) struct ReadAhead {
    objects: HashMap<ObjectId, Option<Ahead>>,
    bytes: usize,
    /// Objects probes asked for and did not find here, to fetch next.
    wanted: RefCell<Vec<ObjectId>>,
}

enum Ahead {
    Tree(Tree),
    Other(ObjectKind, Arc<[u8]>),
}

/// What one landing reads ahead at most; what is past it is read one object at a time, as
/// before. A batch holds every file its changes read in their replay records anyway.
const READ_AHEAD_BYTES: usize = 32 << 20;

impl ReadAhead {
    /// How many objects probes have asked for so far.
    pub(crate) fn wanted(&self) -> usize {
        self.wanted.borrow().len()
    }

    /// Whether more objects may be read ahead.
    pub(crate) fn has_room(&self) -> bool {
        self.bytes < READ_AHEAD_BYTES
    }

    /// Fetches what probes asked for. A tree that does not parse is left out: read the usual
    /// way, it fails with the error that names it.
    pub(crate) fn fetch(&mut self, store: &ObjectStore) -> Result<(), GitError> {
        let mut wanted = std::mem::take(self.wanted.get_mut());
        wanted.sort_unstable();
        wanted.dedup();
        wanted.retain(|oid| !self.objects.contains_key(oid));
        let (objects, bytes) = (&mut self.objects, &mut self.bytes);
        store.read_many(&wanted, |oid, object| {
            if *bytes >= READ_AHEAD_BYTES {
                return;
            }
            let ahead = match object {
                None => None,
                Some((ObjectKind::Tree, data)) => match Tree::parse(oid, Arc::from(data)) {
                    Ok(tree) => Some(Ahead::Tree(tree)),
                    Err(_) => return,
                },
                Some((kind, data)) => Some(Ahead::Other(kind, Arc::from(data))),
            };
            *bytes += match &ahead {
                Some(Ahead::Tree(tree)) => tree.size(),
                Some(Ahead::Other(_, data)) => data.len(),
                None => 0,
            };
            objects.insert(oid, ahead);
        })
    }

    fn want(&self, oid: ObjectId) -> GitError {
        self.wanted.borrow_mut().push(oid);
        GitError::MissingObject { oid }
    }
}

/// The objects a reader sees: the mirror's, and while a batch is built, also the batch's own,
/// which are not on disk until the batch's pack is written.
#[derive(Clone, Copy)]
pub(crate) struct ObjectView<'a> {
    store: &'a ObjectStore,
    batch: Option<&'a Batch>,
    ahead: Option<&'a ReadAhead>,
    /// Reads nothing from the mirror: an object not at hand is noted as wanted in `ahead`, and
    /// the read fails.
    probing: bool,
}

impl<'a> ObjectView<'a> {
    /// The objects on disk only.
    pub(crate) fn committed(store: &'a ObjectStore) -> Self {
        Self {
            store,
            batch: None,
            ahead: None,
            probing: false,
        }
    }

    pub(crate) fn with_batch(store: &'a ObjectStore, batch: &'a Batch) -> Self {
        Self {
            batch: Some(batch),
            ..Self::committed(store)
        }
    }

    /// Also the objects read ahead.
    pub(crate) fn with_ahead(self, ahead: &'a ReadAhead) -> Self {
        Self {
            ahead: Some(ahead),
            ..self
        }
    }

    /// Also the objects of `batch`, not written yet.
    pub(crate) fn with_own(self, batch: &'a Batch) -> Self {
        Self {
            batch: Some(batch),
            ..self
        }
    }

    /// What is at hand only: the objects read ahead and the trees in the cache.
    pub(crate) fn probing(store: &'a ObjectStore, ahead: &'a ReadAhead) -> Self {
        Self {
            probing: true,
            ..Self::committed(store).with_ahead(ahead)
        }
    }

    pub(crate) fn read_kind(&self, oid: ObjectId, want: ObjectKind) -> Result<Vec<u8>, GitError> {
        let found = match self.batch.and_then(|batch| batch.get(oid)) {
            Some(found) => Some(found),
            None => match self.ahead.and_then(|ahead| ahead.objects.get(&oid)) {
                Some(Some(Ahead::Other(kind, data))) => Some((*kind, data.clone())),
                Some(Some(Ahead::Tree(tree))) => Some((ObjectKind::Tree, tree.bytes())),
                Some(None) => return Err(GitError::MissingObject { oid }),
                None => None,
            },
        };
        match found {
            Some((kind, data)) if kind == want => Ok(data.to_vec()),
            Some((kind, _)) => Err(GitError::CorruptObject {
                oid,
                reason: format!("expected a {}, found a {}", want.name(), kind.name()),
            }),
            None => match self.ahead {
                Some(ahead) if self.probing => Err(ahead.want(oid)),
                _ => self.store.read_kind(oid, want),
            },
        }
    }

    pub(crate) fn read_tree(&self, oid: ObjectId) -> Result<Tree, GitError> {
        if let Some(entries) = self.batch.and_then(|batch| batch.tree(oid)) {
            return entries;
        }
        match self.ahead.and_then(|ahead| ahead.objects.get(&oid)) {
            Some(Some(Ahead::Tree(tree))) => return Ok(tree.clone()),
            Some(Some(Ahead::Other(kind, _))) => {
                return Err(GitError::CorruptObject {
                    oid,
                    reason: format!("expected a tree, found a {}", kind.name()),
                });
            }
            Some(None) => return Err(GitError::MissingObject { oid }),
            None => {}
        }
        match self.ahead {
            Some(ahead) if self.probing => {
                self.store.cached_tree(oid).ok_or_else(|| ahead.want(oid))
            }
            _ => self.store.read_tree(oid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_cache_stays_within_its_bytes() {
        // Versions of a directory of 2,000 entries, one per landed batch.
        let mut cache = TreeCache::default();
        for version in 0u32..1_000 {
            let mut raw = Vec::new();
            for entry in 0u32..2_000 {
                raw.extend_from_slice(format!("40000 svc-{entry:04}\0").as_bytes());
                let mut id = [0u8; 20];
                id[..4].copy_from_slice(&version.to_be_bytes());
                id[4..8].copy_from_slice(&entry.to_be_bytes());
                raw.extend_from_slice(&id);
            }
            let oid = crate::object::hash_object(ObjectKind::Tree, &raw);
            let tree = Tree::parse(oid, Arc::from(raw)).unwrap();
            cache.insert(oid, tree.clone());
            cache.insert(oid, tree);
            assert!(cache.bytes <= TREE_CACHE_BYTES, "{} bytes", cache.bytes);
            assert_eq!(
                cache.bytes,
                cache.trees.values().map(Tree::size).sum::<usize>()
            );
        }
        assert!(!cache.trees.is_empty());
    }
}
