//! Landing changes over file:// against real bare repositories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::Cell;

use common::*;
use tug_git::{
    Auth, ChangeError, EntryKind, FileSource, FileWrite, GitError, LandResult, Mirror,
    MirrorOptions, ObjectId, Remote, land,
};
use tug_testkit::{BareRepo, Entry, Scratch};

fn manifests() -> BareRepo {
    BareRepo::with_files(&[
        (KUSTOMIZATION, MANIFEST.as_bytes()),
        ("README.md", b"# manifests\n"),
    ])
    .unwrap()
}

fn committed(result: &LandResult) -> ObjectId {
    match result {
        LandResult::Committed { commit } => *commit,
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[test]
fn one_change_lands_with_author_committer_time_and_trailers() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let before = remote.tip("main").unwrap().unwrap();

    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"1.1.0\"", "req-1");
    let report = land(&mirror, "main", &[&change], &options()).unwrap();

    let commit = committed(&report.results[0]);
    assert_eq!(report.attempts, 1);
    assert!(report.pushed);
    assert_eq!(report.tip, Some(commit));
    assert_eq!(remote.tip("main").unwrap(), Some(commit.to_hex()));
    assert_eq!(
        mirror.branch_tip("main").unwrap(),
        Some(commit),
        "mirror ref follows the push"
    );
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert_eq!(
        content,
        MANIFEST.replace("\"1.0.0\"  # release tag", "\"1.1.0\"  # release tag")
    );

    let log = remote.log("main").unwrap();
    let head = &log[0];
    assert_eq!(head.parents, vec![before]);
    assert_eq!(
        (head.author_name.as_str(), head.author_email.as_str()),
        ("CI Pipeline", "ci@example.invalid")
    );
    assert_eq!(
        (head.committer_name.as_str(), head.committer_email.as_str()),
        ("tug", "tug@example.invalid")
    );
    assert_eq!(head.subject, "set newTag to \"1.1.0\"");
    assert_eq!(
        head.trailers,
        vec![("Tug-Request".to_owned(), "req-1".to_owned())]
    );
    let date = remote
        .git(&["log", "-1", "--format=%at %ct", "main"])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&date).trim(),
        "1750000000 1750000000"
    );
    // The objects written in-process are valid git objects.
    remote.git(&["fsck", "--strict", "--no-progress"]).unwrap();
}

#[test]
fn five_changes_land_as_five_commits_in_one_push() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let argv = ArgvLog::default();
    let mirror = open(data.path(), &remote.file_url(), argv.options());
    let changes: Vec<SetLine> = (1..=5)
        .map(|i| {
            SetLine::new(
                KUSTOMIZATION,
                "newTag",
                &format!("\"1.{i}.0\""),
                &format!("req-{i}"),
            )
        })
        .collect();
    let refs: Vec<&dyn tug_git::Change> =
        changes.iter().map(|c| c as &dyn tug_git::Change).collect();

    let report = land(&mirror, "main", &refs, &options()).unwrap();

    let commits: Vec<ObjectId> = report.results.iter().map(committed).collect();
    let mut distinct = commits.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 5);
    assert_eq!(argv.count("push"), 1);
    assert_eq!(report.attempts, 1);
    let log = remote.log("main").unwrap();
    let landed: Vec<String> = log[..5].iter().rev().map(|e| e.commit.clone()).collect();
    assert_eq!(
        landed,
        commits.iter().map(ObjectId::to_hex).collect::<Vec<_>>(),
        "one commit per change, in order"
    );
    for (entry, i) in log[..5].iter().rev().zip(1..) {
        assert_eq!(
            entry.trailers,
            vec![("Tug-Request".to_owned(), format!("req-{i}"))]
        );
        assert_eq!(entry.parents.len(), 1);
    }
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(
        content.contains("newTag: \"1.5.0\"  # release tag"),
        "{content}"
    );
}

