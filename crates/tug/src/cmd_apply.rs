//! `tug apply SPECS --dir CHECKOUT | --push`: deploy specs without a server.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use tug_deploy::{GitFiles, TaskChange};
use tug_git::{Auth, Identity, LandOptions, LandResult, Mirror, MirrorOptions, Remote, Secret};
use tug_spec::{BranchUpdate, Files, FilesError, PathsAt};

use crate::cli::{ApplyArgs, OutputFormat};
use crate::cmd_edit::now_rfc3339;
use crate::exit::Coded;
use crate::localfs::Checkout;
use crate::output;

/// One branch update of the spec file, with where it sits in the file (for error messages).
struct Selected<'a> {
    url: &'a str,
    update: &'a BranchUpdate,
    field: String,
}

pub(crate) fn run(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let (name, bytes) = read_specs(&args.specs)?;
    let specs = tug_spec::parse_specs(&name, &bytes)?;
    tug_spec::validate_specs(
        &specs,
        "specs",
        &tug_spec::Limits {
            max_paths: usize::MAX,
        },
    )
    .with_context(|| format!("{name}: invalid deploy spec"))?;
    let selected: Vec<Selected<'_>> = specs
        .iter()
        .enumerate()
        .filter(|(_, s)| args.url.as_deref().is_none_or(|u| u == s.url))
        .flat_map(|(si, s)| {
            s.updates.iter().enumerate().map(move |(ui, u)| Selected {
                url: &s.url,
                update: u,
                field: format!("specs[{si}].updates[{ui}].paths"),
            })
        })
        .filter(|s| args.branch.as_deref().is_none_or(|b| b == s.update.branch))
        .collect();
    if selected.is_empty() {
        bail!("{name}: no update matches the given --url/--branch");
    }
    let ctx = tug_spec::Context {
        redeploy_value: args.redeploy_value.clone().unwrap_or_else(now_rfc3339),
        strict: false,
    };
    match &args.dir {
        Some(dir) => apply_to_dir(&args, dir, &selected, &ctx),
        None => apply_and_push(&args, &selected, &ctx),
    }
}

fn read_specs(path: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read specs from standard input")?;
        return Ok(("<stdin>".to_owned(), buf));
    }
    let name = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("{name}: cannot read"))?;
    Ok((name, bytes))
}

/// A checkout with the edits made so far, so later updates see earlier ones before anything is
/// written.
struct Pending<'a> {
    checkout: &'a Checkout,
    writes: BTreeMap<String, Vec<u8>>,
}

impl Files for Pending<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
        match self.writes.get(path) {
            Some(b) => Ok(Some(b.clone())),
            None => self.checkout.read(path),
        }
    }
    fn list(&self, dir: &str) -> Result<Option<Vec<String>>, FilesError> {
        self.checkout.list(dir)
    }
}

