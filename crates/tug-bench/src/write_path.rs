//! The write-path benchmark: what one image-tag bump costs, over smart HTTP on loopback, for
//! plain git and for tug, side by side on the same fixtures in the same run.
//!
//! * floor — `git push` of one prepared one-line commit from a clone: no tool can land a change
//!   on the remote for less.
//! * naive — the per-request pipeline of a script-based deploy server in a work-tree clone:
//!   fetch, `reset --hard`, sed, add, commit, push.
//! * tug — `tug_git::land` of one `TaskChange` on a mirror opened once, as a writer of
//!   `tug server` runs it per request.
//! * edit engine — `tug_edit::apply` of kustomize image edits on one thread.
//!
//! Each scenario pushes to its own fresh copy of the fixture, so all start from the same state
//! and none sees another's commits; rounds run round-robin (rotating the order) so that all three
//! see the same machine load.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tug_deploy::TaskChange;
use tug_edit::{Edit, ImageSpec};
use tug_git::{Auth, Identity, LandOptions, LandResult, Mirror, MirrorOptions, Remote};
use tug_spec::{KustomizeUpdate, PathUpdate, PathsAt};
use tug_testkit::{Scratch, run_git};

use crate::fixture::{BRANCH, Fixture, ImageBump, path_str};
use crate::servers::{ServedRepo, SmartHttpServer};
use crate::stats::{Summary, load_average, median_ms, ms, summarize, thousands, thread_cpu_time};
use crate::targets::{FLOOR_ALLOWANCE_MS, FLOOR_FACTOR};
use crate::worktree::WorkTree;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Directory holding `<name>.git` for every fixture.
    pub fixtures_dir: PathBuf,
    /// Fixture names, in the order they are run; the first is the "small" one of the
    /// large/small ratio, the last the "large" one.
    pub fixtures: Vec<String>,
    /// Measured requests per scenario and fixture.
    pub requests: usize,
    /// How long the edit engine runs.
    pub edit_duration: Duration,
    /// Where per-request timings go as TSV files, when set.
    pub raw_dir: Option<PathBuf>,
}

/// The targets the release notes state.
const MAX_SIZE_RATIO: f64 = 1.2;
const MIN_EDITS_PER_SECOND: f64 = 10_000.0;

#[derive(Debug, Default)]
struct NaiveSamples {
    fetch: Vec<Duration>,
    reset: Vec<Duration>,
    edit: Vec<Duration>,
    add: Vec<Duration>,
    commit: Vec<Duration>,
    push: Vec<Duration>,
    total: Vec<Duration>,
}

#[derive(Debug, Default)]
struct TugSamples {
    fetch: Vec<Duration>,
    apply: Vec<Duration>,
    push: Vec<Duration>,
    total: Vec<Duration>,
    attempts: Vec<u32>,
}

/// One fixture's results.
#[derive(Debug)]
pub(crate) struct FixtureResult {
    fixture: Fixture,
    floor: Vec<Duration>,
    naive: NaiveSamples,
    tug: TugSamples,
    naive_clone: Duration,
    mirror_clone: Duration,
}

/// The edit engine's rate on one thread.
#[derive(Debug)]
pub(crate) struct EditRate {
    file: String,
    bytes: usize,
    edits: u64,
    wall: Duration,
    cpu: Duration,
    cpu_source: &'static str,
}

impl EditRate {
    fn per_wall_second(&self) -> f64 {
        self.edits as f64 / self.wall.as_secs_f64()
    }