#[test]
fn a_failing_change_is_skipped_and_the_others_land() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let first = SetLine::new(KUSTOMIZATION, "newTag", "\"2.0.0\"", "req-a");
    let missing_file = SetLine::new(
        "apps/gone/kustomization.yaml",
        "newTag",
        "\"2.0.0\"",
        "req-b",
    );
    let missing_key = SetLine::new(KUSTOMIZATION, "nope", "1", "req-c");
    let last = SetLine::new(KUSTOMIZATION, "replicas", "4", "req-d");

    let report = land(
        &mirror,
        "main",
        &[&first, &missing_file, &missing_key, &last],
        &options(),
    )
    .unwrap();

    assert!(matches!(report.results[0], LandResult::Committed { .. }));
    assert!(
        matches!(&report.results[1], LandResult::Failed(ChangeError::Edit { path, .. }) if path == "apps/gone/kustomization.yaml")
    );
    assert!(
        matches!(&report.results[2], LandResult::Failed(ChangeError::Edit { message, .. }) if message.contains("nope"))
    );
    let last_commit = committed(&report.results[3]);
    let log = remote.log("main").unwrap();
    assert_eq!(log[0].commit, last_commit.to_hex());
    assert_eq!(log[1].commit, committed(&report.results[0]).to_hex());
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(
        content.contains("\"2.0.0\"") && content.contains("replicas: 4"),
        "{content}"
    );
}

#[test]
fn a_change_that_changes_nothing_makes_no_commit_unless_empty_commits_are_allowed() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let argv = ArgvLog::default();
    let mirror = open(data.path(), &remote.file_url(), argv.options());
    let before = remote.tip("main").unwrap();
    let same = SetLine::new(KUSTOMIZATION, "newTag", "\"1.0.0\"", "req-same");

    let report = land(&mirror, "main", &[&same], &options()).unwrap();
    assert!(matches!(report.results[0], LandResult::UpToDate));
    assert!(!report.pushed);
    assert_eq!(argv.count("push"), 0);
    assert_eq!(remote.tip("main").unwrap(), before);

    let mut redeploy = options();
    redeploy.allow_empty = true;
    let report = land(&mirror, "main", &[&same], &redeploy).unwrap();
    let commit = committed(&report.results[0]);
    assert_eq!(remote.tip("main").unwrap(), Some(commit.to_hex()));
    let trees = remote
        .git(&["rev-parse", "main^{tree}", "main~1^{tree}"])
        .unwrap();
    let trees: Vec<&str> = std::str::from_utf8(&trees).unwrap().lines().collect();
    assert_eq!(trees[0], trees[1], "an empty commit keeps the tree");
}

#[test]
fn a_human_push_between_read_and_push_is_kept_and_the_change_reapplied_on_top() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let base = remote.tip("main").unwrap().unwrap();
    let human_commit = std::cell::RefCell::new(None);
    let change = Interleaved {
        inner: SetLine::new(KUSTOMIZATION, "newTag", "\"3.0.0\"", "req-race"),
        before_first_apply: || {
            let sha = remote
                .human_commit(
                    "main",
                    KUSTOMIZATION,
                    |old| {
                        set_line(std::str::from_utf8(old.unwrap()).unwrap(), "replicas", "5")
                            .unwrap()
                            .into_bytes()
                    },
                    "scale checkout to 5",
                )
                .unwrap();
            *human_commit.borrow_mut() = Some(sha);
        },
        applied: Cell::new(0),
    };

    let report = land(&mirror, "main", &[&change], &options()).unwrap();

    assert_eq!(report.attempts, 2, "first push rejected, second accepted");
    assert_eq!(
        change.applied.get(),
        2,
        "the change was re-applied, not rebased"
    );
    let ours = committed(&report.results[0]);
    let human = human_commit.borrow().clone().unwrap();
    let log = remote.log("main").unwrap();
    assert_eq!(log[0].commit, ours.to_hex());
    assert_eq!(log[0].parents, vec![human.clone()]);
    assert_eq!(log[1].commit, human);
    assert_eq!(log[1].parents, vec![base]);
    assert!(
        log.iter().all(|entry| entry.parents.len() <= 1),
        "history stays linear"
    );
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(
        content.contains("newTag: \"3.0.0\"  # release tag"),
        "{content}"
    );
    assert!(content.contains("replicas: 5"), "{content}");
}

