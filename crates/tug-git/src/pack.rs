//! The objects one landing creates, kept in memory while its commits are built and then written
//! as one self-contained pack with its index, before the push.
//!
//! A batch rewrites the same directories over and over (the `apps` tree of a repository with
//! thousands of services changes in every commit), so each new version of a directory is stored
//! as a delta against the previous version of that directory in the same batch. `git push` then
//! copies those deltas instead of searching for them, which is most of what it would otherwise
//! spend on a large batch.

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use flate2::Compression;
use flate2::Crc;
use flate2::{Compress, FlushCompress, Status};
use sha1::{Digest, Sha1};

use crate::error::GitError;
use crate::object::{ObjectId, ObjectKind, Repointed, Tree, hash_object};

/// git's default `pack.depth`. `git push` reuses a stored delta only when its chain is no
/// deeper than that, so a longer chain would be searched again.
pub(crate) const MAX_DELTA_DEPTH: u32 = 50;

/// The largest copy one delta instruction holds as git emits them; older readers expect no more.
const MAX_COPY: usize = 0x10000;
/// An insert instruction carries at most 127 literal bytes.
const MAX_INSERT: usize = 0x7f;

const OBJ_OFS_DELTA: u8 = 6;

/// Parsed trees of a batch kept for its later changes.
const PARSED_TREES: usize = 64;

/// How an object goes into the pack.
enum Stored {
    Whole,
    /// A git delta against the object at this position of the batch.
    Delta {
        base: usize,
        delta: Vec<u8>,
    },
}

struct BatchObject {
    oid: ObjectId,
    kind: ObjectKind,
    /// The content; let go for a directory version stored as a delta once a newer version of
    /// the directory replaced it, and rebuilt from its delta chain if it is read again.
    data: Option<Arc<[u8]>>,
    stored: Stored,
    /// Deltas between this object and a whole one (0 when stored whole).
    depth: u32,
}

#[derive(Default)]
struct Contents {
    /// In the order they were created, which puts every delta base before its deltas as
    /// `OFS_DELTA` requires.
    objects: Vec<BatchObject>,
    by_id: HashMap<ObjectId, usize>,
    /// The newest tree written for each directory path, the base for its next version.
    latest_tree_at: HashMap<String, usize>,
    parsed_trees: HashMap<ObjectId, Tree>,
}

impl Contents {
    /// The content of the object at `index`, rebuilt from its chain of deltas when let go.
    fn data(&self, index: usize) -> Option<Arc<[u8]>> {
        let object = self.objects.get(index)?;
        if let Some(data) = &object.data {
            return Some(data.clone());
        }
        let Stored::Delta { base, delta } = &object.stored else {
            return None;
        };
        apply_delta(&self.data(*base)?, delta).map(Arc::from)
    }

    /// Makes the object at `index` the newest version of directory `dir`, letting go of the
    /// content of the version it replaces: a batch of 256 changes under a directory of thousands
    /// of entries would otherwise hold 256 copies of that directory until its pack is written.
    fn set_latest_tree(&mut self, dir: &str, index: usize) {
        if self.objects[index].data.is_none() {
            // An earlier version came back: it is the next version's delta base.
            self.objects[index].data = self.data(index);
        }
        let Some(replaced) = self.latest_tree_at.insert(dir.to_owned(), index) else {
            return;
        };
        // Identical directories at two paths share an object; it stays while either is newest.
        if replaced == index
            || self
                .latest_tree_at
                .values()
                .any(|&latest| latest == replaced)
        {
            return;
        }
        let object = &mut self.objects[replaced];
        if matches!(object.stored, Stored::Delta { .. }) && object.data.take().is_some() {
            let oid = object.oid;
            self.parsed_trees.remove(&oid);
        }
    }

    fn remember_tree(&mut self, oid: ObjectId, tree: Tree) {
        // Later changes read mostly the newest versions; a long batch need not keep every
        // version of a large directory parsed.
        if self.parsed_trees.len() >= PARSED_TREES {
            self.parsed_trees.clear();
        }
        self.parsed_trees.insert(oid, tree);
    }
}

/// The objects of one batch under construction: readable by the later changes of the batch
/// before they exist on disk, and written to the mirror as one pack by [`Batch::write_pack`].
#[derive(Default)]
pub(crate) struct Batch {
    contents: Mutex<Contents>,
}

