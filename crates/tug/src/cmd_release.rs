//! `tug release|promote|rollback|unpin|status|describe|policy|reindex`: the release manager's
//! verbs as a client of the server's release API. Progress goes to stderr, results to stdout.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cli::{
    DescribeCommand, OutputFormat, PolicyApply, PolicyArgs, PolicyCommand, PromoteArgs,
    ReindexArgs, ReleaseArgs, RollbackArgs, StatusArgs, UnpinArgs,
};
use crate::client::{self, Client, Endpoint, Request};
use crate::exit::Coded;
use crate::output;

/// How many recent releases the interactive rollback offers.
const ROLLBACK_CHOICES: u32 = 10;

fn str_of<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn release(args: &ReleaseArgs) -> anyhow::Result<()> {
    let mut body = json!({
        "service": args.service,
        "environments": args.env,
        "intent": "release",
    });
    if let Some(artifact) = &args.artifact {
        body["artifactId"] = json!(artifact);
    }
    if let Some(branch) = &args.branch {
        body["branch"] = json!(branch);
    }
    let client = Client::new(&Endpoint::from(&args.server))?;
    submit(
        &client,
        args.server.output,
        &body,
        args.no_wait,
        args.dry_run,
    )
}

pub(crate) fn promote(args: &PromoteArgs) -> anyhow::Result<()> {
    let mut body = json!({
        "service": args.service,
        "environments": args.env,
        "intent": "promote",
    });
    if let Some(from) = &args.from_env {
        body["fromEnv"] = json!(from);
    }
    let client = Client::new(&Endpoint::from(&args.server))?;
    submit(
        &client,
        args.server.output,
        &body,
        args.no_wait,
        args.dry_run,
    )
}

pub(crate) fn rollback(args: &RollbackArgs) -> anyhow::Result<()> {
    let client = Client::new(&Endpoint::from(&args.server))?;
    let artifact = match &args.artifact {
        Some(artifact) => Some(artifact.clone()),
        None if std::io::stdin().is_terminal() => pick_release(&client, args)?,
        // Without a terminal the server picks the previous release.
        None => None,
    };
    let mut body = json!({
        "service": args.service,
        "environments": [args.env],
        "intent": "rollback",
    });
    if let Some(artifact) = artifact {
        body["artifactId"] = json!(artifact);
    }
    submit(
        &client,
        args.server.output,
        &body,
        args.no_wait,
        args.dry_run,
    )
}

/// Lists the recent releases of the environment and reads the number of one; an empty answer
/// means the previous release.
fn pick_release(client: &Client, args: &RollbackArgs) -> anyhow::Result<Option<String>> {
    let history = client.block_on(client.get(
        "/api/v1/releases",
        &[
            ("service", args.service.clone()),
            ("env", args.env.clone()),
            ("count", ROLLBACK_CHOICES.to_string()),
        ],
    ))?;
    let releases: Vec<&Value> = history
        .get("releases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if releases.is_empty() {
        bail!(
            "service '{}' has no releases in '{}' to roll back to",
            args.service,
            args.env
        );
    }
    let mut err = std::io::stderr().lock();
    writeln!(err, "Recent releases of {} in {}:", args.service, args.env)?;
    for (i, r) in releases.iter().enumerate() {
        let current = if i == 0 { "  (running)" } else { "" };
        writeln!(
            err,
            "  {:>2}) {}  {}  by {}  {}{current}",
            i + 1,
            str_of(r, "artifactId"),
            intent_word(r.get("intent")),
            person(r.get("releasedBy")),
            str_of(r, "releasedAt"),
        )?;
    }
    write!(
        err,
        "Roll back to which release? [1-{}, empty for the previous release]: ",
        releases.len()
    )?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    let answer = answer.trim();
    if answer.is_empty() {
        return Ok(None);
    }
    let chosen = answer
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| releases.get(i))
        .with_context(|| {
            format!(
                "'{answer}' is not a number between 1 and {}",
                releases.len()
            )
        })?;
    Ok(Some(str_of(chosen, "artifactId").to_owned()))
}

