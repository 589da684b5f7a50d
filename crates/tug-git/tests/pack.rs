//! The objects of a landing reach the mirror as one pack that git reads, verifies and pushes,
//! with the batch's repeated directories stored as deltas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;

use common::*;
use sha1::{Digest, Sha1};
use tug_git::{FileSource, FileWrite, LandResult, MirrorOptions, ObjectId, land};
use tug_testkit::{BareRepo, Entry, Scratch};

const SERVICES: usize = 400;

fn service_file(service: usize) -> String {
    format!("apps/svc-{service:04}/prod/kustomization.yaml")
}

/// Many services, so that the `apps` directory is a large tree that every commit rewrites.
fn many_services() -> BareRepo {
    let mut entries = Vec::new();
    for i in 0..SERVICES {
        for env in ["dev", "prod"] {
            entries.push(Entry::file(
                &format!("apps/svc-{i:04}/{env}/kustomization.yaml"),
                format!("images:\n  - name: svc-{i:04}\n    newTag: \"1.0.{i}\"\n"),
            ));
        }
    }
    BareRepo::with_entries(&entries).unwrap()
}

fn committed(result: &LandResult) -> ObjectId {
    match result {
        LandResult::Committed { commit } => *commit,
        other => panic!("expected a commit, got {other:?}"),
    }
}

fn git_in(git_dir: &Path, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["-C", git_dir.to_str().unwrap()];
    all.extend_from_slice(args);
    tug_testkit::run_git(None, &all).unwrap()
}