/// A pack written into the mirror.
#[derive(Clone, Debug)]
pub(crate) struct WrittenPack {
    pub(crate) pack: PathBuf,
    pub(crate) index: PathBuf,
    pub(crate) objects: usize,
    pub(crate) deltas: usize,
}

impl WrittenPack {
    /// Makes the pack, its index and their names durable. Git and the push read the files
    /// through the page cache, so this is needed only before a ref points at the pack's objects
    /// — after the push, outside the window in which another push can win the race.
    pub(crate) fn sync(&self) -> Result<(), GitError> {
        for path in [&self.pack, &self.index] {
            match fs::File::open(path) {
                Ok(file) => file.sync_all().map_err(|e| GitError::io("sync", path, e))?,
                // `Mirror::maintain` rolled the pack into one of its own between the push and
                // now; git writes and syncs that one before it deletes this.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(GitError::io("sync", path, e)),
            }
        }
        if let Some(dir) = self.pack.parent() {
            fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| GitError::io("sync pack directory", dir, e))?;
        }
        Ok(())
    }

    /// Removes the pack of a push attempt that lost its race: nothing refers to its objects
    /// (the next attempt writes its own), and a mirror that kept one pack per lost race would
    /// get slower at every git operation just when the branch is busiest. The index goes
    /// first, so a reader never sees an index without its pack.
    pub(crate) fn remove(&self) {
        for path in [&self.index, &self.pack] {
            if let Err(e) = fs::remove_file(path) {
                tracing::debug!(path = %path.display(), error = %e, "cannot remove an unused pack");
            }
        }
    }
}

impl Batch {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Contents> {
        // The contents only grow and every insertion completes before the lock is released, so
        // a panic elsewhere while it was held cannot leave them half-updated.
        self.contents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().objects.len()
    }

    pub(crate) fn get(&self, oid: ObjectId) -> Option<(ObjectKind, Arc<[u8]>)> {
        let contents = self.lock();
        let index = *contents.by_id.get(&oid)?;
        Some((contents.objects[index].kind, contents.data(index)?))
    }

    /// The entries of a tree of this batch; `None` when the batch did not create it.
    pub(crate) fn tree(&self, oid: ObjectId) -> Option<Result<Tree, GitError>> {
        let mut contents = self.lock();
        if let Some(entries) = contents.parsed_trees.get(&oid) {
            return Some(Ok(entries.clone()));
        }
        let index = *contents.by_id.get(&oid)?;
        let kind = contents.objects[index].kind;
        if kind != ObjectKind::Tree {
            return Some(Err(GitError::CorruptObject {
                oid,
                reason: format!("expected a tree, found a {}", kind.name()),
            }));
        }
        let Some(data) = contents.data(index) else {
            return Some(Err(GitError::CorruptObject {
                oid,
                reason: "a directory version of this batch cannot be rebuilt".to_owned(),
            }));
        };
        let parsed = Tree::parse(oid, data);
        if let Ok(tree) = &parsed {
            contents.remember_tree(oid, tree.clone());
        }
        Some(parsed)
    }

    /// The newest version of every directory this batch wrote: the trees of its last commit
    /// on the paths it changed, which the next batch reads first.
    pub(crate) fn latest_trees(&self) -> Vec<(ObjectId, Tree)> {
        let mut contents = self.lock();
        let latest: Vec<usize> = contents.latest_tree_at.values().copied().collect();
        latest
            .into_iter()
            .filter_map(|index| {
                let oid = contents.objects.get(index)?.oid;
                if let Some(tree) = contents.parsed_trees.get(&oid) {
                    return Some((oid, tree.clone()));
                }
                let tree = Tree::parse(oid, contents.data(index)?).ok()?;
                contents.remember_tree(oid, tree.clone());
                Some((oid, tree))
            })
            .collect()
    }

    /// Adds an object and returns its id. `tree_dir` is the directory a tree is written for
    /// (`""` for the root): a tree that replaces an earlier version of the same directory in
    /// this batch is stored as a delta against it.
    pub(crate) fn add(&self, kind: ObjectKind, data: &[u8], tree_dir: Option<&str>) -> ObjectId {
        self.insert(kind, data, tree_dir).0
    }