/// Sends a release request; streams its progress to stderr, or with `no_wait` prints the stored
/// jobs. Fails when any environment's job failed.
fn submit(
    client: &Client,
    format: OutputFormat,
    body: &Value,
    no_wait: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    if dry_run {
        return preview(client, format, body);
    }
    if no_wait {
        let query = [("wait", "false".to_owned())];
        let answer =
            client.block_on(client.json(&Request::post("/api/v1/releases", &query, body)))?;
        match format {
            OutputFormat::Json => output::json(&answer),
            OutputFormat::Text => {
                for r in answer
                    .get("releases")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    output::line(&format!(
                        "{} {} job {}",
                        str_of(r, "environment"),
                        str_of(r, "artifactId"),
                        str_of(r, "jobId")
                    ));
                }
            }
        }
        return Ok(());
    }
    let mut outcome = StreamOutcome::default();
    client.block_on(async {
        let response = client
            .send(&Request::post("/api/v1/releases", &[], body))
            .await?;
        client::ndjson(response, |line| {
            outcome.take(line);
            Ok(None::<()>)
        })
        .await
    })?;
    if outcome.results.is_empty() {
        return Err(Coded::usage(
            "unavailable",
            "the server ended the stream before any release finished",
        ));
    }
    match format {
        OutputFormat::Json => output::json(&json!({"releases": outcome.results})),
        OutputFormat::Text => {
            for r in &outcome.results {
                output::line(&release_line(r));
            }
        }
    }
    let failed: Vec<String> = outcome
        .results
        .iter()
        .filter(|r| str_of(r, "status") != "succeeded")
        .map(|r| {
            format!(
                "{} ({})",
                str_of(r, "environment"),
                failure(r).unwrap_or_else(|| str_of(r, "status").to_owned())
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(Coded::failed_and_reported(
            "release_failed",
            format!("the release failed in {}", failed.join(", ")),
        ));
    }
    Ok(())
}

/// Asks the server what the release would commit and prints it; fails (exit 1) when any
/// environment's edit would fail.
fn preview(client: &Client, format: OutputFormat, body: &Value) -> anyhow::Result<()> {
    let query = [("dryRun", "true".to_owned())];
    let answer = client.block_on(client.json(&Request::post("/api/v1/releases", &query, body)))?;
    match format {
        OutputFormat::Json => output::json(&answer),
        OutputFormat::Text => {
            for r in answer
                .get("releases")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let preview = r.get("preview").cloned().unwrap_or(Value::Null);
                let head = format!(
                    "{} {} {}",
                    str_of(r, "environment"),
                    intent_word(r.get("intent")),
                    str_of(r, "artifactId")
                );
                let body = match str_of(&preview, "status") {
                    "failed" => format!("would fail: {}", str_of(&preview, "error")),
                    "up_to_date" => "up-to-date: nothing would be committed".to_owned(),
                    _ => {
                        let mut out = format!(
                            "would commit to {} {} on {}:\n",
                            str_of(&preview, "repository"),
                            str_of(&preview, "branch"),
                            str_of(&preview, "tip")
                        );
                        for line in str_of(&preview, "commitMessage").lines() {
                            out.push_str("    ");
                            out.push_str(line);
                            out.push('\n');
                        }
                        for file in preview
                            .get("files")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            out.push_str(str_of(file, "diff"));
                        }
                        out.trim_end().to_owned()
                    }
                };
                output::line(&format!("{head} {body}"));
            }
        }
    }
    if str_of(&answer, "status") == "failed" {
        return Err(Coded::failed_and_reported(
            "release_failed",
            "the release would fail; see above",
        ));
    }
    Ok(())
}

/// The release intro lines (what each job releases) and final lines (how it ended), merged per
/// job.
#[derive(Default)]
struct StreamOutcome {
    releases: Vec<Value>,
    results: Vec<Value>,
}

impl StreamOutcome {
    fn take(&mut self, line: Value) {
        let result = line.get("result").cloned().unwrap_or(Value::Null);
        if let Some(message) = result.get("message").and_then(Value::as_str) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{message}");
        }
        if let Some(release) = result.get("release") {
            self.releases.push(release.clone());
        } else if let Some(job) = result.get("jobId").and_then(Value::as_str) {
            let mut merged = self
                .releases
                .iter()
                .find(|r| str_of(r, "jobId") == job)
                .cloned()
                .unwrap_or_else(|| json!({"jobId": job}));
            merged["status"] = result.get("status").cloned().unwrap_or(Value::Null);
            merged["updates"] = result.get("updates").cloned().unwrap_or(Value::Null);
            if let Some(commit) = result
                .get("updates")
                .and_then(Value::as_array)
                .and_then(|u| u.iter().find_map(|u| u.get("commit")))
            {
                merged["commit"] = commit.clone();
            }
            self.results.push(merged);
        }
    }
}

