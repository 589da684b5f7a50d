//! A mirror's packs stay few however many batches land: every batch adds a pack, and
//! `Mirror::maintain` rolls the small ones up while landing goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tug_git::{MaintenanceDue, MirrorOptions, land};
use tug_testkit::{BareRepo, Scratch};

fn land_one(mirror: &tug_git::Mirror, n: usize) {
    let change = SetLine::new(
        KUSTOMIZATION,
        "newTag",
        &format!("\"1.{n}.0\""),
        &format!("req-{n}"),
    );
    let report = land(mirror, "main", &[&change], &options()).unwrap();
    assert!(report.pushed, "batch {n} landed");
}

/// A remote with one kustomization and a mirror of it that nothing has landed on yet.
fn fresh_mirror() -> (BareRepo, Scratch, tug_git::Mirror) {
    let remote = BareRepo::with_files(&[(KUSTOMIZATION, MANIFEST.as_bytes())]).unwrap();
    let data = Scratch::new().unwrap();
    let mirror = open(data.path(), &remote.file_url(), MirrorOptions::default());
    (remote, data, mirror)
}

#[test]
fn many_batches_leave_few_packs_and_every_object_readable() {
    let (remote, data, mirror) = fresh_mirror();
    let packs_at_start = mirror.pack_count().unwrap();
    assert!(!mirror.needs_maintenance());
    assert_eq!(mirror.maintain().unwrap(), None, "nothing to do yet");

    // One pack per landed batch: the mirror needs maintenance after enough of them.
    let mut n = 0;
    while !mirror.needs_maintenance() {
        n += 1;
        land_one(&mirror, n);
        assert!(n < 100, "no maintenance needed after {n} batches");
    }
    assert!(mirror.pack_count().unwrap() >= packs_at_start + n);

    let done = mirror.maintain().unwrap().expect("a repack");
    assert!(done.packs_before > done.packs_after, "{done:?}");
    assert!(done.packs_after <= 3, "{done:?}");
    assert!(!mirror.needs_maintenance());
    assert!(
        data.path()
            .join("mirrors")
            .read_dir()
            .unwrap()
            .filter_map(Result::ok)
            .any(|m| m.path().join("objects/pack/multi-pack-index").exists()),
        "readers find objects through one multi-pack index"
    );

    // Landing goes on on the repacked mirror (its long-running object reader included), and
    // the repacked mirror holds every object of its history.
    for more in 1..=5 {
        land_one(&mirror, n + more);
    }
    let mirror_dir = data
        .path()
        .join("mirrors")
        .read_dir()
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("HEAD").exists())
        .unwrap();
    let fsck = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&mirror_dir)
        .args(["fsck", "--no-progress", "--connectivity-only"])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    assert_eq!(
        remote.tip("main").unwrap(),
        mirror.branch_tip("main").unwrap().map(|c| c.to_hex())
    );
    remote.git(&["fsck", "--strict", "--no-progress"]).unwrap();

    // The next repack is due once 16 more packs than the last one kept are there, not when
    // the total passes 16 again: the packs a geometric repack keeps do not count.
    let mut since = 5;
    while !mirror.needs_maintenance() {
        since += 1;
        land_one(&mirror, n + since);
        assert!(
            since < 100,
            "no maintenance needed after {since} more batches"
        );
    }
    assert!(since > 16, "due again after {since} batches");
    assert!(mirror.pack_count().unwrap() > done.packs_after + 16);
}

#[test]
fn git_never_starts_a_gc_of_its_own_in_a_mirror() {
    let remote = BareRepo::with_files(&[(KUSTOMIZATION, MANIFEST.as_bytes())]).unwrap();
    let data = Scratch::new().unwrap();
    let argv = ArgvLog::default();
    let mirror = open(data.path(), &remote.file_url(), argv.options());
    for n in 1..=3 {
        land_one(&mirror, n);
        mirror.fetch_branch("main").unwrap();
    }
    // Every git command tug starts carries the settings that keep `gc --auto` and
    // `maintenance --auto` from running after a fetch or a push.
    let commands = argv.commands();
    assert!(commands.len() >= 6, "{commands:?}");
    for args in commands {
        assert!(
            args.windows(2).any(|w| w == ["-c", "gc.auto=0"])
                && args
                    .windows(2)
                    .any(|w| w == ["-c", "maintenance.auto=false"]),
            "{args:?}"
        );
    }
}

#[test]
fn a_roll_up_waits_for_a_quiet_moment_until_it_is_overdue() {
    let (_remote, _data, mirror) = fresh_mirror();
    let packs_at_start = mirror.pack_count().unwrap();
    assert_eq!(mirror.maintenance_due(), MaintenanceDue::No);

    // Lands one batch after another while the roll-up is `due`; the batches landed so far.
    let land_while = |due: MaintenanceDue, mut n: usize| {
        while mirror.maintenance_due() == due {
            n += 1;
            land_one(&mirror, n);
            assert!(n < 200, "still {due:?} after {n} batches");
        }
        n
    };
    let n = land_while(MaintenanceDue::No, 0);
    assert_eq!(mirror.maintenance_due(), MaintenanceDue::WhenIdle);
    // Never rolled up: counted from zero, due past 16 packs.
    assert_eq!(mirror.pack_count().unwrap(), 17);
    assert_eq!(packs_at_start + n, 17);

    // A steady load never leaves the writer idle: past four times the threshold the roll-up
    // is due at once.
    land_while(MaintenanceDue::WhenIdle, n);
    assert_eq!(mirror.maintenance_due(), MaintenanceDue::Now);
    assert_eq!(mirror.pack_count().unwrap(), 65);

    let done = mirror.maintain().unwrap().expect("a roll-up");
    assert!(done.packs_after <= 3, "{done:?}");
    assert_eq!(mirror.maintenance_due(), MaintenanceDue::No);
}