/// Every listed object as `git cat-file --batch` returns it from `git_dir`: (type, content).
fn cat_objects(git_dir: &Path, ids: &[String]) -> HashMap<String, (String, Vec<u8>)> {
    let mut child = tug_testkit::git_command()
        .args(["-C", git_dir.to_str().unwrap(), "cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let request: String = ids.iter().map(|id| format!("{id}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(request.as_bytes()).unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut objects = HashMap::new();
    for id in ids {
        let mut header = String::new();
        stdout.read_line(&mut header).unwrap();
        let fields: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{id}: {header:?}");
        assert_eq!(fields[0], id);
        let mut content = vec![0; fields[2].parse::<usize>().unwrap() + 1];
        stdout.read_exact(&mut content).unwrap();
        assert_eq!(content.pop(), Some(b'\n'));
        objects.insert(id.clone(), (fields[1].to_owned(), content));
    }
    writer.join().unwrap();
    assert!(child.wait().unwrap().success());
    objects
}

fn object_id(kind: &str, content: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("{kind} {}\0", content.len()).as_bytes());
    hasher.update(content);
    hex::encode(hasher.finalize())
}

#[test]
fn sixty_commits_land_as_one_pack_with_the_rewritten_directories_as_deltas() {
    const CHANGES: usize = 60;
    let remote = many_services();
    let data = Scratch::new().unwrap();
    let argv = ArgvLog::default();
    let mirror = open(data.path(), &remote.file_url(), argv.options());
    let base = remote.tip("main").unwrap().unwrap();
    let loose_before = count_loose(mirror.path());
    let packs_before = pack_files(mirror.path());
    let apps_tree_size = git_in(mirror.path(), &["cat-file", "-s", "main:apps"]);
    let apps_tree_size: u64 = String::from_utf8(apps_tree_size)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let changes: Vec<SetLine> = (0..CHANGES)
        .map(|i| {
            SetLine::new(
                &service_file(i * 6),
                "newTag",
                &format!("\"2.0.{i}\""),
                &format!("req-{i}"),
            )
        })
        .collect();
    let refs: Vec<&dyn tug_git::Change> =
        changes.iter().map(|c| c as &dyn tug_git::Change).collect();
    let report = land(&mirror, "main", &refs, &options()).unwrap();

    let commits: Vec<ObjectId> = report.results.iter().map(committed).collect();
    assert_eq!(argv.count("push"), 1);
    // Per commit: the blob, the trees of prod, svc-NNNN, apps and the root, and the commit.
    assert_eq!(report.objects_written, 6 * CHANGES as u64);
    assert_eq!(count_loose(mirror.path()), loose_before, "nothing loose");
    let packs = new_packs(mirror.path(), &packs_before);
    assert_eq!(packs.len(), 1, "{packs:?}");
    let leftovers: Vec<_> = std::fs::read_dir(mirror.path().join("objects/pack"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tmp_"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // git reads and checks the pack and its index, and the whole mirror.
    let packed = verify_pack(&packs[0]);
    assert_eq!(packed.len() as u64, report.objects_written);
    git_in(
        mirror.path(),
        &["fsck", "--full", "--strict", "--no-progress"],
    );

    // Each new version of `apps` (and of nothing that is written only once) is a delta against
    // an earlier one in the same pack, in chains no deeper than git reuses.
    let ids: HashMap<&str, &PackedObject> = packed.iter().map(|o| (o.id.as_str(), o)).collect();
    let deltas: Vec<&PackedObject> = packed.iter().filter(|o| o.base.is_some()).collect();
    assert!(deltas.len() >= CHANGES - 2, "{} deltas", deltas.len());
    for delta in &deltas {
        assert_eq!(delta.kind, "tree", "{delta:?}");
        let base = ids[delta.base.as_deref().unwrap()];
        assert_eq!(
            base.kind, "tree",
            "the base of {delta:?} is in the same pack"
        );
        assert!(delta.depth <= 50, "{delta:?}");
    }
    // Sixty whole versions of `apps` alone would take about sixty times its size.
    let pack_size = std::fs::metadata(&packs[0]).unwrap().len();
    assert!(
        pack_size < 10 * apps_tree_size,
        "pack of {pack_size} bytes for a {apps_tree_size}-byte directory"
    );

    // Every object reads back as exactly the bytes its id names, the same in mirror and remote.
    let all_ids: Vec<String> = packed.iter().map(|o| o.id.clone()).collect();
    let in_mirror = cat_objects(mirror.path(), &all_ids);
    for (id, (kind, content)) in &in_mirror {
        assert_eq!(&object_id(kind, content), id);
        assert_eq!(kind, &ids[id.as_str()].kind);
    }
    assert_eq!(cat_objects(remote.path(), &all_ids), in_mirror);

    // The remote has all sixty commits, in order, and nothing broken.
    git_in(
        remote.path(),
        &["fsck", "--full", "--strict", "--no-progress"],
    );
    let log = remote.log("main").unwrap();
    assert_eq!(log.len(), CHANGES + 1);
    assert_eq!(log[CHANGES].commit, base);
    let landed: Vec<String> = log[..CHANGES]
        .iter()
        .rev()
        .map(|e| e.commit.clone())
        .collect();
    assert_eq!(
        landed,
        commits.iter().map(ObjectId::to_hex).collect::<Vec<_>>()
    );
    for (entry, i) in log[..CHANGES].iter().rev().zip(0..) {
        assert_eq!(
            entry.trailers,
            vec![("Tug-Request".to_owned(), format!("req-{i}"))]
        );
    }
    for i in [0, 29, CHANGES - 1] {
        let content = remote
            .read_file("main", &service_file(i * 6))
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8(content)
                .unwrap()
                .contains(&format!("newTag: \"2.0.{i}\"")),
            "service {i}"
        );
    }

    // The mirror's reader finds the new pack too.
    let tip = mirror.branch_tip("main").unwrap().unwrap();
    let view = mirror.tree_at(tip).unwrap();
    let content = view.read_file(&service_file(6 * 59)).unwrap().unwrap();
    assert!(String::from_utf8(content).unwrap().contains("\"2.0.59\""));
}

#[test]
fn a_batch_reads_what_its_changes_need_in_a_few_requests() {
    const CHANGES: usize = 120;
    let remote = many_services();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    // Each change reads two directories and a file that no other change reads: a round trip
    // each would be hundreds of requests to the object reader.
    let changes: Vec<SetLine> = (0..CHANGES)
        .map(|i| {
            SetLine::new(
                &service_file(i * 3),
                "newTag",
                &format!("\"3.0.{i}\""),
                &format!("req-{i}"),
            )
        })
        .collect();
    let refs: Vec<&dyn tug_git::Change> =
        changes.iter().map(|c| c as &dyn tug_git::Change).collect();

    let report = land(&mirror, "main", &refs, &options()).unwrap();

    assert_eq!(report.results.iter().map(committed).count(), CHANGES);
    // The tip's commit, then a round of pipelined requests per level of directories (two for
    // the 120 directories or files of a level, 64 to a request).
    assert!(
        report.object_requests <= 12,
        "{} requests to the object reader",
        report.object_requests
    );
    for i in [0, CHANGES / 2, CHANGES - 1] {
        let content = remote
            .read_file("main", &service_file(i * 3))
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(content).unwrap(),
            format!(
                "images:\n  - name: svc-{:04}\n    newTag: \"3.0.{i}\"\n",
                i * 3
            )
        );
    }
}

#[test]
fn later_changes_of_a_batch_read_what_earlier_ones_wrote() {
    let remote = many_services();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let new_file = "apps/svc-new/prod/kustomization.yaml";
    let create = Put(
        vec![FileWrite::put(
            new_file,
            "images:\n  - name: svc-new\n    newTag: \"0.1.0\"\n",
        )],
        "add svc-new",
    );
    // Fails with "no such file" unless it sees the blob and trees of the change before it.
    let bump = SetLine::new(new_file, "newTag", "\"0.2.0\"", "req-bump");
    let listed = std::cell::RefCell::new(Vec::new());
    let list = Listing {
        dir: "apps/svc-new",
        seen: &listed,
    };

    let report = land(&mirror, "main", &[&create, &bump, &list], &options()).unwrap();

    assert!(matches!(report.results[0], LandResult::Committed { .. }));
    assert!(
        matches!(report.results[1], LandResult::Committed { .. }),
        "{:?}",
        report.results[1]
    );
    assert_eq!(*listed.borrow(), ["prod"]);
    let content = remote.read_file("main", new_file).unwrap().unwrap();
    assert_eq!(
        String::from_utf8(content).unwrap(),
        "images:\n  - name: svc-new\n    newTag: \"0.2.0\"\n"
    );
    git_in(
        remote.path(),
        &["fsck", "--full", "--strict", "--no-progress"],
    );
}

/// Records the names in a directory and writes one file next to them.
struct Listing<'a> {
    dir: &'static str,
    seen: &'a std::cell::RefCell<Vec<String>>,
}