fn failure(result: &Value) -> Option<String> {
    result
        .get("updates")
        .and_then(Value::as_array)?
        .iter()
        .find_map(|u| u.get("error").and_then(Value::as_str))
        .map(str::to_owned)
}

/// `ENV ARTIFACT STATUS COMMIT`.
fn release_line(r: &Value) -> String {
    let mut line = format!(
        "{} {} {} {}",
        str_of(r, "environment"),
        str_of(r, "artifactId"),
        intent_word(r.get("intent")),
        str_of(r, "status")
    );
    if let Some(commit) = r.get("commit").and_then(Value::as_str) {
        line.push(' ');
        line.push_str(commit);
    } else if r.get("updates").and_then(Value::as_array).is_some_and(|u| {
        u.iter()
            .any(|u| u.get("upToDate") == Some(&Value::Bool(true)))
    }) {
        line.push_str(" up-to-date");
    }
    line
}

/// An intent as the server writes it: `{"type": "rollback", "ofArtifact": …}` (or a bare word).
fn intent_word(intent: Option<&Value>) -> String {
    match intent {
        Some(Value::String(s)) => s.clone(),
        Some(v) => str_of(v, "type").to_owned(),
        None => String::new(),
    }
}

/// `Name <email>`, the name alone, or the email alone.
fn person(p: Option<&Value>) -> String {
    let Some(p) = p else {
        return String::new();
    };
    match (str_of(p, "name"), str_of(p, "email")) {
        ("", email) => email.to_owned(),
        (name, "") => name.to_owned(),
        (name, email) => format!("{name} <{email}>"),
    }
}

pub(crate) fn unpin(args: &UnpinArgs) -> anyhow::Result<()> {
    let client = Client::new(&Endpoint::from(&args.server))?;
    let answer = client.block_on(client.post(
        "/api/v1/unpin",
        &json!({"service": args.service, "env": args.env}),
    ))?;
    match args.server.output {
        OutputFormat::Json => output::json(&answer),
        OutputFormat::Text => output::line(&format!(
            "unpinned {} in {} (was held at {}); auto-releases resume\n{}",
            args.service,
            args.env,
            answer
                .get("unpinned")
                .map(|u| str_of(u, "artifactId"))
                .unwrap_or(""),
            answer
                .get("autoRelease")
                .map(|a| str_of(a, "message"))
                .unwrap_or("")
        )),
    }
    Ok(())
}

pub(crate) fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let client = Client::new(&Endpoint::from(&args.server))?;
    let status = client.block_on(client.get(&format!("/api/v1/status/{}", args.service), &[]))?;
    match args.server.output {
        OutputFormat::Json => output::json(&status),
        OutputFormat::Text => output::line(status_text(&status).trim_end()),
    }
    Ok(())
}

/// Per environment what runs there, in the release manager's `status` layout.
fn status_text(status: &Value) -> String {
    let mut out = String::new();
    for env in status
        .get("environments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!("{}:\n", str_of(env, "environment")));
        let outside = env.get("setOutsideReleases").filter(|o| !o.is_null());
        let outside_line = |o: &Value| {
            format!(
                "{} ({}), set outside releases in {}",
                str_of(o, "tag"),
                str_of(o, "image"),
                str_of(o, "file")
            )
        };
        if env.get("released").and_then(Value::as_bool) != Some(true) {
            match outside {
                Some(o) => out.push_str(&format!(
                    "  not released\n  Deployed: {}\n\n",
                    outside_line(o)
                )),
                None => out.push_str("  not released\n\n"),
            }
            continue;
        }
        if let Some(o) = outside {
            out.push_str(&format!("  Deployed: {}\n", outside_line(o)));
        }
        let mut field = |label: &str, value: String| {
            if !value.is_empty() {
                out.push_str(&format!("  {label}: {value}\n"));
            }
        };
        field("Artifact", str_of(env, "artifactId").to_owned());
        let tag = match (str_of(env, "image"), str_of(env, "tag")) {
            ("", tag) => tag.to_owned(),
            (image, tag) => format!("{tag} ({image})"),
        };
        field("Tag", tag);
        field("Author", person(env.get("author")));
        field("Committer", person(env.get("committer")));
        field(
            "Message",
            str_of(env, "message")
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        );
        field("Date", str_of(env, "date").to_owned());
        field("Link", str_of(env, "ciJobUrl").to_owned());
        field("Commit", str_of(env, "commit").to_owned());
        field(
            "Released",
            format!(
                "{} by {}",
                intent_word(env.get("intent")),
                person(env.get("releasedBy"))
            ),
        );
        if let Some(rollout) = env.get("rollout").filter(|r| !r.is_null()) {
            field(
                "Rollout",
                format!(
                    "{} {}",
                    str_of(rollout, "state"),
                    str_of(rollout, "message")
                )
                .trim()
                .to_owned(),
            );
        }
        let pinned = match env.get("pin").filter(|p| !p.is_null()) {
            Some(pin) => format!(
                "yes, rolled back to {} by {} at {} (`tug unpin` resumes auto-releases)",
                str_of(pin, "artifactId"),
                person(pin.get("by")),
                str_of(pin, "at")
            ),
            None => "no".to_owned(),
        };
        field("Pinned", pinned);
        out.push('\n');
    }
    out
}

