//! Rolling a mirror's small packs into one, the way `git repack --geometric=2` chooses them,
//! without the walk that makes it slow on a busy mirror.
//!
//! Every landed batch adds a pack, and fetches of other writers' small pushes add loose objects.
//! A geometric repack keeps the packs' sizes a progression (each at least twice the objects of
//! all smaller ones together), so each object is copied O(log n) times over the mirror's life.
//! `git repack --geometric` hands the packs to `pack-objects --stdin-packs`, which walks every
//! commit of the packs it rolls up and every tree they touch to name the objects for its delta
//! search: with directories of thousands of entries and tens of thousands of new commits, that
//! walk took seconds of CPU. The packs tug writes need no search (each directory's versions are
//! already deltas against each other, in the same pack), so here `pack-objects` gets the
//! objects' ids, read from the packs' indexes, with no walk and no search, and copies what it
//! finds as it is.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::env::{GitEnv, drain_output};
use crate::error::GitError;
use crate::object::ObjectId;

/// One pack of a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackFile {
    /// The path without extension: `…/objects/pack/pack-<hash>`.
    pub(crate) stem: PathBuf,
    pub(crate) objects: u64,
    /// A `.keep` file protects it from being rolled up.
    pub(crate) kept: bool,
}

impl PackFile {
    fn path(&self, extension: &str) -> PathBuf {
        self.stem.with_extension(extension)
    }
}

/// The packs in `pack_dir` that have both their `.pack` and their `.idx`.
pub(crate) fn list_packs(pack_dir: &Path) -> Result<Vec<PackFile>, GitError> {
    let entries = fs::read_dir(pack_dir).map_err(|e| GitError::io("list", pack_dir, e))?;
    let mut packs = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "idx") {
            continue;
        }
        let stem = path.with_extension("");
        if !stem.with_extension("pack").exists() {
            continue;
        }
        let objects = match index_object_count(&path) {
            Ok(objects) => objects,
            // Removed by a concurrent removal of a lost push's pack: not a pack any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(GitError::io("read pack index", &path, e)),
        };
        packs.push(PackFile {
            kept: stem.with_extension("keep").exists(),
            stem,
            objects,
        });
    }
    Ok(packs)
}

/// A version 2 pack index: magic, version, 256 fan-out entries (the last one is the object
/// count), then the sorted object ids.
const INDEX_HEADER: usize = 8 + 256 * 4;

fn read_index_header(file: &mut fs::File) -> std::io::Result<u64> {
    let mut header = [0u8; INDEX_HEADER];
    file.read_exact(&mut header)?;
    if header[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(std::io::Error::other("not a version 2 pack index"));
    }
    let count = &header[INDEX_HEADER - 4..];
    Ok(u64::from(u32::from_be_bytes([
        count[0], count[1], count[2], count[3],
    ])))
}

fn index_object_count(path: &Path) -> std::io::Result<u64> {
    read_index_header(&mut fs::File::open(path)?)
}

/// A pack index opened and past its header, with its object count.
fn open_index(path: &Path) -> std::io::Result<(fs::File, u64)> {
    let mut file = fs::File::open(path)?;
    let count = read_index_header(&mut file)?;
    Ok((file, count))
}