impl tug_git::Change for Listing<'_> {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, tug_git::ChangeError> {
        *self.seen.borrow_mut() = files
            .list_dir(self.dir)?
            .into_iter()
            .map(|entry| entry.name)
            .collect();
        Ok(vec![FileWrite::put(format!("{}/NOTES", self.dir), "x\n")])
    }

    fn commit_meta(&self) -> tug_git::CommitMeta {
        tug_git::CommitMeta::new(author(), "list")
    }
}

#[test]
fn a_batch_rebuilt_after_a_rejected_push_lands_and_the_lost_attempts_pack_is_removed() {
    let remote = many_services();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let packs_before = pack_files(mirror.path());
    let first = SetLine::new(&service_file(1), "newTag", "\"3.0.0\"", "req-1");
    let raced = Interleaved {
        inner: SetLine::new(&service_file(2), "newTag", "\"3.0.0\"", "req-2"),
        before_first_apply: || {
            remote
                .human_commit(
                    "main",
                    &service_file(3),
                    |old| {
                        set_line(
                            std::str::from_utf8(old.unwrap()).unwrap(),
                            "newTag",
                            "\"9.9.9\"",
                        )
                        .unwrap()
                        .into_bytes()
                    },
                    "pin svc-0003",
                )
                .unwrap();
        },
        applied: std::cell::Cell::new(0),
    };

    let report = land(&mirror, "main", &[&first, &raced], &options()).unwrap();

    assert_eq!(report.attempts, 2);
    let packs = new_packs(mirror.path(), &packs_before);
    assert_eq!(
        packs.len(),
        1,
        "the pack of the attempt that lost is gone, the landed one stays: {packs:?}"
    );
    let packed = verify_pack(&packs[0]).len() as u64;
    assert!(
        packed > 0 && packed < report.objects_written,
        "{packed} of {} objects written by both attempts",
        report.objects_written
    );
    git_in(
        mirror.path(),
        &["fsck", "--full", "--strict", "--no-progress"],
    );
    git_in(
        remote.path(),
        &["fsck", "--full", "--strict", "--no-progress"],
    );
    let log = remote.log("main").unwrap();
    assert_eq!(log[0].commit, committed(&report.results[1]).to_hex());
    assert_eq!(log[2].subject, "pin svc-0003");
    for (service, tag) in [(1, "3.0.0"), (2, "3.0.0"), (3, "9.9.9")] {
        let content = remote.read_file("main", &service_file(service)).unwrap();
        assert!(
            String::from_utf8(content.unwrap())
                .unwrap()
                .contains(&format!("newTag: \"{tag}\"")),
            "svc {service}"
        );
    }
}