#[test]
fn writes_through_symlinks_and_outside_the_repository_are_refused() {
    let remote = BareRepo::with_entries(&[
        Entry::file("real/app.yaml", "a: 1\n"),
        Entry::symlink("linked", "real"),
        Entry::symlink("app-link.yaml", "real/app.yaml"),
    ])
    .unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let tip = mirror.branch_tip("main").unwrap().unwrap();
    let view = mirror.tree_at(tip).unwrap();
    assert_eq!(view.entry_kind("linked").unwrap(), Some(EntryKind::Symlink));
    assert_eq!(view.entry_kind("real").unwrap(), Some(EntryKind::Dir));
    assert!(
        view.read_file("linked/app.yaml").is_err(),
        "reads do not follow symlinks either"
    );

    let through_dir = Put(
        vec![FileWrite::put("linked/app.yaml", "a: 2\n")],
        "through a symlinked dir",
    );
    let onto_link = Put(
        vec![FileWrite::put("app-link.yaml", "a: 3\n")],
        "onto a symlink",
    );
    let escape = Put(vec![FileWrite::put("../outside.yaml", "x\n")], "outside");
    let absolute = Put(vec![FileWrite::put("/etc/x.yaml", "x\n")], "absolute");
    let report = land(
        &mirror,
        "main",
        &[&through_dir, &onto_link, &escape, &absolute],
        &options(),
    )
    .unwrap();

    for (result, path) in report.results.iter().zip([
        "linked/app.yaml",
        "app-link.yaml",
        "../outside.yaml",
        "/etc/x.yaml",
    ]) {
        match result {
            LandResult::Failed(error @ ChangeError::Path { .. }) => {
                assert!(
                    error.to_string().contains(path.trim_start_matches("../")),
                    "{error}"
                )
            }
            other => panic!("{path}: expected a path error, got {other:?}"),
        }
    }
    assert!(
        report
            .results
            .iter()
            .take(2)
            .all(|r| matches!(r, LandResult::Failed(e) if e.to_string().contains("symlink")))
    );
    assert!(!report.pushed);
    assert_eq!(
        remote.read_file("main", "real/app.yaml").unwrap().unwrap(),
        b"a: 1\n"
    );
}

#[test]
fn files_are_added_deleted_and_listed_and_emptied_directories_disappear() {
    let remote =
        BareRepo::with_files(&[("apps/a/app.yaml", b"a\n"), ("apps/b/app.yaml", b"b\n")]).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let change = Put(
        vec![
            FileWrite::delete("apps/a/app.yaml"),
            FileWrite::put("apps/c/new.yaml", "c\n"),
            FileWrite::put("top.yaml", "t\n"),
        ],
        "reshape",
    );
    let report = land(&mirror, "main", &[&change], &options()).unwrap();
    let tip = committed(&report.results[0]);
    let view = mirror.tree_at(tip).unwrap();
    let names: Vec<String> = view
        .list_dir("apps")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(view.read_file("apps/c/new.yaml").unwrap().unwrap(), b"c\n");
    assert_eq!(view.entry_kind("apps/a").unwrap(), None);
    let listed = remote
        .git(&["ls-tree", "-r", "--name-only", "main"])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listed),
        "apps/b/app.yaml\napps/c/new.yaml\ntop.yaml\n"
    );
    remote.git(&["fsck", "--strict", "--no-progress"]).unwrap();
}

#[test]
fn a_branch_that_does_not_exist_is_created() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    assert_eq!(mirror.branch_tip("env/prod").unwrap(), None);
    let change = Put(
        vec![FileWrite::put("prod.yaml", "replicas: 3\n")],
        "start the prod branch",
    );
    let report = land(&mirror, "env/prod", &[&change], &options()).unwrap();
    let commit = committed(&report.results[0]);
    assert_eq!(remote.tip("env/prod").unwrap(), Some(commit.to_hex()));
    assert!(remote.log("env/prod").unwrap()[0].parents.is_empty());
}

#[test]
fn a_stale_mirror_is_refreshed_before_declaring_a_change_up_to_date() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    // A human sets the tag the request asks for, then changes it again; the mirror saw neither.
    remote
        .human_commit(
            "main",
            KUSTOMIZATION,
            |old| {
                set_line(
                    std::str::from_utf8(old.unwrap()).unwrap(),
                    "newTag",
                    "\"9.9.9\"",
                )
                .unwrap()
                .into_bytes()
            },
            "manual pin",
        )
        .unwrap();
    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"1.0.0\"", "req-restore");
    let report = land(&mirror, "main", &[&change], &options()).unwrap();
    assert!(
        matches!(report.results[0], LandResult::Committed { .. }),
        "{:?}",
        report.results
    );
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(content.contains("newTag: \"1.0.0\""), "{content}");
}