fn apply_to_dir(
    args: &ApplyArgs,
    dir: &std::path::Path,
    selected: &[Selected<'_>],
    ctx: &tug_spec::Context,
) -> anyhow::Result<ExitCode> {
    // A checkout is one branch of one repository; edits meant for another must not land in it.
    let urls = distinct(selected.iter().map(|s| s.url));
    if urls.len() > 1 {
        bail!(
            "the specs name {} repositories ({}); pick the one checked out in {} with --url",
            urls.len(),
            urls.join(", "),
            dir.display()
        );
    }
    let branches = distinct(selected.iter().map(|s| s.update.branch.as_str()));
    if branches.len() > 1 {
        bail!(
            "the specs name {} branches ({}); pick the one checked out in {} with --branch",
            branches.len(),
            branches.join(", "),
            dir.display()
        );
    }
    let checkout =
        Checkout::new(dir).with_context(|| format!("{}: cannot open checkout", dir.display()))?;
    let mut pending = Pending {
        checkout: &checkout,
        writes: BTreeMap::new(),
    };
    let mut summaries = Vec::new();
    for s in selected {
        let applied = tug_spec::apply_paths(&s.update.paths, &s.field, &pending, ctx)
            .map_err(|e| Coded::failed("edit_failed", e.to_string()))?;
        summaries.extend(applied.summaries);
        for change in applied.changes {
            pending.writes.insert(change.path, change.content);
        }
    }
    let mut files = Vec::new();
    for (path, content) in &pending.writes {
        let before = checkout.read(path)?.unwrap_or_default();
        if &before == content {
            continue;
        }
        let diff = args
            .dry_run
            .then(|| output::unified_diff(path, &before, content));
        if !args.dry_run {
            checkout.write(path, content)?;
        }
        files.push((path.clone(), diff));
    }
    report(args, &summaries, &files, &[]);
    Ok(ExitCode::SUCCESS)
}

/// Each value once, in order of first appearance.
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn auth_for(args: &ApplyArgs, url: &str) -> anyhow::Result<Auth> {
    let is_http = url.starts_with("https://") || url.starts_with("http://");
    if is_http {
        if let Some(username) = &args.http_username {
            let password = std::env::var("TUG_GIT_PASSWORD").map_err(|_| {
                anyhow::anyhow!("--http-username is set but TUG_GIT_PASSWORD is not: put the password or token there")
            })?;
            return Ok(Auth::Http {
                username: username.clone(),
                password: Secret::new(password),
            });
        }
        return Ok(Auth::None);
    }
    let is_ssh = url.starts_with("ssh://") || (!url.contains("://") && url.contains(':'));
    match (&args.ssh_key, is_ssh) {
        (Some(key), true) => {
            let known_hosts = match &args.known_hosts {
                Some(k) => k.clone(),
                None => home_dir()
                    .map(|h| h.join(".ssh/known_hosts"))
                    .context("--known-hosts is required: tug never turns host key checking off")?,
            };
            Ok(Auth::Ssh {
                private_key_file: key.clone(),
                known_hosts_file: known_hosts,
            })
        }
        _ => Ok(Auth::None),
    }
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

fn cache_dir(args: &ApplyArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &args.cache_dir {
        return Ok(d.clone());
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(x).join("tug"));
    }
    home_dir()
        .map(|h| h.join(".cache/tug"))
        .context("cannot choose a cache directory: set --cache-dir or HOME")
}

/// The outcome of one (repository, branch).
struct Pushed {
    url: String,
    branch: String,
    outcome: Result<Option<String>, String>,
}

fn apply_and_push(
    args: &ApplyArgs,
    selected: &[Selected<'_>],
    ctx: &tug_spec::Context,
) -> anyhow::Result<ExitCode> {
    // One commit per repository branch: the updates of the spec file for it, in order.
    let mut groups: Vec<((&str, &str), Vec<PathsAt>)> = Vec::new();
    for s in selected {
        let key = (s.url, s.update.branch.as_str());
        let segment = PathsAt {
            field: s.field.clone(),
            paths: s.update.paths.clone(),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, segments)) => segments.push(segment),
            None => groups.push((key, vec![segment])),
        }
    }
    let cache = cache_dir(args)?;
    let author = Identity::new(args.author_name.clone(), args.author_email.clone());
    let mut opts = LandOptions::new(author.clone());
    opts.fetch_first = true;
    opts.allow_empty = args.allow_empty;
    let mut summaries = Vec::new();
    let mut files = Vec::new();
    let mut pushed = Vec::new();
    for ((url, branch), segments) in groups {
        let auth = auth_for(args, url)?;
        let mirror = Mirror::open(&cache, Remote::new(url, auth), MirrorOptions::default())
            .with_context(|| format!("cannot open a mirror of {url}"));
        let mut change = TaskChange::deploy(url.to_owned(), &author, args.message.clone())
            .for_request(uuid::Uuid::now_v7().to_string());
        change.segments = segments;
        change.redeploy_value = ctx.redeploy_value.clone();
        change.strict = ctx.strict;
        change.allow_empty = args.allow_empty;
        if args.dry_run {
            let mirror = mirror?;
            let tip = mirror
                .fetch_branch(branch)?
                .with_context(|| format!("branch {branch} does not exist in {url}"))?;
            let view = mirror.tree_at(tip)?;
            let files_at_tip = GitFiles(&view);
            let applied = tug_spec::apply_segments(&change.segments, &files_at_tip, ctx)
                .map_err(|e| Coded::failed("edit_failed", e.to_string()))?;
            summaries.extend(applied.summaries);
            for c in applied.changes {
                let before = files_at_tip.read(&c.path)?.unwrap_or_default();
                let diff = output::unified_diff(&c.path, &before, &c.content);
                files.push((c.path, Some(diff)));
            }
            continue;
        }
        // An unreachable repository fails its own updates only: what was already pushed to the
        // others must still be reported.
        let landed = mirror.and_then(|m| Ok(tug_git::land(&m, branch, &[&change], &opts)?));
        let outcome = match landed {
            Err(e) => Err(format!("{e:#}")),
            Ok(report) => match report.results.into_iter().next() {
                Some(LandResult::Committed { commit }) => Ok(Some(commit.to_hex())),
                Some(LandResult::UpToDate) | None => Ok(None),
                Some(LandResult::Failed(e)) => Err(e.to_string()),
            },
        };
        pushed.push(Pushed {
            url: url.to_owned(),
            branch: branch.to_owned(),
            outcome,
        });
    }
    report(args, &summaries, &files, &pushed);
    let failed = pushed.iter().filter(|p| p.outcome.is_err()).count();
    if failed > 0 {
        return Err(Coded::failed_and_reported(
            "push_failed",
            format!("{failed} of {} updates failed", pushed.len()),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn report(
    args: &ApplyArgs,
    summaries: &[String],
    files: &[(String, Option<String>)],
    pushed: &[Pushed],
) {
    match args.output {
        OutputFormat::Json => {
            let files: Vec<_> = files
                .iter()
                .map(|(path, diff)| serde_json::json!({"path": path, "diff": diff}))
                .collect();
            let pushed: Vec<_> = pushed
                .iter()
                .map(|p| match &p.outcome {
                    Ok(Some(commit)) => serde_json::json!({"url": p.url, "branch": p.branch, "status": "committed", "commit": commit}),
                    Ok(None) => serde_json::json!({"url": p.url, "branch": p.branch, "status": "up_to_date"}),
                    Err(e) => serde_json::json!({"url": p.url, "branch": p.branch, "status": "failed", "error": e}),
                })
                .collect();
            output::json(&serde_json::json!({
                "dryRun": args.dry_run,
                "edits": summaries,
                "files": files,
                "updates": pushed,
            }));
        }
        OutputFormat::Text => {
            for (path, diff) in files {
                match diff {
                    Some(d) => output::line(d.trim_end_matches('\n')),
                    None => output::line(&format!("updated {path}")),
                }
            }
            if files.is_empty() && pushed.is_empty() {
                output::line("already up to date");
            }
            for p in pushed {
                match &p.outcome {
                    Ok(Some(commit)) => {
                        output::line(&format!("{} {}: pushed {commit}", p.url, p.branch));
                    }
                    Ok(None) => {
                        output::line(&format!("{} {}: already up to date", p.url, p.branch))
                    }
                    Err(e) => {
                        output::diagnostic(&format!("{} {}: failed: {e}", p.url, p.branch));
                    }
                }
            }
        }
    }
}