    /// Adds the tree of directory `dir` made by repointing entries of an earlier tree, so the
    /// batch's next change reads it without parsing it and hashes its next version from where
    /// that one changes.
    pub(crate) fn add_tree(&self, dir: &str, tree: Repointed) -> ObjectId {
        let Repointed {
            raw,
            spans,
            oid,
            hashes,
        } = tree;
        let stored = self.insert_hashed(ObjectKind::Tree, oid, || raw, Some(dir));
        let mut contents = self.lock();
        if !contents.parsed_trees.contains_key(&oid)
            && let Some(data) = contents.data(stored)
        {
            contents.remember_tree(oid, Tree::from_parts(data, spans, Some(hashes)));
        }
        oid
    }

    /// Adds an object; its id and its position in the batch.
    fn insert(&self, kind: ObjectKind, data: &[u8], tree_dir: Option<&str>) -> (ObjectId, usize) {
        let oid = hash_object(kind, data);
        (
            oid,
            self.insert_hashed(kind, oid, || Arc::from(data), tree_dir),
        )
    }

    /// Adds the object `oid` whose content `data` gives, called only when the batch does not
    /// hold it yet; its position in the batch.
    fn insert_hashed(
        &self,
        kind: ObjectKind,
        oid: ObjectId,
        data: impl FnOnce() -> Arc<[u8]>,
        tree_dir: Option<&str>,
    ) -> usize {
        let mut contents = self.lock();
        if let Some(&existing) = contents.by_id.get(&oid) {
            if let Some(dir) = tree_dir {
                contents.set_latest_tree(dir, existing);
            }
            return existing;
        }
        let data = data();
        let base = tree_dir
            .and_then(|dir| contents.latest_tree_at.get(dir).copied())
            .filter(|&base| contents.objects[base].depth < MAX_DELTA_DEPTH);
        let (stored, depth) = base
            .and_then(|base| {
                let delta = encode_delta(&contents.data(base)?, &data)?;
                // A delta that saves little costs a reader more than it saves on the wire.
                (delta.len() < data.len() / 2).then_some((
                    Stored::Delta { base, delta },
                    contents.objects[base].depth + 1,
                ))
            })
            .unwrap_or((Stored::Whole, 0));
        let position = contents.objects.len();
        contents.objects.push(BatchObject {
            oid,
            kind,
            data: Some(data),
            stored,
            depth,
        });
        contents.by_id.insert(oid, position);
        if let Some(dir) = tree_dir {
            contents.set_latest_tree(dir, position);
        }
        position
    }

    /// Writes the batch as one pack and its version 2 index into `pack_dir`; `None` when the
    /// batch is empty. Both files are written under temporary names, then the pack is renamed
    /// into place before the index (git's order: a reader looks for packs through their index,
    /// so it never sees an index without its pack). [`WrittenPack::sync`] makes them durable.
    pub(crate) fn write_pack(&self, pack_dir: &Path) -> Result<Option<WrittenPack>, GitError> {
        let contents = self.lock();
        if contents.objects.is_empty() {
            return Ok(None);
        }
        fs::create_dir_all(pack_dir)
            .map_err(|e| GitError::io("create pack directory", pack_dir, e))?;
        let mut pack_file = tempfile::Builder::new()
            .prefix("tmp_pack_")
            .tempfile_in(pack_dir)
            .map_err(|e| GitError::io("create temporary pack in", pack_dir, e))?;
        let temp_pack_path = pack_file.path().to_owned();
        let write_error = |e| GitError::io("write pack", &temp_pack_path, e);

        let PackData {
            checksum,
            mut index_entries,
            deltas,
        } = write_pack_data(pack_file.as_file_mut(), &contents.objects).map_err(write_error)?;

        let index = encode_index(&mut index_entries, &checksum).map_err(write_error)?;
        let mut index_file = tempfile::Builder::new()
            .prefix("tmp_idx_")
            .tempfile_in(pack_dir)
            .map_err(|e| GitError::io("create temporary pack index in", pack_dir, e))?;
        index_file
            .as_file_mut()
            .write_all(&index)
            .map_err(|e| GitError::io("write pack index", index_file.path(), e))?;

        let name = format!("pack-{}", hex::encode(checksum));
        let pack_path = pack_dir.join(format!("{name}.pack"));
        let index_path = pack_dir.join(format!("{name}.idx"));
        for (temp, path) in [(&pack_file, &pack_path), (&index_file, &index_path)] {
            set_read_only(temp.path())
                .map_err(|e| GitError::io("set mode of pack file", path, e))?;
        }
        // Same name, same bytes: replacing a pack left by an identical earlier batch is harmless.
        pack_file
            .persist(&pack_path)
            .map_err(|e| GitError::io("store pack", &pack_path, e.error))?;
        index_file
            .persist(&index_path)
            .map_err(|e| GitError::io("store pack index", &index_path, e.error))?;
        Ok(Some(WrittenPack {
            pack: pack_path,
            index: index_path,
            objects: contents.objects.len(),
            deltas,
        }))
    }
}