#[test]
fn landed_requests_are_found_by_trailer() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let a = SetLine::new(KUSTOMIZATION, "newTag", "\"5.0.0\"", "req-a");
    let b = SetLine::new(KUSTOMIZATION, "replicas", "7", "req-b");
    let report = land(&mirror, "main", &[&a, &b], &options()).unwrap();
    let found = mirror
        .find_trailer("main", "Tug-Request", &["req-a", "req-b", "req-never"], 100)
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["req-a"], committed(&report.results[0]));
    assert_eq!(found["req-b"], committed(&report.results[1]));
    // Bounded: the newest commit alone does not hold req-a.
    let recent = mirror
        .find_trailer("main", "Tug-Request", &["req-a", "req-b"], 1)
        .unwrap();
    assert_eq!(recent.keys().collect::<Vec<_>>(), ["req-b"]);
    assert!(mirror.find_trailer("main", "bad key", &["x"], 10).is_err());
    assert!(
        mirror
            .find_trailer("no-such-branch", "Tug-Request", &["req-a"], 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn editing_one_file_among_two_thousand_directories_writes_only_its_path() {
    let mut entries = Vec::new();
    for i in 0..2000 {
        for env in ["dev", "prod"] {
            entries.push(Entry::file(
                &format!("apps/svc-{i:04}/{env}/kustomization.yaml"),
                format!("newTag: \"{i}\"\n"),
            ));
        }
    }
    let remote = BareRepo::with_entries(&entries).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let loose_before = count_loose(mirror.path());
    let packs_before = pack_files(mirror.path());

    let change = SetLine::new(
        "apps/svc-1234/prod/kustomization.yaml",
        "newTag",
        "\"x\"",
        "req-big",
    );
    let report = land(&mirror, "main", &[&change], &options()).unwrap();

    // One blob, the four trees on the path (root, apps, svc-1234, prod) and the commit, in one
    // pack and nowhere else.
    assert_eq!(report.objects_written, 6);
    assert_eq!(count_loose(mirror.path()), loose_before);
    let packs = new_packs(mirror.path(), &packs_before);
    assert_eq!(packs.len(), 1, "{packs:?}");
    assert_eq!(verify_pack(&packs[0]).len(), 6);
    let diff = remote
        .git(&["diff", "--name-only", "main~1", "main"])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&diff),
        "apps/svc-1234/prod/kustomization.yaml\n"
    );
    remote.git(&["fsck", "--strict", "--no-progress"]).unwrap();
}

#[test]
fn a_push_refused_by_a_hook_is_a_permanent_error() {
    let remote = manifests();
    let hook = remote.path().join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'branch is frozen' >&2\nexit 1\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&hook).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let change = SetLine::new(KUSTOMIZATION, "newTag", "\"4.0.0\"", "req-frozen");
    let error = land(&mirror, "main", &[&change], &options()).unwrap_err();
    assert!(matches!(error, GitError::PushRejected { .. }), "{error:?}");
    assert!(!error.is_transient());
    assert!(error.to_string().contains("branch is frozen"), "{error}");
}

#[test]
fn an_unreachable_remote_is_a_transient_error() {
    let data = Scratch::new().unwrap();
    let port = tug_testkit::free_port().unwrap();
    let error = Mirror::open(
        data.path(),
        Remote::new(format!("git://127.0.0.1:{port}/x.git"), Auth::None),
        MirrorOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(error, GitError::Unreachable { .. }), "{error:?}");
    assert!(error.is_transient());
}