pub(crate) fn describe(cmd: &DescribeCommand) -> anyhow::Result<()> {
    match cmd {
        DescribeCommand::Release {
            service,
            env,
            count,
            server,
        } => {
            let client = Client::new(&Endpoint::from(server))?;
            let mut query = vec![("service", service.clone()), ("count", count.to_string())];
            if let Some(env) = env {
                query.push(("env", env.clone()));
            }
            let answer = client.block_on(client.get("/api/v1/releases", &query))?;
            match server.output {
                OutputFormat::Json => output::json(&answer),
                OutputFormat::Text => {
                    for r in answer
                        .get("releases")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        output::line(&format!(
                            "{}  {}  {}  {}  by {}  {}",
                            str_of(r, "releasedAt"),
                            str_of(r, "environment"),
                            str_of(r, "artifactId"),
                            intent_word(r.get("intent")),
                            person(r.get("releasedBy")),
                            short(str_of(r, "commit")),
                        ));
                    }
                }
            }
        }
        DescribeCommand::Artifact {
            service,
            branch,
            count,
            server,
        } => {
            let client = Client::new(&Endpoint::from(server))?;
            let mut query = vec![("service", service.clone()), ("count", count.to_string())];
            if let Some(branch) = branch {
                query.push(("branch", branch.clone()));
            }
            let answer = client.block_on(client.get("/api/v1/artifacts", &query))?;
            match server.output {
                OutputFormat::Json => output::json(&answer),
                OutputFormat::Text => {
                    for a in answer
                        .get("artifacts")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let artifact = a.get("artifact").unwrap_or(&Value::Null);
                        let app = artifact.get("application").unwrap_or(&Value::Null);
                        output::line(&format!(
                            "{}  {}  {}  {}  {}",
                            str_of(a, "createdAt"),
                            str_of(a, "id"),
                            str_of(a, "branch"),
                            short(str_of(app, "sha")),
                            str_of(app, "message").lines().next().unwrap_or(""),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

pub(crate) fn policy(args: &PolicyArgs) -> anyhow::Result<()> {
    let Some(service) = args.service.as_deref().filter(|s| !s.trim().is_empty()) else {
        bail!("--service: required (or set TUG_SERVICE)");
    };
    let client = Client::new(&Endpoint::from(&args.server))?;
    let path = format!("/api/v1/policies/{service}");
    let answer = match &args.command {
        PolicyCommand::List => client.block_on(client.get(&path, &[]))?,
        PolicyCommand::Apply(PolicyApply::AutoRelease { branch, env }) => {
            client.block_on(client.post(
                &format!("{path}/auto-release"),
                &json!({"branch": branch, "env": env}),
            ))?
        }
        PolicyCommand::Apply(PolicyApply::BranchRestriction { env, branch_regex }) => client
            .block_on(client.post(
                &format!("{path}/branch-restriction"),
                &json!({"env": env, "branchRegex": branch_regex}),
            ))?,
        PolicyCommand::Delete { ids } => {
            client.block_on(client.delete(&path, &json!({"ids": ids})))?
        }
    };
    if args.server.output == OutputFormat::Json {
        output::json(&answer);
        return Ok(());
    }
    match &args.command {
        PolicyCommand::List => output::line(policies_text(&answer).trim_end()),
        PolicyCommand::Apply(_) => {
            output::line(&format!("applied policy {}", str_of(&answer, "id")));
        }
        PolicyCommand::Delete { .. } => {
            let deleted: Vec<&str> = answer
                .get("deleted")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            output::line(&format!("deleted {}", deleted.join(", ")));
        }
    }
    Ok(())
}

fn policies_text(policies: &Value) -> String {
    let list = |name: &str| -> Vec<Value> {
        policies
            .get(name)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = String::new();
    let auto = list("autoReleases");
    out.push_str("Auto-releases:\n");
    if auto.is_empty() {
        out.push_str("  none\n");
    }
    for p in &auto {
        out.push_str(&format!(
            "  {}  branch {} -> {}\n",
            str_of(p, "id"),
            str_of(p, "branch"),
            str_of(p, "environment")
        ));
    }
    let restrictions = list("branchRestrictions");
    out.push_str("Branch restrictions:\n");
    if restrictions.is_empty() {
        out.push_str("  none\n");
    }
    for p in &restrictions {
        let global = if p.get("global").and_then(Value::as_bool) == Some(true) {
            "  (server-wide)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {}  {} only {}{global}\n",
            str_of(p, "id"),
            str_of(p, "environment"),
            str_of(p, "branchRegex")
        ));
    }
    out
}

pub(crate) fn reindex(args: &ReindexArgs) -> anyhow::Result<()> {
    let client = Client::new(&Endpoint::from(&args.server))?;
    // Rebuilding the index twice gives the same index: safe to repeat.
    let body = json!({});
    let answer =
        client.block_on(client.json(&Request::post("/api/v1/reindex", &[], &body).repeatable()))?;
    match args.server.output {
        OutputFormat::Json => output::json(&answer),
        OutputFormat::Text => {
            for b in answer
                .get("branches")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                output::line(&format!(
                    "{} {}: {} releases, {} unpins, head {}",
                    str_of(b, "repository"),
                    str_of(b, "branch"),
                    b.get("releases").unwrap_or(&Value::Null),
                    b.get("unpins").unwrap_or(&Value::Null),
                    short(str_of(b, "head")),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_shows_what_runs_and_the_pin() {
        let status = json!({"service": "api", "environments": [
            {"environment": "dev", "released": true, "artifactId": "a1", "image": "r/api",
             "tag": "1.2.3", "author": {"name": "Ann", "email": "ann@example.com"},
             "committer": {"name": "Bob", "email": ""}, "message": "fix it\n\nbody",
             "date": "2024-01-01T00:00:00Z", "ciJobUrl": "https://ci/1", "commit": "abc",
             "intent": {"type": "rollback", "ofArtifact": "a2"}, "releasedBy": {"name": "Ann", "email": ""},
             "pin": {"artifactId": "a1", "by": {"name": "Ann", "email": ""}, "at": "T"},
             "rollout": null},
            {"environment": "prod", "released": false}
        ]});
        let text = status_text(&status);
        for expected in [
            "dev:\n  Artifact: a1\n  Tag: 1.2.3 (r/api)\n  Author: Ann <ann@example.com>\n",
            "  Committer: Bob\n  Message: fix it\n",
            "  Link: https://ci/1\n  Commit: abc\n  Released: rollback by Ann\n",
            "  Pinned: yes, rolled back to a1 by Ann at T",
            "prod:\n  not released\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
    }

    #[test]
    fn the_stream_merges_what_a_job_releases_with_how_it_ended() {
        let mut outcome = StreamOutcome::default();
        outcome.take(json!({"result": {"message": "[INFO] release", "release": {
            "environment": "dev", "artifactId": "a1", "intent": {"type": "release"}, "jobId": "j1"}}}));
        outcome.take(json!({"result": {"message": "[INFO] pushing"}}));
        outcome.take(json!({"result": {"jobId": "j1", "status": "succeeded",
            "updates": [{"commit": "c0ffee"}]}}));
        assert_eq!(outcome.results.len(), 1);
        assert_eq!(
            release_line(&outcome.results[0]),
            "dev a1 release succeeded c0ffee"
        );
    }
}