/// Writes the ids of an index opened by [`open_index`] as hex lines, a block at a time.
fn write_index_ids(file: &mut fs::File, count: u64, out: &mut dyn Write) -> std::io::Result<()> {
    const IDS_PER_READ: usize = 4096;
    let mut left = count;
    let mut block = vec![0u8; IDS_PER_READ * 20];
    let mut line = [0u8; 41];
    line[40] = b'\n';
    while left > 0 {
        let ids = usize::try_from(left).map_or(IDS_PER_READ, |left| left.min(IDS_PER_READ));
        let bytes = &mut block[..ids * 20];
        file.read_exact(bytes)?;
        for id in bytes.chunks_exact(20) {
            for (pair, byte) in line.chunks_exact_mut(2).zip(id) {
                pair[0] = HEX[usize::from(byte >> 4)];
                pair[1] = HEX[usize::from(byte & 0xf)];
            }
            out.write_all(&line)?;
        }
        left -= ids as u64;
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The ids of every object in a pack, from its index.
#[cfg(test)]
fn index_object_ids(path: &Path) -> std::io::Result<Vec<ObjectId>> {
    let mut file = fs::File::open(path)?;
    let count = read_index_header(&mut file)?;
    let len = usize::try_from(count)
        .ok()
        .and_then(|count| count.checked_mul(20))
        .ok_or_else(|| std::io::Error::other("pack index too large"))?;
    let mut ids = vec![0u8; len];
    file.read_exact(&mut ids)?;
    Ok(ids
        .chunks_exact(20)
        .filter_map(|id| <[u8; 20]>::try_from(id).ok())
        .map(ObjectId::from_bytes)
        .collect())
}

/// The packs a geometric repack with factor 2 rolls into one (indexes into `packs`): sorted by
/// object count, the smallest ones up to where the counts start doubling, and then any larger
/// pack the rolled-up pack would not be half the size of. git's own choice
/// (`repack.c::split_pack_geometry`); kept packs are never chosen.
pub(crate) fn roll_up(packs: &[PackFile]) -> Vec<usize> {
    const FACTOR: u64 = 2;
    let mut order: Vec<usize> = (0..packs.len()).filter(|&i| !packs[i].kept).collect();
    order.sort_by_key(|&i| packs[i].objects);
    let weight = |position: usize| packs[order[position]].objects.max(1);
    let mut split = 0;
    for position in (1..order.len()).rev() {
        if weight(position) < FACTOR.saturating_mul(weight(position - 1)) {
            split = position + 1;
            break;
        }
    }
    let mut total: u64 = (0..split).map(weight).sum();
    while split < order.len() && weight(split) < FACTOR.saturating_mul(total) {
        total += weight(split);
        split += 1;
    }
    order.truncate(split);
    order
}

/// The loose objects of a repository.
pub(crate) fn loose_objects(objects_dir: &Path) -> Result<Vec<ObjectId>, GitError> {
    let mut ids = Vec::new();
    let entries = fs::read_dir(objects_dir).map_err(|e| GitError::io("list", objects_dir, e))?;
    for entry in entries.filter_map(Result::ok) {
        let prefix = entry.file_name().to_string_lossy().into_owned();
        if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Ok(files) = fs::read_dir(entry.path()) else {
            continue;
        };
        for file in files.filter_map(Result::ok) {
            let rest = file.file_name().to_string_lossy().into_owned();
            if let Some(id) = ObjectId::from_hex(&format!("{prefix}{rest}")) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

/// What [`roll_up_packs`] did.
pub(crate) struct RolledUp {
    pub(crate) packs_before: usize,
    pub(crate) packs_after: usize,
}

/// Rolls the packs [`roll_up`] chooses, and the loose objects, into one new pack; writes a
/// multi-pack index over the packs that stay and the new one; then deletes what was rolled up.
/// Readers, fetches and pushes go on meanwhile: every object is in a pack that stays (or the
/// new one) before anything is deleted, and git looks for a pack again when one went away.
pub(crate) fn roll_up_packs(env: &GitEnv, git_dir: &Path) -> Result<RolledUp, GitError> {
    let objects_dir = git_dir.join("objects");
    let pack_dir = objects_dir.join("pack");
    let packs = list_packs(&pack_dir)?;
    let chosen = roll_up(&packs);
    let loose = loose_objects(&objects_dir)?;
    let packs_before = packs.len();
    if chosen.len() < 2 && loose.is_empty() {
        return Ok(RolledUp {
            packs_before,
            packs_after: packs_before,
        });
    }

    // Opened (and checked) before pack-objects starts: a pack removed meanwhile is skipped, and
    // an index that cannot be read fails the roll-up before anything is written.
    let mut indexes = Vec::with_capacity(chosen.len());
    for &index in &chosen {
        let idx = packs[index].path("idx");
        match open_index(&idx) {
            Ok(open) => indexes.push((idx, open)),
            // A lost push's pack removed meanwhile: its objects are needed by nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(GitError::io("read pack index", &idx, e)),
        }
    }
    let mut cmd = env.local(git_dir);
    cmd.args([
        "pack-objects",
        "--delta-base-offset",
        "-q",
        "--window=0",
        "--non-empty",
    ])
    .arg(pack_dir.join("pack"));
    // The ids go to pack-objects as they are read: a mirror grown to hundreds of thousands of
    // objects would otherwise hold them several times over in memory while it repacks.
    let output = run_with_writer(env, cmd, "repack", |stdin| {
        for (path, (mut file, count)) in indexes {
            write_index_ids(&mut file, count, stdin).map_err(|e| {
                std::io::Error::new(e.kind(), format!("read {}: {e}", path.display()))
            })?;
        }
        for id in &loose {
            writeln!(stdin, "{}", id.to_hex())?;
        }
        Ok(())
    })?;
    let hash = String::from_utf8_lossy(&output).trim().to_owned();
    if hash.len() != 40 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GitError::Command {
            op: "repack",
            status: "exit status: 0".to_owned(),
            detail: format!("git pack-objects named no pack: {hash:?}"),
        });
    }
    let new_pack = format!("pack-{hash}.idx");

    let mut staying: Vec<String> = packs
        .iter()
        .enumerate()
        .filter(|(index, _)| !chosen.contains(index))
        .filter_map(|(_, pack)| {
            pack.path("idx")
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .collect();
    if !staying.contains(&new_pack) {
        staying.push(new_pack.clone());
    }
    let mut cmd = env.local(git_dir);
    cmd.args([
        "multi-pack-index",
        "write",
        "--stdin-packs",
        "--no-progress",
    ]);
    let mut list = staying.join("\n");
    list.push('\n');
    run_with_writer(env, cmd, "repack", |stdin| stdin.write_all(list.as_bytes()))?;

    for &index in &chosen {
        let pack = &packs[index];
        if pack
            .path("idx")
            .file_name()
            .is_some_and(|name| name == new_pack.as_str())
        {
            continue;
        }
        // The index first: a reader finds a pack through its index, so it never sees an index
        // without its pack.
        for extension in ["idx", "pack", "rev"] {
            let path = pack.path(extension);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(GitError::io("remove rolled-up pack", &path, e));
            }
        }
    }
    if !loose.is_empty() {
        let mut cmd = env.local(git_dir);
        cmd.args(["prune-packed", "-q"]);
        env.run(cmd, "repack")?;
    }
    Ok(RolledUp {
        packs_before,
        packs_after: list_packs(&pack_dir)?.len(),
    })
}

/// Lowers `child`'s CPU priority before it is given anything to do (its stdin is still open, so
/// it has not started on the work). Threads it starts later inherit the value. Failing to lower
/// it leaves the roll-up at the server's priority, as before: nothing worse than slower requests.
fn lower_priority(child: &std::process::Child) {
    use rustix::process::{Pid, getpriority_process, setpriority_process};
    let own = getpriority_process(None).unwrap_or(0);
    let lower = (own + ROLL_UP_NICENESS).min(19);
    if let Err(e) = setpriority_process(Some(Pid::from_child(child)), lower) {
        tracing::debug!(error = %e, "the roll-up runs at the server's CPU priority");
    }
}

/// How much lower than the server's own the CPU priority (nice value) of a roll-up is. A busy
/// server's requests and the pushes they wait on come first; the roll-up takes what CPU they
/// leave, and still gets a share when none is left (CFS weighs nice 10 at about a tenth of 0).
const ROLL_UP_NICENESS: i32 = 10;

/// Runs `cmd` at [`ROLL_UP_NICENESS`] below the caller's priority, `write` feeding its stdin;
/// its stdout when it succeeds. If `write` fails, the child is killed before its stdin closes:
/// it must not take a cut-off list for the whole one.
fn run_with_writer(
    env: &GitEnv,
    mut cmd: std::process::Command,
    op: &'static str,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<Vec<u8>, GitError> {
    env.observe(&cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| env.spawn_error(e))?;
    lower_priority(&child);
    let (stdout, stderr) = drain_output(&mut child);
    let mut stdin = child
        .stdin
        .take()
        .map(|stdin| std::io::BufWriter::with_capacity(64 * 1024, stdin));
    let written = match stdin.as_mut() {
        Some(stdin) => write(stdin).and_then(|()| stdin.flush()),
        None => Ok(()),
    };
    let failed_to_write = match written {
        // A child that stops reading fails below with its own words.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            let _ = child.kill();
            Some(e)
        }
        _ => None,
    };
    drop(stdin);
    let status = child.wait().map_err(|e| env.spawn_error(e));
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status = status?;
    if let Some(e) = failed_to_write {
        return Err(GitError::Command {
            op,
            status: status.to_string(),
            detail: env.redact(&e.to_string()),
        });
    }
    if status.success() {
        Ok(stdout)
    } else {
        Err(GitError::Command {
            op,
            status: status.to_string(),
            detail: env.redact(String::from_utf8_lossy(&stderr).trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packs(counts: &[u64]) -> Vec<PackFile> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &objects)| PackFile {
                stem: PathBuf::from(format!("pack-{i}")),
                objects,
                kept: false,
            })
            .collect()
    }

    fn rolled(counts: &[u64]) -> Vec<u64> {
        let packs = packs(counts);
        let mut chosen: Vec<u64> = roll_up(&packs).iter().map(|&i| packs[i].objects).collect();
        chosen.sort_unstable();
        chosen
    }

    #[test]
    fn small_packs_roll_up_and_a_progression_stays() {
        // The clone's pack and sixteen batches: the batches roll up, the clone's pack stays.
        let mut counts = vec![200_000];
        counts.extend([1_300; 16]);
        assert_eq!(rolled(&counts), vec![1_300; 16]);
        // Already a progression: nothing to do.
        assert!(rolled(&[200_000, 40_000, 10_000, 3_000, 1_000]).is_empty());
        // Sixteen batches beside a rolled-up pack of 20,000 objects: 16 × 1,300 > 20,000 / 2,
        // so that pack joins them; the clone's pack is still more than twice all of them.
        let mut counts = vec![200_000, 20_000];
        counts.extend([1_300; 16]);
        let mut expected = vec![1_300; 16];
        expected.push(20_000);
        assert_eq!(rolled(&counts), expected);
        // One pack, or none: nothing to roll up.
        assert!(rolled(&[5]).is_empty());
        assert!(rolled(&[]).is_empty());
    }

    fn git(dir: &Path, args: &[&str], input: Option<&str>) -> String {
        let mut child = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "git {args:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn small_packs_and_loose_objects_roll_up_into_one_pack_with_every_object_kept() {
        let scratch = tempfile::tempdir().unwrap();
        let repo = scratch.path().join("mirror.git");
        let repo_str = repo.to_str().unwrap();
        std::process::Command::new("git")
            .args(["init", "-q", "--bare", repo_str])
            .status()
            .unwrap();
        let mut all = Vec::new();
        // Three small packs of blobs, then loose blobs (as a fetch of a small push leaves).
        for pack in 0..3 {
            let mut ids = String::new();
            for blob in 0..5 {
                let id = git(
                    &repo,
                    &["hash-object", "-w", "--stdin"],
                    Some(&format!("pack {pack} blob {blob}\n")),
                );
                ids.push_str(&id);
                all.push(id.trim().to_owned());
            }
            git(
                &repo,
                &[
                    "pack-objects",
                    "-q",
                    repo.join("objects/pack/pack").to_str().unwrap(),
                ],
                Some(&ids),
            );
            git(&repo, &["prune-packed"], None);
        }
        for blob in 0..4 {
            let id = git(
                &repo,
                &["hash-object", "-w", "--stdin"],
                Some(&format!("loose {blob}\n")),
            );
            all.push(id.trim().to_owned());
        }
        let pack_dir = repo.join("objects/pack");
        assert_eq!(list_packs(&pack_dir).unwrap().len(), 3);
        assert_eq!(loose_objects(&repo.join("objects")).unwrap().len(), 4);

        let env = GitEnv::for_tests(scratch.path());
        let done = roll_up_packs(&env, &repo).unwrap();

        assert_eq!((done.packs_before, done.packs_after), (3, 1));
        assert!(loose_objects(&repo.join("objects")).unwrap().is_empty());
        assert!(pack_dir.join("multi-pack-index").exists());
        let packs = list_packs(&pack_dir).unwrap();
        assert_eq!(packs[0].objects, 19);
        let mut listed: Vec<String> = index_object_ids(&packs[0].path("idx"))
            .unwrap()
            .iter()
            .map(ObjectId::to_hex)
            .collect();
        listed.sort();
        all.sort();
        assert_eq!(listed, all);
        let found = git(
            &repo,
            &["cat-file", "--batch-check"],
            Some(&format!("{}\n", all.join("\n"))),
        );
        assert!(!found.contains("missing"), "{found}");
        // Nothing left to roll up: the next call changes nothing.
        let again = roll_up_packs(&env, &repo).unwrap();
        assert_eq!((again.packs_before, again.packs_after), (1, 1));
    }

    #[test]
    fn index_ids_are_written_as_hex_lines_across_blocks() {
        let scratch = tempfile::tempdir().unwrap();
        let path = scratch.path().join("pack-x.idx");
        let count: u32 = 5_000;
        let mut bytes = vec![0xff, b't', b'O', b'c', 0, 0, 0, 2];
        bytes.extend(std::iter::repeat_n(0u8, 255 * 4));
        bytes.extend(count.to_be_bytes());
        let ids: Vec<[u8; 20]> = (0..count)
            .map(|i| {
                let mut id = [0u8; 20];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id[19] = 0xab;
                id
            })
            .collect();
        for id in &ids {
            bytes.extend(id);
        }
        fs::write(&path, bytes).unwrap();

        let (mut file, read_count) = open_index(&path).unwrap();
        assert_eq!(read_count, u64::from(count));
        let mut out = Vec::new();
        write_index_ids(&mut file, read_count, &mut out).unwrap();
        let expected: String = ids
            .iter()
            .map(|id| format!("{}\n", ObjectId::from_bytes(*id).to_hex()))
            .collect();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn a_list_cut_off_by_a_failed_read_writes_no_pack() {
        let scratch = tempfile::tempdir().unwrap();
        let repo = scratch.path().join("mirror.git");
        std::process::Command::new("git")
            .args(["init", "-q", "--bare", repo.to_str().unwrap()])
            .status()
            .unwrap();
        let id = git(&repo, &["hash-object", "-w", "--stdin"], Some("one\n"));
        let env = GitEnv::for_tests(scratch.path());
        let mut cmd = env.local(&repo);
        cmd.args(["pack-objects", "-q", "--non-empty"])
            .arg(repo.join("objects/pack/pack"));
        let err = run_with_writer(&env, cmd, "repack", |stdin| {
            stdin.write_all(id.as_bytes())?;
            stdin.flush()?;
            Err(std::io::Error::other("read pack-x.idx: disk gone"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
        assert!(list_packs(&repo.join("objects/pack")).unwrap().is_empty());
    }

    #[test]
    fn a_roll_up_runs_at_a_lower_cpu_priority_than_the_server() {
        let scratch = tempfile::tempdir().unwrap();
        let env = GitEnv::for_tests(scratch.path());
        // The child reads its own nice value (field 19 of /proc/self/stat) only once its stdin
        // closes, which is after its priority was set.
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "cat >/dev/null; cut -d' ' -f19 /proc/$$/stat"]);
        let out = run_with_writer(&env, cmd, "repack", |stdin| stdin.write_all(b"ids\n")).unwrap();
        let own = rustix::process::getpriority_process(None).unwrap();
        let child: i32 = String::from_utf8(out).unwrap().trim().parse().unwrap();
        assert_eq!(child, (own + ROLL_UP_NICENESS).min(19));
        assert!(child > own || own == 19, "own {own}, roll-up {child}");
    }

    #[test]
    fn kept_packs_are_never_rolled_up() {
        let mut packs = packs(&[100, 100, 100]);
        packs[1].kept = true;
        let chosen = roll_up(&packs);
        assert!(!chosen.contains(&1));
        assert_eq!(chosen.len(), 2);
    }
}