#[test]
fn sha256_repositories_are_refused_clearly() {
    let scratch = Scratch::new().unwrap();
    let path = scratch.join("sha256.git");
    tug_testkit::run_git(
        None,
        &[
            "init",
            "--quiet",
            "--bare",
            "--object-format=sha256",
            path.to_str().unwrap(),
        ],
    )
    .unwrap();
    let data = Scratch::new().unwrap();
    let error = Mirror::open(
        data.path(),
        Remote::new(format!("file://{}", path.display()), Auth::None),
        MirrorOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(error, GitError::UnsupportedRepository { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("sha256"), "{error}");
}

#[test]
fn a_url_with_a_password_is_refused_without_repeating_it() {
    let data = Scratch::new().unwrap();
    let error = Mirror::open(
        data.path(),
        Remote::new(
            "https://bot:hunter2-token@git.example.invalid/org/manifests.git",
            Auth::None,
        ),
        MirrorOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(error, GitError::InvalidRemote { .. }));
    assert!(!error.to_string().contains("hunter2-token"), "{error}");
    assert!(!format!("{error:?}").contains("hunter2-token"), "{error:?}");
}

/// Options whose push hook (`may_push`, asked right before every push) first lets a person
/// push a commit to README.md when the push's number (from 1) is in `moved_before`: that push
/// then loses its race.
fn person_pushes_before(
    remote: &std::sync::Arc<BareRepo>,
    moved_before: impl Fn(u32) -> bool + Send + Sync + 'static,
) -> (
    tug_git::LandOptions,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let pushes = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let people = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut opts = options();
    let (remote, made) = (remote.clone(), people.clone());
    opts.may_push = Some(std::sync::Arc::new(move || {
        let push = pushes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if moved_before(push) {
            let sha = remote
                .human_commit(
                    "main",
                    "README.md",
                    |old| [old.unwrap_or_default(), format!("edit {push}\n").as_bytes()].concat(),
                    &format!("person's edit before push {push}"),
                )
                .unwrap();
            made.lock().unwrap().push(sha);
        }
        true
    }));
    (opts, people)
}

fn requests(n: usize) -> Vec<SetLine> {
    (0..n)
        .map(|i| {
            SetLine::new(
                KUSTOMIZATION,
                "newTag",
                &format!("\"2.0.{i}\""),
                &format!("req-{i}"),
            )
        })
        .collect()
}

#[test]
fn a_batch_that_keeps_losing_its_race_lands_in_smaller_parts_in_order() {
    let remote = std::sync::Arc::new(manifests());
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let base = remote.tip("main").unwrap().unwrap();
    // The branch moves before each of the first three pushes.
    let (opts, people) = person_pushes_before(&remote, |push| push <= 3);
    let changes = requests(8);
    let refs: Vec<&dyn tug_git::Change> = changes.iter().map(|c| c as _).collect();

    let report = land(&mirror, "main", &refs, &opts).unwrap();

    assert!(report.deferred.is_none(), "{:?}", report.deferred);
    assert_eq!(report.results.len(), 8);
    // Pushes of 8 and 8 commits lose; the third is a quarter of the batch (2) and loses too,
    // the fourth is one commit and lands; then the parts double: 2, 4, and the last one.
    assert_eq!((report.attempts, report.landed_pushes), (7, 4));
    let ours: Vec<String> = report
        .results
        .iter()
        .map(|r| committed(r).to_hex())
        .collect();
    let log = remote.log("main").unwrap();
    assert!(
        log.iter().all(|e| e.parents.len() <= 1),
        "history stays linear"
    );
    let newest_first: Vec<String> = ours.iter().rev().cloned().collect();
    assert_eq!(
        log[..8]
            .iter()
            .map(|e| e.commit.clone())
            .collect::<Vec<_>>(),
        newest_first,
        "the batch's commits, in request order, on top"
    );
    let people = people.lock().unwrap().clone();
    assert_eq!(people.len(), 3);
    assert_eq!(
        log[8..11]
            .iter()
            .map(|e| e.commit.clone())
            .collect::<Vec<_>>(),
        people.iter().rev().cloned().collect::<Vec<_>>(),
        "every commit the person pushed is kept"
    );
    assert_eq!(log[11].commit, base);
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(content.contains("newTag: \"2.0.7\""), "{content}");
    assert_eq!(mirror.branch_tip("main").unwrap(), report.tip);
}

#[test]
fn a_part_that_landed_is_reported_when_the_rest_stays_contended() {
    let remote = std::sync::Arc::new(manifests());
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    // Only the third push gets through; every other push finds the branch moved.
    let (mut opts, _people) = person_pushes_before(&remote, |push| push != 3);
    opts.max_attempts = 3;
    let changes = requests(8);
    let refs: Vec<&dyn tug_git::Change> = changes.iter().map(|c| c as _).collect();

    let report = land(&mirror, "main", &refs, &opts).unwrap();

    // Two lost races, then a quarter of the batch (2 commits) lands; three more lost races in
    // a row give up on the other six.
    assert_eq!(report.results.len(), 2);
    assert!(
        matches!(
            report.deferred,
            Some(GitError::BranchContended { attempts: 3, .. })
        ),
        "{:?}",
        report.deferred
    );
    assert_eq!((report.attempts, report.landed_pushes), (6, 1));
    let tip = committed(&report.results[1]);
    let log = remote.log("main").unwrap();
    assert!(
        log.iter().any(|e| e.commit == tip.to_hex()),
        "the landed part is in the remote's history"
    );
    assert_eq!(
        log.iter()
            .filter(|e| e.message.contains("Tug-Request: req-"))
            .count(),
        2,
        "nothing of the deferred rest was pushed"
    );
}

/// Where the mirror of `remote` lives under `data`.
fn mirror_dir(data: &std::path::Path) -> std::path::PathBuf {
    data.join("mirrors")
        .read_dir()
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("HEAD").exists())
        .unwrap()
}

#[test]
fn a_fetch_whose_local_ref_is_held_by_another_process_tries_again() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let lock = std::sync::Arc::new(std::sync::Mutex::new(None::<std::path::PathBuf>));
    let options = {
        let (fetches, lock) = (fetches.clone(), lock.clone());
        MirrorOptions {
            // The process holding the ref lets go before the second fetch.
            observer: Some(std::sync::Arc::new(move |argv: &[std::ffi::OsString]| {
                if argv.iter().any(|a| a == "fetch")
                    && fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
                    && let Some(path) = lock.lock().unwrap().take()
                {
                    std::fs::remove_file(path).unwrap();
                }
            })),
            ..MirrorOptions::default()
        }
    };
    let mirror = open(data.path(), &remote.file_url(), options);
    fetches.store(0, std::sync::atomic::Ordering::SeqCst);
    let new_tip = remote
        .human_commit("main", "README.md", |_| b"moved\n".to_vec(), "move main")
        .unwrap();
    // Another process (a git child of a killed server, say) holds the mirror's ref lock.
    let held = mirror_dir(data.path()).join("refs/heads/main.lock");
    std::fs::write(&held, "").unwrap();
    *lock.lock().unwrap() = Some(held.clone());

    let tip = mirror.fetch_branch("main").unwrap();

    assert_eq!(tip.map(|t| t.to_hex()), Some(new_tip));
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(!held.exists());

    // A lock that never goes away is an error worth retrying later, not a broken request.
    std::fs::write(&held, "").unwrap();
    remote
        .human_commit(
            "main",
            "README.md",
            |_| b"moved again\n".to_vec(),
            "move main again",
        )
        .unwrap();
    let error = mirror.fetch_branch("main").unwrap_err();
    assert!(matches!(error, GitError::RefRace { .. }), "{error}");
    assert!(error.is_transient());
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2 + 5);
}