    fn per_cpu_second(&self) -> f64 {
        self.edits as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

/// Everything one run measured.
#[derive(Debug)]
pub(crate) struct Report {
    server: String,
    requests: usize,
    load_before: String,
    load_after: String,
    git_version: String,
    cpus: usize,
    fixtures: Vec<FixtureResult>,
    edits: EditRate,
}

pub(crate) fn run(config: &Config) -> Result<Report> {
    if config.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let fixtures = config
        .fixtures
        .iter()
        .map(|name| Fixture::load(&config.fixtures_dir, name))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = fixtures.first() else {
        bail!("no fixture to run");
    };
    let load_before = load_average();
    let git_version = String::from_utf8_lossy(&run_git(None, &["--version"])?)
        .trim()
        .to_owned();
    let server = SmartHttpServer::start()?;
    let mut results = Vec::new();
    for fixture in &fixtures {
        eprintln!(
            "{}: {} service dirs, {} commits, {} files; preparing clones",
            fixture.name, fixture.service_dirs, fixture.commits, fixture.files
        );
        let result = run_fixture(&server, fixture, config.requests)?;
        if let Some(dir) = &config.raw_dir {
            write_raw(dir, &result)?;
        }
        results.push(result);
    }
    eprintln!("edit engine: {:?} on one thread", config.edit_duration);
    let edits = run_edit_engine(first, config.edit_duration)?;
    Ok(Report {
        server: server.describe(),
        requests: config.requests,
        load_before,
        load_after: load_average(),
        git_version,
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        fixtures: results,
        edits,
    })
}

#[derive(Clone, Copy)]
enum Scenario {
    Floor,
    Naive,
    Tug,
}

const SCENARIOS: [Scenario; 3] = [Scenario::Floor, Scenario::Naive, Scenario::Tug];

struct Floor {
    repo: ServedRepo,
    clone: WorkTree,
    samples: Vec<Duration>,
}

struct Naive {
    repo: ServedRepo,
    clone: WorkTree,
    samples: NaiveSamples,
}

struct Tug {
    repo: ServedRepo,
    mirror: Mirror,
    _data: Scratch,
    opts: LandOptions,
    samples: TugSamples,
}

fn run_fixture(
    server: &SmartHttpServer,
    fixture: &Fixture,
    requests: usize,
) -> Result<FixtureResult> {
    // Request 0 warms every scenario up (first connection, page cache of the copy) and is not
    // counted.
    let bumps = fixture.image_bumps(0..=requests)?;
    let prefix = &fixture.name;

    let repo = server.publish(fixture, &format!("{prefix}-floor"))?;
    let (clone, _) = WorkTree::clone(&repo.url)?;
    let mut floor = Floor {
        repo,
        clone,
        samples: Vec::new(),
    };

    let repo = server.publish(fixture, &format!("{prefix}-naive"))?;
    let (clone, naive_clone) = WorkTree::clone(&repo.url)?;
    let mut naive = Naive {
        repo,
        clone,
        samples: NaiveSamples::default(),
    };

    let repo = server.publish(fixture, &format!("{prefix}-tug"))?;
    let data = Scratch::new().context("create tug's data directory")?;
    let started = Instant::now();
    let mirror = Mirror::open(
        data.path(),
        Remote::new(&repo.url, Auth::None),
        MirrorOptions::default(),
    )
    .with_context(|| format!("open a mirror of {}", repo.url))?;
    let mirror_clone = started.elapsed();
    let mut tug = Tug {
        repo,
        mirror,
        _data: data,
        opts: LandOptions::new(Identity::new("tug", "tug@example.invalid")),
        samples: TugSamples::default(),
    };

    eprintln!(
        "{}: naive clone {:.1} s, tug mirror clone {:.1} s; running {requests} rounds",
        fixture.name,
        naive_clone.as_secs_f64(),
        mirror_clone.as_secs_f64()
    );
    for (round, bump) in bumps.iter().enumerate() {
        let counted = round > 0;
        for k in 0..SCENARIOS.len() {
            match SCENARIOS[(round + k) % SCENARIOS.len()] {
                Scenario::Floor => floor_round(&mut floor, bump, round, counted)?,
                Scenario::Naive => naive_round(&mut naive, bump, round, counted)?,
                Scenario::Tug => tug_round(&mut tug, fixture, bump, round, counted)?,
            }
        }
    }

    let last = bumps.last().context("no request")?;
    let rounds = bumps.len();
    check_landed(fixture, &floor.repo, last, &floor_tag(rounds - 1), rounds)?;
    check_landed(fixture, &naive.repo, last, &naive_tag(rounds - 1), rounds)?;
    check_landed(fixture, &tug.repo, last, &tug_tag(rounds - 1), rounds)?;
    for repo in [&floor.repo, &naive.repo, &tug.repo] {
        server.unpublish(repo)?;
    }
    Ok(FixtureResult {
        fixture: fixture.clone(),
        floor: floor.samples,
        naive: naive.samples,
        tug: tug.samples,
        naive_clone,
        mirror_clone,
    })
}

fn floor_tag(round: usize) -> String {
    format!("5.0.{round}")
}

fn naive_tag(round: usize) -> String {
    format!("2.0.{round}")
}

fn tug_tag(round: usize) -> String {
    format!("3.0.{round}")
}

fn floor_round(floor: &mut Floor, bump: &ImageBump, round: usize, counted: bool) -> Result<()> {
    floor
        .clone
        .sed_image_tag(&bump.file, &bump.image, &floor_tag(round))?;
    floor.clone.git(&[
        "commit",
        "--quiet",
        "-am",
        &format!("deploy({}): bump", bump.dir),
    ])?;
    let push = floor
        .clone
        .git(&["push", "--quiet", "origin", "HEAD:main"])?;
    if counted {
        floor.samples.push(push);
    }
    Ok(())
}

fn naive_round(naive: &mut Naive, bump: &ImageBump, round: usize, counted: bool) -> Result<()> {
    let tag = naive_tag(round);
    let clone = &naive.clone;
    let started = Instant::now();
    let fetch = clone.git(&["fetch", "--quiet", "origin"])?;
    let reset = clone.git(&["reset", "--quiet", "--hard", "origin/main"])?;
    let edit = clone.sed_image_tag(&bump.file, &bump.image, &tag)?;
    let add = clone.git(&["add", &bump.file])?;
    let commit = clone.git(&[
        "commit",
        "--quiet",
        "-m",
        &format!("deploy({}): bump to {tag}", bump.dir),
    ])?;
    let push = clone.git(&["push", "--quiet", "origin", "HEAD:main"])?;
    let total = started.elapsed();
    if counted {
        let s = &mut naive.samples;
        s.fetch.push(fetch);
        s.reset.push(reset);
        s.edit.push(edit);
        s.add.push(add);
        s.commit.push(commit);
        s.push.push(push);
        s.total.push(total);
    }
    Ok(())
}

/// The change a deploy request for one image bump becomes in a writer of `tug server`.
pub(crate) fn deploy_change(request_id: &str, bump: &ImageBump, tag: &str) -> TaskChange {
    let mut change = TaskChange::deploy("", &Identity::new("CI", "ci@example.invalid"), None)
        .for_request(request_id);
    change.redeploy_value = request_id.to_owned();
    change.push_segment(PathsAt {
        field: "paths".to_owned(),
        paths: vec![PathUpdate {
            path: bump.dir.clone(),
            kustomize: Some(KustomizeUpdate {
                images: vec![ImageSpec {
                    name: bump.image.clone(),
                    new_tag: Some(tag.to_owned()),
                    ..ImageSpec::default()
                }],
            }),
            ..PathUpdate::default()
        }],
    });
    change
}

fn tug_round(
    tug: &mut Tug,
    fixture: &Fixture,
    bump: &ImageBump,
    round: usize,
    counted: bool,
) -> Result<()> {
    let change = deploy_change(
        &format!("bench-{}-{round}", fixture.name),
        bump,
        &tug_tag(round),
    );
    let started = Instant::now();
    let report = tug_git::land(&tug.mirror, BRANCH, &[&change], &tug.opts)
        .with_context(|| format!("land request {round} on {}", tug.repo.url))?;
    let total = started.elapsed();
    match report.results.as_slice() {
        [LandResult::Committed { .. }] if report.pushed => {}
        other => bail!("request {round} did not land a commit: {other:?}"),
    }
    if counted {
        let s = &mut tug.samples;
        s.fetch.push(report.fetch_time);
        s.apply.push(report.apply_time);
        s.push.push(report.push_time);
        s.total.push(total);
        s.attempts.push(report.attempts);
    }
    Ok(())
}

/// Every request of a scenario became one commit on the served copy, and the last one set the
/// tag in place (the line keeps its quotes and comment).
fn check_landed(
    fixture: &Fixture,
    repo: &ServedRepo,
    last: &ImageBump,
    tag: &str,
    rounds: usize,
) -> Result<()> {
    let git_dir = path_str(&repo.path)?;
    let count: usize = String::from_utf8_lossy(&run_git(
        None,
        &["--git-dir", git_dir, "rev-list", "--count", BRANCH],
    )?)
    .trim()
    .parse()
    .with_context(|| format!("count commits in {}", repo.path.display()))?;
    if count != fixture.commits + rounds {
        bail!(
            "{} has {count} commits, expected {} + {rounds}",
            repo.url,
            fixture.commits
        );
    }
    let text = run_git(
        None,
        &[
            "--git-dir",
            git_dir,
            "show",
            &format!("{BRANCH}:{}", last.file),
        ],
    )?;
    let text = String::from_utf8_lossy(&text);
    let expected = format!("newTag: \"{tag}\"  # release tag");
    if !text.contains(&expected) {
        bail!(
            "{} of {} does not hold `{expected}`:\n{text}",
            last.file,
            repo.url
        );
    }
    Ok(())
}

fn run_edit_engine(fixture: &Fixture, duration: Duration) -> Result<EditRate> {
    let (bump, input) = fixture.kustomization()?;
    // Built beforehand so the loop measures the edit alone; tags change on every edit.
    let edits: Vec<Edit> = (0..1000)
        .map(|k| {
            Edit::KustomizeImage(ImageSpec {
                name: bump.image.clone(),
                new_name: None,
                new_tag: Some(format!("4.{}.{}", k / 100, k % 100)),
                digest: None,
            })
        })
        .collect();
    let mut done: u64 = 0;
    let cpu_before = thread_cpu_time()?;
    let started = Instant::now();
    loop {
        for edit in &edits {
            let outcome = tug_edit::apply(&bump.file, &input, edit)
                .with_context(|| format!("edit {}", bump.file))?;
            if !outcome.changed {
                bail!("edit {edit:?} left {} unchanged", bump.file);
            }
            std::hint::black_box(outcome);
        }
        done += edits.len() as u64;
        if started.elapsed() >= duration {
            break;
        }
    }
    let wall = started.elapsed();
    let cpu_after = thread_cpu_time()?;
    Ok(EditRate {
        file: format!("{}:{}", fixture.name, bump.file),
        bytes: input.len(),
        edits: done,
        wall,
        cpu: cpu_after.time.saturating_sub(cpu_before.time),
        cpu_source: cpu_after.source,
    })
}

fn write_raw(dir: &Path, result: &FixtureResult) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let msv = |d: &Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
    let name = &result.fixture.name;
    let mut floor = String::from("i\tpush_ms\n");
    for (i, d) in result.floor.iter().enumerate() {
        let _ = writeln!(floor, "{}\t{}", i + 1, msv(d));
    }
    let n = &result.naive;
    let mut naive = String::from("i\tfetch\treset\tedit\tadd\tcommit\tpush\ttotal\n");
    for i in 0..n.total.len() {
        let _ = writeln!(
            naive,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            i + 1,
            msv(&n.fetch[i]),
            msv(&n.reset[i]),
            msv(&n.edit[i]),
            msv(&n.add[i]),
            msv(&n.commit[i]),
            msv(&n.push[i]),
            msv(&n.total[i])
        );
    }
    let t = &result.tug;
    let mut tug = String::from("i\tfetch\tapply\tpush\ttotal\tattempts\n");
    for i in 0..t.total.len() {
        let _ = writeln!(
            tug,
            "{}\t{}\t{}\t{}\t{}\t{}",
            i + 1,
            msv(&t.fetch[i]),
            msv(&t.apply[i]),
            msv(&t.push[i]),
            msv(&t.total[i]),
            t.attempts[i]
        );
    }
    for (scenario, text) in [("floor", floor), ("naive", naive), ("tug", tug)] {
        let path = dir.join(format!("write-path-{name}-{scenario}.tsv"));
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

fn row(out: &mut String, label: &str, samples: &[Duration]) {
    match summarize(samples) {
        Some(Summary {
            median_ms,
            p95_ms,
            mean_ms,
            ..
        }) => {
            let _ = writeln!(
                out,
                "  {label:<32} {:>9} {:>9} {:>9}",
                ms(median_ms),
                ms(p95_ms),
                ms(mean_ms)
            );
        }
        None => {
            let _ = writeln!(out, "  {label:<32} {:>9}", "-");
        }
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

impl Report {
    /// The table and the targets, as printed for the release notes.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tug write-path benchmark: {} requests per scenario (+1 warm-up, not counted), rounds round-robin",
            self.requests
        );
        let _ = writeln!(out, "server: {}", self.server);
        let _ = writeln!(
            out,
            "{}; {} CPUs; load average (1/5/15 min) at start {}, at end {}",
            self.git_version, self.cpus, self.load_before, self.load_after
        );
        for r in &self.fixtures {
            let f = &r.fixture;
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{}: {} service dirs, {} commits, {} files (naive clone {:.1} s, tug mirror clone {:.1} s, outside timing)",
                f.name,
                f.service_dirs,
                f.commits,
                f.files,
                r.naive_clone.as_secs_f64(),
                r.mirror_clone.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "  {:<32} {:>9} {:>9} {:>9}",
                "ms per request", "median", "p95", "mean"
            );
            row(&mut out, "floor: git push", &r.floor);
            row(&mut out, "naive: whole pipeline", &r.naive.total);
            row(&mut out, "  git fetch", &r.naive.fetch);
            row(&mut out, "  git reset --hard", &r.naive.reset);
            row(&mut out, "  edit (sed)", &r.naive.edit);
            row(&mut out, "  git add", &r.naive.add);
            row(&mut out, "  git commit", &r.naive.commit);
            row(&mut out, "  git push", &r.naive.push);
            row(&mut out, "tug: land", &r.tug.total);
            row(&mut out, "  fetch", &r.tug.fetch);
            row(&mut out, "  apply (edit + objects)", &r.tug.apply);
            row(&mut out, "  push", &r.tug.push);
            let retried = r.tug.attempts.iter().filter(|&&a| a > 1).count();
            if retried > 0 {
                let _ = writeln!(out, "  ({retried} tug requests needed more than one push)");
            }
        }
        let e = &self.edits;
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "edit engine: {} kustomize image edits of {} ({} bytes) in {:.2} s wall, {:.2} s thread CPU ({})",
            thousands(e.edits as f64),
            e.file,
            e.bytes,
            e.wall.as_secs_f64(),
            e.cpu.as_secs_f64(),
            e.cpu_source
        );
        let _ = writeln!(
            out,
            "  {} edits/s by wall clock, {} edits/s by thread CPU time",
            thousands(e.per_wall_second()),
            thousands(e.per_cpu_second())
        );
        out.push_str(&self.render_targets());
        out
    }

    fn render_targets(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(out, "targets (medians):");
        for r in &self.fixtures {
            let floor = median_ms(&r.floor);
            let tug = median_ms(&r.tug.total);
            let budget = FLOOR_FACTOR * floor + FLOOR_ALLOWANCE_MS;
            let ratio = tug / budget;
            let _ = writeln!(
                out,
                "  {:<6} tug / (1.2×floor + 5ms) = {} / (1.2×{} + 5) = {:.2}  {}",
                r.fixture.name,
                ms(tug),
                ms(floor),
                ratio,
                verdict(ratio <= 1.0)
            );
        }
        if let (Some(small), Some(large)) = (self.fixtures.first(), self.fixtures.last())
            && self.fixtures.len() > 1
        {
            let tug_ratio = median_ms(&large.tug.total) / median_ms(&small.tug.total);
            let naive_ratio = median_ms(&large.naive.total) / median_ms(&small.naive.total);
            let floor_ratio = median_ms(&large.floor) / median_ms(&small.floor);
            let _ = writeln!(
                out,
                "  {}/{} ratio ≤ 1.2: tug {:.2}  {}   (naive {:.2}, floor {:.2})",
                large.fixture.name,
                small.fixture.name,
                tug_ratio,
                verdict(tug_ratio <= MAX_SIZE_RATIO),
                naive_ratio,
                floor_ratio
            );
        }
        let own: Vec<String> = self
            .fixtures
            .iter()
            .map(|r| {
                let own: Vec<Duration> = r
                    .tug
                    .total
                    .iter()
                    .zip(&r.tug.push)
                    .map(|(total, push)| total.saturating_sub(*push))
                    .collect();
                format!("{} {} ms", r.fixture.name, ms(median_ms(&own)))
            })
            .collect();
        let _ = writeln!(
            out,
            "  tug's own time per request (land minus its git push): {}",
            own.join(", ")
        );
        let rate = self.edits.per_cpu_second();
        let _ = writeln!(
            out,
            "  edit engine ≥ 10,000 edits/s on one core: {} edits/s (thread CPU; {} by wall clock)  {}",
            thousands(rate),
            thousands(self.edits.per_wall_second()),
            verdict(rate >= MIN_EDITS_PER_SECOND)
        );
        for r in &self.fixtures {
            let _ = writeln!(
                out,
                "  {:<6} naive / tug speed-up: {:.1}×",
                r.fixture.name,
                median_ms(&r.naive.total) / median_ms(&r.tug.total)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn make_fixture(dir: &Path, name: &str, size: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/make-fixture.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(size)
            .arg(dir.join(format!("{name}.git")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-fixture.sh {size}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn every_scenario_lands_every_request_and_the_targets_are_printed() {
        let scratch = Scratch::new().unwrap();
        make_fixture(scratch.path(), "tiny", "4:10");
        make_fixture(scratch.path(), "wide", "9:25");
        let raw = scratch.join("raw");
        let config = Config {
            fixtures_dir: scratch.path().to_owned(),
            fixtures: vec!["tiny".to_owned(), "wide".to_owned()],
            requests: 2,
            edit_duration: Duration::from_millis(20),
            raw_dir: Some(raw.clone()),
        };
        // run() itself checks that each served copy gained one commit per request and that the
        // last request's tag is in place.
        let report = run(&config).unwrap();
        assert_eq!(report.fixtures.len(), 2);
        for r in &report.fixtures {
            assert_eq!(r.floor.len(), 2);
            assert_eq!(r.naive.total.len(), 2);
            assert_eq!(r.naive.push.len(), 2);
            assert_eq!(r.tug.total.len(), 2);
            assert_eq!(r.tug.attempts, vec![1, 1]);
            // The mirror is tug's only writer's view: no fetch per request.
            assert!(r.tug.fetch.iter().all(|d| d.is_zero()));
        }
        assert_eq!(report.fixtures[0].fixture.service_dirs, 12);
        assert_eq!(report.fixtures[1].fixture.service_dirs, 27);
        assert!(report.edits.edits >= 1000);
        let table = report.render();
        for needle in [
            "floor: git push",
            "naive: whole pipeline",
            "tug: land",
            "tug / (1.2×floor + 5ms)",
            "tug's own time per request (land minus its git push): tiny",
            "wide/tiny ratio ≤ 1.2: tug",
            "edit engine ≥ 10,000 edits/s on one core",
            "naive / tug speed-up",
        ] {
            assert!(table.contains(needle), "no `{needle}` in\n{table}");
        }
        let tug_tsv = fs::read_to_string(raw.join("write-path-wide-tug.tsv")).unwrap();
        assert_eq!(tug_tsv.lines().count(), 3, "{tug_tsv}");
    }
}