/// Changes that only point entries at new objects patch the trees on their path; the others
/// (new, deleted and re-moded entries, new directories) rebuild them. Either way the trees are
/// exactly the ones git makes for the same edits.
#[test]
fn patched_and_rebuilt_trees_are_the_ones_git_makes() {
    let remote = many_services();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let bump = |service: usize, tag: &str| {
        FileWrite::put(
            service_file(service),
            format!("images:\n  - name: svc-{service:04}\n    newTag: \"{tag}\"\n"),
        )
    };
    let executable = FileWrite {
        path: service_file(4),
        action: tug_git::FileAction::Put {
            content: b"images: []\n".to_vec(),
            executable: Some(true),
        },
    };
    let changes = [
        Put(vec![bump(1, "2.0.0")], "repoint"),
        Put(
            vec![FileWrite::put("apps/svc-0002/prod/extra.yaml", "a: 1\n")],
            "new file",
        ),
        Put(
            vec![FileWrite::delete("apps/svc-0003/dev/kustomization.yaml")],
            "delete the only file of a directory",
        ),
        Put(vec![executable], "mode change"),
        Put(
            vec![FileWrite::put(
                "apps/svc-new/prod/kustomization.yaml",
                "b: 2\n",
            )],
            "new directory",
        ),
        Put(vec![bump(1, "3.0.0"), bump(5, "3.0.0")], "repoint twice"),
    ];
    let changes: Vec<&dyn tug_git::Change> =
        changes.iter().map(|c| c as &dyn tug_git::Change).collect();
    let report = land(&mirror, "main", &changes, &options()).unwrap();
    assert_eq!(report.results.len(), 6);
    for result in &report.results {
        committed(result);
    }

    let work = Scratch::new().unwrap();
    let clone = work.join("clone");
    let clone_str = clone.to_str().unwrap();
    tug_testkit::run_git(None, &["clone", "-q", &remote.file_url(), clone_str]).unwrap();
    tug_testkit::run_git(Some(&clone), &["reset", "-q", "--hard", "HEAD~6"]).unwrap();
    let write = |path: &str, content: &str| {
        let path = clone.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    write(
        &service_file(1),
        "images:\n  - name: svc-0001\n    newTag: \"3.0.0\"\n",
    );
    write(
        &service_file(5),
        "images:\n  - name: svc-0005\n    newTag: \"3.0.0\"\n",
    );
    write("apps/svc-0002/prod/extra.yaml", "a: 1\n");
    std::fs::remove_file(clone.join("apps/svc-0003/dev/kustomization.yaml")).unwrap();
    write(&service_file(4), "images: []\n");
    write("apps/svc-new/prod/kustomization.yaml", "b: 2\n");
    tug_testkit::run_git(Some(&clone), &["add", "-A"]).unwrap();
    tug_testkit::run_git(
        Some(&clone),
        &["update-index", "--chmod=+x", &service_file(4)],
    )
    .unwrap();
    let by_git = tug_testkit::run_git(Some(&clone), &["write-tree"]).unwrap();
    let by_tug = git_in(remote.path(), &["rev-parse", "main^{tree}"]);
    assert_eq!(
        String::from_utf8(by_tug).unwrap().trim(),
        String::from_utf8(by_git).unwrap().trim()
    );
    git_in(
        remote.path(),
        &["fsck", "--full", "--strict", "--no-progress"],
    );
}