/// A change that counts how often it is applied (from any thread).
struct Counted {
    inner: SetLine,
    applied: std::sync::atomic::AtomicU32,
}

impl Counted {
    fn batch(from: usize, n: usize) -> Vec<Counted> {
        (from..from + n)
            .map(|i| Counted {
                inner: SetLine::new(
                    KUSTOMIZATION,
                    "newTag",
                    &format!("\"5.0.{i}\""),
                    &format!("req-{i}"),
                ),
                applied: std::sync::atomic::AtomicU32::new(0),
            })
            .collect()
    }

    fn applied(changes: &[Counted]) -> Vec<u32> {
        changes
            .iter()
            .map(|c| c.applied.load(std::sync::atomic::Ordering::SeqCst))
            .collect()
    }
}

impl tug_git::Change for Counted {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError> {
        self.applied
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.apply(files)
    }

    fn commit_meta(&self) -> tug_git::CommitMeta {
        self.inner.commit_meta()
    }
}

fn refs(changes: &[Counted]) -> Vec<&dyn tug_git::Change> {
    changes.iter().map(|c| c as &dyn tug_git::Change).collect()
}

/// The subjects of `main`'s first `n` commits, oldest first.
fn subjects(remote: &BareRepo, n: usize) -> Vec<String> {
    let log = remote.log("main").unwrap();
    assert!(
        log.iter().all(|entry| entry.parents.len() <= 1),
        "history stays linear"
    );
    log[..n].iter().rev().map(|e| e.subject.clone()).collect()
}