/// What the index of a pack records about one entry.
struct IndexEntry {
    oid: ObjectId,
    /// CRC-32 of the entry as stored: header, base distance and compressed data.
    crc: u32,
    offset: u64,
}

struct PackData {
    checksum: [u8; 20],
    index_entries: Vec<IndexEntry>,
    deltas: usize,
}

/// The objects as one pack: header, one entry per object, the trailing checksum.
fn write_pack_data(file: &mut fs::File, objects: &[BatchObject]) -> std::io::Result<PackData> {
    let count =
        u32::try_from(objects.len()).map_err(|_| too_large("more than 2³² objects in one pack"))?;
    let mut out = HashingWriter::new(BufWriter::new(file));
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(b"PACK");
    header.extend_from_slice(&2u32.to_be_bytes());
    header.extend_from_slice(&count.to_be_bytes());
    out.write_all(&header)?;

    let mut offsets = Vec::with_capacity(objects.len());
    let mut index_entries = Vec::with_capacity(objects.len());
    let mut deltas = 0;
    let mut entry = Vec::new();
    let mut z = Compress::new(Compression::fast(), true);
    for object in objects {
        let offset = out.written;
        entry.clear();
        match &object.stored {
            Stored::Whole => {
                // Only versions stored as deltas let their content go.
                let data = object.data.as_deref().ok_or_else(|| {
                    std::io::Error::other("an object of the batch lost its content")
                })?;
                push_entry_header(&mut entry, type_code(object.kind), data.len());
                compress_into(&mut z, &mut entry, data)?;
            }
            Stored::Delta { base, delta } => {
                push_entry_header(&mut entry, OBJ_OFS_DELTA, delta.len());
                push_base_distance(&mut entry, offset - offsets[*base]);
                compress_into(&mut z, &mut entry, delta)?;
                deltas += 1;
            }
        }
        let mut crc = Crc::new();
        crc.update(&entry);
        out.write_all(&entry)?;
        offsets.push(offset);
        index_entries.push(IndexEntry {
            oid: object.oid,
            crc: crc.sum(),
            offset,
        });
    }
    let checksum: [u8; 20] = out.hasher.finalize().into();
    let mut file = out.inner;
    file.write_all(&checksum)?;
    file.flush()?;
    Ok(PackData {
        checksum,
        index_entries,
        deltas,
    })
}

fn too_large(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::FileTooLarge, what.to_owned())
}

fn set_read_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o444))
}

/// Counts and hashes what goes through it: the pack's trailer is the SHA-1 of everything before.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha1,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha1::new(),
            written: 0,
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn type_code(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Commit => 1,
        ObjectKind::Tree => 2,
        ObjectKind::Blob => 3,
        ObjectKind::Tag => 4,
    }
}