#[test]
fn a_batch_prepared_while_the_one_before_it_pushes_goes_out_as_built_in_one_push() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let argv = ArgvLog::default();
    let mirror = std::sync::Arc::new(open(data.path(), &remote.file_url(), argv.options()));
    let first = Counted::batch(0, 3);
    let second = std::sync::Arc::new(Counted::batch(3, 3));
    let prepared = std::sync::Arc::new(std::sync::Mutex::new(None));
    let mut opts = options();
    {
        // Right before the first batch's push: build the second on the commit it pushes,
        // which neither the remote nor the mirror's branch has yet.
        let (mirror, second, prepared) = (mirror.clone(), second.clone(), prepared.clone());
        opts.on_push = Some(std::sync::Arc::new(move |pushing: ObjectId| {
            let built = tug_git::prepare(&mirror, "main", pushing, &refs(&second), &options());
            *prepared.lock().unwrap() = Some(built.unwrap());
        }));
    }

    let report = land(&mirror, "main", &refs(&first), &opts).unwrap();
    let first_tip = report.tip.unwrap();
    let prepared = prepared.lock().unwrap().take().unwrap();
    assert_eq!(
        prepared.base(),
        first_tip,
        "built on the commit being pushed"
    );
    let pushes = argv.count("push");
    let applied_before = Counted::applied(&second);
    let report =
        tug_git::land_prepared(&mirror, "main", &refs(&second), &options(), Some(prepared))
            .unwrap();

    assert_eq!(report.attempts, 1);
    assert_eq!(
        Counted::applied(&second),
        applied_before,
        "not applied again"
    );
    assert_eq!(
        argv.count("push"),
        pushes + 1,
        "one push for the prepared batch"
    );
    let commits: Vec<ObjectId> = report.results.iter().map(committed).collect();
    assert_eq!(report.tip, commits.last().copied());
    assert_eq!(remote.tip("main").unwrap(), Some(commits[2].to_hex()));
    assert_eq!(mirror.branch_tip("main").unwrap(), report.tip);
    let log = remote.log("main").unwrap();
    assert_eq!(log[2].parents, vec![first_tip.to_hex()]);
    assert_eq!(
        subjects(&remote, 6),
        (0..6)
            .map(|i| format!("set newTag to \"5.0.{i}\""))
            .collect::<Vec<_>>()
    );
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(
        content.contains("newTag: \"5.0.5\"  # release tag"),
        "{content}"
    );
    remote.git(&["fsck", "--strict", "--no-progress"]).unwrap();
}

/// The packs in the mirror under `data`.
fn packs(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    mirror_dir(data)
        .join("objects/pack")
        .read_dir()
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "pack"))
        .collect()
}

#[test]
fn a_batch_built_in_parts_as_its_changes_arrive_goes_out_as_one_pack_in_one_push() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let argv = ArgvLog::default();
    let mirror = open(data.path(), &remote.file_url(), argv.options());
    let tip = mirror.branch_tip("main").unwrap().unwrap();
    let changes = Counted::batch(0, 5);
    let packs_before = packs(data.path());

    // Every change edits the same file: the second part reads what the first wrote, which
    // is not on disk yet.
    let mut building = tug_git::Building::new("main", tip).unwrap();
    building
        .add(&mirror, &refs(&changes[..2]), &options())
        .unwrap();
    assert_eq!(packs(data.path()), packs_before, "nothing written per part");
    building
        .add(&mirror, &refs(&changes[2..]), &options())
        .unwrap();
    assert_eq!(building.len(), 5);
    let prepared = building.finish(&mirror).unwrap();
    assert_eq!(prepared.base(), tip);
    assert_eq!(packs(data.path()).len(), packs_before.len() + 1, "one pack");
    let pushes = argv.count("push");
    let applied_before = Counted::applied(&changes);
    let report =
        tug_git::land_prepared(&mirror, "main", &refs(&changes), &options(), Some(prepared))
            .unwrap();

    assert_eq!(report.attempts, 1);
    assert_eq!(argv.count("push"), pushes + 1, "one push");
    assert_eq!(
        Counted::applied(&changes),
        applied_before,
        "not applied again"
    );
    let commits: Vec<ObjectId> = report.results.iter().map(committed).collect();
    assert_eq!(remote.tip("main").unwrap(), Some(commits[4].to_hex()));
    let log = remote.log("main").unwrap();
    assert_eq!(log[4].parents, vec![tip.to_hex()]);
    assert_eq!(
        subjects(&remote, 5),
        (0..5)
            .map(|i| format!("set newTag to \"5.0.{i}\""))
            .collect::<Vec<_>>()
    );
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(
        content.contains("newTag: \"5.0.4\"  # release tag"),
        "{content}"
    );
    remote.git(&["fsck", "--strict", "--no-progress"]).unwrap();
}

#[test]
fn a_batch_prepared_on_a_commit_that_is_not_the_tip_is_built_again_on_the_tip() {
    let remote = manifests();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let tip = mirror.branch_tip("main").unwrap().unwrap();
    let late = Counted::batch(0, 2);
    let prepared = tug_git::prepare(&mirror, "main", tip, &refs(&late), &options()).unwrap();
    let pack = prepared.pack().unwrap().to_owned();
    assert!(pack.exists(), "{}", pack.display());
    // Another batch lands first: the prepared one was built on a commit that is no longer
    // the tip.
    let first = Counted::batch(10, 2);
    let landed = land(&mirror, "main", &refs(&first), &options()).unwrap();
    let applied_before = Counted::applied(&late);

    let report =
        tug_git::land_prepared(&mirror, "main", &refs(&late), &options(), Some(prepared)).unwrap();

    assert_eq!(report.attempts, 1);
    let log = remote.log("main").unwrap();
    assert_eq!(log[1].parents, vec![landed.tip.unwrap().to_hex()]);
    assert_eq!(
        subjects(&remote, 4),
        [10, 11, 0, 1]
            .iter()
            .map(|i| format!("set newTag to \"5.0.{i}\""))
            .collect::<Vec<_>>()
    );
    assert!(
        !pack.exists(),
        "the pack built on the old tip is gone: {}",
        pack.display()
    );
    // Both read the file the other batch wrote: applied again, not replayed.
    let applied = Counted::applied(&late);
    assert!(
        applied
            .iter()
            .zip(&applied_before)
            .all(|(now, then)| now > then),
        "{applied:?} after {applied_before:?}"
    );
}

#[test]
fn a_prepared_batch_whose_push_loses_its_race_is_built_again_and_keeps_the_other_commit() {
    let remote = std::sync::Arc::new(manifests());
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    let tip = mirror.branch_tip("main").unwrap().unwrap();
    let changes = Counted::batch(0, 2);
    let prepared = tug_git::prepare(&mirror, "main", tip, &refs(&changes), &options()).unwrap();
    let pack = prepared.pack().unwrap().to_owned();
    // A person pushes after the batch was prepared: the mirror does not know yet.
    let (opts, people) = person_pushes_before(&remote, |push| push == 1);

    let report =
        tug_git::land_prepared(&mirror, "main", &refs(&changes), &opts, Some(prepared)).unwrap();

    assert_eq!(
        report.attempts, 2,
        "the prepared push lost, the rebuilt one landed"
    );
    assert!(!pack.exists(), "the lost push's pack is gone");
    let person = people.lock().unwrap()[0].clone();
    let log = remote.log("main").unwrap();
    assert_eq!(log[1].parents, vec![person.clone()]);
    assert_eq!(log[2].commit, person);
    let content =
        String::from_utf8(remote.read_file("main", KUSTOMIZATION).unwrap().unwrap()).unwrap();
    assert!(
        content.contains("newTag: \"5.0.1\"  # release tag"),
        "{content}"
    );
    let readme =
        String::from_utf8(remote.read_file("main", "README.md").unwrap().unwrap()).unwrap();
    assert!(readme.contains("edit 1"), "{readme}");
}