/// The entry header: type in bits 4–6 of the first byte, the size in its low 4 bits and then
/// 7 bits per byte, least significant first, the high bit saying another byte follows.
fn push_entry_header(out: &mut Vec<u8>, type_code: u8, size: usize) {
    let mut size = size as u64;
    let mut byte = (type_code << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size != 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// How far back the base of an `OFS_DELTA` starts: 7 bits per byte, most significant first,
/// with one added to every group but the last so that each length has its own range.
fn push_base_distance(out: &mut Vec<u8>, mut distance: u64) {
    let mut bytes = [0u8; 10];
    let mut start = bytes.len() - 1;
    bytes[start] = (distance & 0x7f) as u8;
    distance >>= 7;
    while distance != 0 {
        distance -= 1;
        start -= 1;
        bytes[start] = 0x80 | (distance & 0x7f) as u8;
        distance >>= 7;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends `data` zlib-compressed to `out`. One compressor serves a whole pack: setting one up
/// allocates and clears some hundred kilobytes, which for small objects (trees, commits, tag
/// bumps) costs far more than compressing them.
/// Objects up to this size go into the pack as one stored (uncompressed) deflate block: most of
/// a batch's objects are deltas of a few dozen bytes and small trees of binary ids, which deflate
/// hardly shrinks, and resetting the compressor clears its 64 KiB hash table every time.
const STORED_UP_TO: usize = 128;

fn compress_into(z: &mut Compress, out: &mut Vec<u8>, data: &[u8]) -> std::io::Result<()> {
    if data.len() <= STORED_UP_TO {
        push_stored_zlib(out, data);
        return Ok(());
    }
    z.reset();
    let mut consumed = 0usize;
    loop {
        out.reserve(data.len() / 2 + 64);
        let before = z.total_in();
        let status = z
            .compress_vec(&data[consumed..], out, FlushCompress::Finish)
            .map_err(std::io::Error::other)?;
        consumed += usize::try_from(z.total_in() - before).unwrap_or(usize::MAX);
        if status == Status::StreamEnd {
            return Ok(());
        }
    }
}

/// `data` (at most 65,535 bytes) as a zlib stream of one stored deflate block (RFC 1950/1951).
fn push_stored_zlib(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() <= usize::from(u16::MAX));
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    // CMF: deflate with a 32 KiB window; FLG: no dictionary, check bits making CMF·256 + FLG a
    // multiple of 31.
    out.extend_from_slice(&[0x78, 0x01]);
    // The final block, stored: its length and the length's complement, little-endian.
    out.push(0x01);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&data[..usize::from(len)]);
    out.extend_from_slice(&adler32(data).to_be_bytes());
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % MOD;
        b = (b + a) % MOD;
    }
    (b << 16) | a
}

/// The sizes at the start of a delta: 7 bits per byte, least significant first.
fn push_size(out: &mut Vec<u8>, size: usize) {
    let mut size = size as u64;
    while size >= 0x80 {
        out.push(0x80 | (size & 0x7f) as u8);
        size >>= 7;
    }
    out.push(size as u8);
}

/// git's patch-delta: `target` from `base` and a delta [`encode_delta`] made; `None` when the
/// delta does not fit the base.
fn apply_delta(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    fn size(delta: &[u8], at: &mut usize) -> Option<usize> {
        let mut value = 0usize;
        let mut shift = 0;
        loop {
            let byte = *delta.get(*at)?;
            *at += 1;
            value |= usize::from(byte & 0x7f).checked_shl(shift)?;
            shift += 7;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
    }
    let mut at = 0;
    if size(delta, &mut at)? != base.len() {
        return None;
    }
    let target_len = size(delta, &mut at)?;
    let mut out = Vec::with_capacity(target_len);
    while at < delta.len() {
        let command = delta[at];
        at += 1;
        if command & 0x80 != 0 {
            let mut offset = 0usize;
            let mut len = 0usize;
            for bit in 0..4 {
                if command & (1 << bit) != 0 {
                    offset |= usize::from(*delta.get(at)?) << (8 * bit);
                    at += 1;
                }
            }
            for bit in 0..3 {
                if command & (0x10 << bit) != 0 {
                    len |= usize::from(*delta.get(at)?) << (8 * bit);
                    at += 1;
                }
            }
            if len == 0 {
                len = 0x10000;
            }
            out.extend_from_slice(base.get(offset..offset.checked_add(len)?)?);
        } else if command == 0 {
            return None;
        } else {
            let len = usize::from(command);
            out.extend_from_slice(delta.get(at..at + len)?);
            at += len;
        }
    }
    (out.len() == target_len).then_some(out)
}

/// A git delta that rebuilds `target` from `base`: the bytes both start with and end with are
/// copied from the base, the rest is inserted. For a tree in which one entry's id changed, that
/// is a copy, an insert of at most 20 bytes and a copy; for anything else it is still exact,
/// only larger. `None` when the base is too large for a delta's 32-bit copy offsets.
pub(crate) fn encode_delta(base: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    if u32::try_from(base.len()).is_err() {
        return None;
    }
    let prefix = common_prefix(base, target);
    let suffix = common_suffix(&base[prefix..], &target[prefix..]);
    let inserted = &target[prefix..target.len() - suffix];
    let mut delta = Vec::with_capacity(32 + inserted.len() + inserted.len() / MAX_INSERT);
    push_size(&mut delta, base.len());
    push_size(&mut delta, target.len());
    push_copy(&mut delta, 0, prefix);
    for chunk in inserted.chunks(MAX_INSERT) {
        delta.push(chunk.len() as u8);
        delta.extend_from_slice(chunk);
    }
    push_copy(&mut delta, base.len() - suffix, suffix);
    Some(delta)
}

/// Compared a block at a time, large blocks first and then small ones within the large block
/// that differs: slice equality is a `memcmp`, where a byte-by-byte loop over a directory of
/// 70 KB cost more than the rest of its delta, and so did a call per 64 bytes.
const COMPARE_BLOCKS: [usize; 2] = [4096, 64];

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let mut at = 0;
    for block in COMPARE_BLOCKS {
        while at + block <= len && a[at..at + block] == b[at..at + block] {
            at += block;
        }
    }
    at + a[at..len]
        .iter()
        .zip(&b[at..len])
        .take_while(|(x, y)| x == y)
        .count()
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let len = a.len().min(b.len());
    let (a, b) = (&a[a.len() - len..], &b[b.len() - len..]);
    let mut matched = 0;
    for block in COMPARE_BLOCKS {
        while matched + block <= len
            && a[len - matched - block..len - matched] == b[len - matched - block..len - matched]
        {
            matched += block;
        }
    }
    matched
        + a[..len - matched]
            .iter()
            .rev()
            .zip(b[..len - matched].iter().rev())
            .take_while(|(x, y)| x == y)
            .count()
}

/// Copy instructions for `len` bytes of the base from `offset`: a command byte whose low four
/// bits say which offset bytes follow and whose next three bits say which size bytes follow
/// (no size bytes meaning 0x10000).
fn push_copy(delta: &mut Vec<u8>, mut offset: usize, mut len: usize) {
    while len > 0 {
        let chunk = len.min(MAX_COPY);
        let mut command = 0x80u8;
        let mut args = [0u8; 7];
        let mut used = 0;
        // The caller made sure the base, and so every offset into it, fits in 32 bits.
        let offset_bytes = (offset as u32).to_le_bytes();
        for (bit, &byte) in offset_bytes.iter().enumerate() {
            if byte != 0 {
                command |= 1 << bit;
                args[used] = byte;
                used += 1;
            }
        }
        if chunk != MAX_COPY {
            let size_bytes = (chunk as u32).to_le_bytes();
            for (bit, &byte) in size_bytes[..3].iter().enumerate() {
                if byte != 0 {
                    command |= 0x10 << bit;
                    args[used] = byte;
                    used += 1;
                }
            }
        }
        delta.push(command);
        delta.extend_from_slice(&args[..used]);
        offset += chunk;
        len -= chunk;
    }
}

/// The version 2 index of a pack: magic, version, the fan-out table, the sorted ids, the CRC-32
/// of each packed entry, 4-byte offsets, the pack's checksum and the index's own checksum.
fn encode_index(entries: &mut [IndexEntry], pack_checksum: &[u8; 20]) -> std::io::Result<Vec<u8>> {
    entries.sort_unstable_by_key(|entry| entry.oid);
    let mut index = Vec::with_capacity(8 + 256 * 4 + entries.len() * 28 + 40);
    index.extend_from_slice(b"\xfftOc");
    index.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for entry in entries.iter() {
        fanout[usize::from(entry.oid.as_bytes()[0])] += 1;
    }
    let mut total = 0u32;
    for count in fanout {
        total += count;
        index.extend_from_slice(&total.to_be_bytes());
    }
    for entry in entries.iter() {
        index.extend_from_slice(entry.oid.as_bytes());
    }
    for entry in entries.iter() {
        index.extend_from_slice(&entry.crc.to_be_bytes());
    }
    for entry in entries.iter() {
        // Offsets from 2 GiB on need the index's 8-byte table; a landing never writes that much.
        let offset = u32::try_from(entry.offset)
            .ok()
            .filter(|offset| offset & 0x8000_0000 == 0)
            .ok_or_else(|| too_large("pack reaches 2 GiB, beyond 4-byte index offsets"))?;
        index.extend_from_slice(&offset.to_be_bytes());
    }
    index.extend_from_slice(pack_checksum);
    let checksum: [u8; 20] = Sha1::digest(&index).into();
    index.extend_from_slice(&checksum);
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_repacked_away_before_its_sync_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let written = WrittenPack {
            pack: dir.path().join("pack-gone.pack"),
            index: dir.path().join("pack-gone.idx"),
            objects: 1,
            deltas: 0,
        };
        assert!(written.sync().is_ok());
        fs::write(&written.pack, b"PACK").unwrap();
        fs::write(&written.index, b"idx").unwrap();
        assert!(written.sync().is_ok());
    }

    fn tree_like(entries: usize, changed: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..entries {
            out.extend_from_slice(format!("40000 svc-{i:04}\0").as_bytes());
            let fill = if changed.contains(&i) {
                0xee
            } else {
                (i % 251) as u8
            };
            out.extend_from_slice(&[fill; 20]);
        }
        out
    }

    #[test]
    fn one_changed_id_in_a_large_tree_is_a_tiny_exact_delta() {
        let base = tree_like(2000, &[]);
        let target = tree_like(2000, &[1234]);
        let delta = encode_delta(&base, &target).unwrap();
        assert!(delta.len() < 40, "{} bytes", delta.len());
        assert_eq!(apply_delta(&base, &delta), Some(target));
        assert_eq!(
            apply_delta(&base[1..], &delta),
            None,
            "a delta for another base"
        );
    }

    fn differ_at(mut bytes: Vec<u8>, at: &[usize]) -> Vec<u8> {
        for &i in at {
            bytes[i] ^= 0xff;
        }
        bytes
    }

    #[test]
    fn deltas_are_exact_for_any_pair_of_inputs() {
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"".to_vec(), b"".to_vec()),
            (b"".to_vec(), b"new".to_vec()),
            (b"old".to_vec(), b"".to_vec()),
            (b"abc".to_vec(), b"abc".to_vec()),
            (b"abcabc".to_vec(), b"abc".to_vec()),
            (b"abc".to_vec(), b"abcabc".to_vec()),
            (b"aaaa".to_vec(), b"aaaaaa".to_vec()),
            (tree_like(3000, &[]), tree_like(3000, &[0, 2999])),
            (tree_like(10, &[]), tree_like(2000, &[5])),
            (vec![7u8; 200_000], vec![7u8; 200_001]),
            ((0..=255).cycle().take(70_000).collect(), vec![1u8; 300]),
            (tree_like(3000, &[]), tree_like(3000, &[1500])),
            // Differences on either side of a large block's edge.
            (vec![3u8; 8192], differ_at(vec![3u8; 8192], &[4095])),
            (vec![3u8; 8192], differ_at(vec![3u8; 8192], &[4096])),
            (vec![3u8; 8192], differ_at(vec![3u8; 8192], &[63, 8128])),
        ];
        for (base, target) in cases {
            let delta = encode_delta(&base, &target).unwrap();
            assert_eq!(
                apply_delta(&base, &delta).as_ref(),
                Some(&target),
                "base {} bytes, target {} bytes",
                base.len(),
                target.len()
            );
        }
    }

    #[test]
    fn small_objects_are_stored_zlib_streams_that_inflate_back() {
        use std::io::Read;
        for data in [&b""[..], b"x", &[0u8, 255, 7, 7, 7], &[42u8; STORED_UP_TO]] {
            let mut stream = Vec::new();
            let mut z = Compress::new(Compression::fast(), true);
            compress_into(&mut z, &mut stream, data).unwrap();
            assert_eq!(stream.len(), data.len() + 11, "stored, not deflated");
            let mut inflated = Vec::new();
            flate2::read::ZlibDecoder::new(stream.as_slice())
                .read_to_end(&mut inflated)
                .unwrap();
            assert_eq!(inflated, data);
        }
        // `printf 'Wikipedia'` has the Adler-32 the RFC's example gives.
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn common_ends_are_found_across_blocks() {
        let a: Vec<u8> = (0..=255).cycle().take(1000).collect();
        for cut in [0, 1, 63, 64, 65, 500, 999] {
            let mut b = a.clone();
            b[cut] ^= 1;
            assert_eq!(common_prefix(&a, &b), cut);
            assert_eq!(common_suffix(&a, &b), 999 - cut);
        }
        assert_eq!(common_prefix(&a, &a[..100]), 100);
        assert_eq!(common_suffix(&a, &a[900..]), 100);
        assert_eq!(common_suffix(&a, &a), 1000);
    }

    #[test]
    fn entry_headers_and_base_distances_use_gits_encodings() {
        let mut header = Vec::new();
        push_entry_header(&mut header, 3, 15);
        assert_eq!(header, [0x3f]);
        header.clear();
        // 100 = 0b110_0100: low four bits 0100, then 0b110.
        push_entry_header(&mut header, 2, 100);
        assert_eq!(header, [0x80 | 0x20 | 0x04, 0x06]);
        let mut distance = Vec::new();
        push_base_distance(&mut distance, 127);
        assert_eq!(distance, [0x7f]);
        distance.clear();
        // 128 is (0 + 1) << 7 | 0: one group above the single-byte range.
        push_base_distance(&mut distance, 128);
        assert_eq!(distance, [0x80, 0x00]);
        distance.clear();
        push_base_distance(&mut distance, 16_511);
        assert_eq!(distance, [0xff, 0x7f]);
        distance.clear();
        push_base_distance(&mut distance, 16_512);
        assert_eq!(distance, [0x80, 0x80, 0x00]);
    }

    #[test]
    fn successive_versions_of_a_directory_chain_no_deeper_than_git_reuses() {
        let batch = Batch::new();
        let mut ids = Vec::new();
        for version in 0..120 {
            ids.push(batch.add(ObjectKind::Tree, &tree_like(500, &[version]), Some("apps")));
            // A blob between versions is neither a base nor a delta.
            batch.add(ObjectKind::Blob, format!("v{version}\n").as_bytes(), None);
        }
        // Replaced versions stored as deltas let their content go, and are rebuilt when read.
        for (version, id) in ids.iter().enumerate() {
            let (kind, data) = batch.get(*id).unwrap();
            assert_eq!(kind, ObjectKind::Tree);
            assert_eq!(
                data.as_ref(),
                tree_like(500, &[version]),
                "version {version}"
            );
        }
        let contents = batch.lock();
        let trees: Vec<&BatchObject> = contents
            .objects
            .iter()
            .filter(|o| o.kind == ObjectKind::Tree)
            .collect();
        assert_eq!(trees.len(), 120);
        assert!(trees.iter().all(|t| t.depth <= MAX_DELTA_DEPTH));
        let whole = trees
            .iter()
            .filter(|t| matches!(t.stored, Stored::Whole))
            .count();
        assert_eq!(
            whole, 3,
            "a new chain starts after every {MAX_DELTA_DEPTH} deltas"
        );
        let kept = trees.iter().filter(|t| t.data.is_some()).count();
        assert_eq!(
            kept,
            whole + 1,
            "the chains' whole versions and the newest one"
        );
        for (index, tree) in contents.objects.iter().enumerate() {
            if let Stored::Delta { base, delta } = &tree.stored {
                assert_eq!(contents.objects[*base].kind, ObjectKind::Tree);
                let base = contents.data(*base).unwrap();
                assert_eq!(
                    apply_delta(&base, delta).as_deref(),
                    contents.data(index).as_deref()
                );
            }
        }
        assert!(
            contents
                .objects
                .iter()
                .filter(|o| o.kind == ObjectKind::Blob)
                .all(|o| matches!(o.stored, Stored::Whole))
        );
    }

    #[test]
    fn a_directory_version_that_comes_back_is_the_base_of_the_next_one() {
        let batch = Batch::new();
        let first = batch.add(ObjectKind::Tree, &tree_like(500, &[1]), Some("apps"));
        batch.add(ObjectKind::Tree, &tree_like(500, &[2]), Some("apps"));
        batch.add(ObjectKind::Tree, &tree_like(500, &[3]), Some("apps"));
        // A change reverts the directory to its second version, then the next one changes it.
        let again = batch.add(ObjectKind::Tree, &tree_like(500, &[2]), Some("apps"));
        let next = batch.add(ObjectKind::Tree, &tree_like(500, &[2, 4]), Some("apps"));
        assert_eq!(batch.len(), 4);
        let contents = batch.lock();
        let index = |id| *contents.by_id.get(&id).unwrap();
        let Stored::Delta { base, .. } = &contents.objects[index(next)].stored else {
            panic!("the next version is a delta")
        };
        assert_eq!(*base, index(again));
        for (id, version) in [(first, &[1][..]), (again, &[2]), (next, &[2, 4])] {
            assert_eq!(
                contents.data(index(id)).unwrap().as_ref(),
                tree_like(500, version)
            );
        }
    }

    #[test]
    fn an_object_added_twice_is_stored_once() {
        let batch = Batch::new();
        let a = batch.add(ObjectKind::Blob, b"same\n", None);
        let b = batch.add(ObjectKind::Blob, b"same\n", None);
        assert_eq!(a, b);
        assert_eq!(batch.len(), 1);
        let (kind, data) = batch.get(a).unwrap();
        assert_eq!((kind, data.as_ref()), (ObjectKind::Blob, &b"same\n"[..]));
    }
}
