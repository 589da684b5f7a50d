//! `tug deploy`: the CI client. It sends one deploy request to a tug server over REST, streams
//! the progress lines to stderr and prints the outcome of each repository branch to stdout.
//!
//! Exit status (the table in `exit`): 0 when the job succeeded, 1 when it failed or the server
//! refused the request's content (invalid specs, unknown repository), 2 for a usage error, a
//! transport error, a refused token, or a wait that timed out (the job goes on).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cli::{DeployArgs, OutputFormat};
use crate::client::{self, Client, Endpoint, Request};
use crate::exit::{self, Coded};
use crate::output;

/// The server `tug deploy` talks to when neither a flag nor a variable names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:12011";
/// How long `tug deploy` waits for the job when neither a flag nor a variable says.
const DEFAULT_TIMEOUT_SECS: u64 = 300;

pub(crate) fn run(mut args: DeployArgs) -> anyhow::Result<ExitCode> {
    delivery_fallbacks(&mut args, &|name| std::env::var(name).ok())?;
    deploy(&args)
}

/// The Delivery client's `DELIVERY_*` variables, read where neither the flag nor its `TUG_*`
/// variable gave a value, so a Delivery CI job keeps working when its client is swapped for
/// `tug deploy`.
fn delivery_fallbacks(
    args: &mut DeployArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let var = |name: &str| {
        env(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if args.server.is_none() {
        let addr = var("DELIVERY_SERVER_ADDR");
        let port = var("DELIVERY_SERVER_PORT");
        if addr.is_some() || port.is_some() {
            // Delivery's clients spoke gRPC on 12010; without a port, tug's REST port.
            let addr = addr.unwrap_or_else(|| "127.0.0.1".to_owned());
            let port = port.unwrap_or_else(|| "12011".to_owned());
            args.server = Some(if addr.contains("://") {
                format!("{addr}:{port}")
            } else {
                format!("http://{addr}:{port}")
            });
        }
    }
    let fill = |slot: &mut Option<String>, name: &str| {
        if slot.is_none() {
            *slot = var(name);
        }
    };
    fill(&mut args.specs, "DELIVERY_SPECS");
    fill(&mut args.project, "DELIVERY_COMMIT_PROJECT");
    fill(&mut args.source_branch, "DELIVERY_COMMIT_BRANCH");
    fill(&mut args.source_tag, "DELIVERY_COMMIT_TAG");
    fill(&mut args.short_sha, "DELIVERY_COMMIT_SHORT_SHA");
    fill(&mut args.message, "DELIVERY_COMMIT_MESSAGE");
    fill(&mut args.user_name, "DELIVERY_COMMIT_USER_NAME");
    fill(&mut args.user_email, "DELIVERY_COMMIT_USER_EMAIL");
    if args.specs_file.is_none() && args.specs.is_none() && args.repository.is_none() {
        args.specs_file = var("DELIVERY_SPECS_FILE").map(Into::into);
    }
    if args.ca_cert.is_none() {
        args.ca_cert = var("DELIVERY_SERVER_ROOT_CERT").map(Into::into);
    }
    if args.timeout.is_none()
        && let Some(timeout) = var("DELIVERY_TIMEOUT")
    {
        let secs = timeout.trim_end_matches('s').parse::<u64>().map_err(|_| {
            Coded::usage(
                "invalid_argument",
                format!("DELIVERY_TIMEOUT: {timeout:?} is not a number of seconds"),
            )
        })?;
        args.timeout = Some(secs);
    }
    Ok(())
}

fn deploy(args: &DeployArgs) -> anyhow::Result<ExitCode> {
    let request = request(args)?;
    let idempotency_key = idempotency_key(args, &request)?;
    let timeout_secs = args.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
    let client = Client::new(&Endpoint {
        server: args.server.as_deref().unwrap_or(DEFAULT_SERVER),
        token_file: args.token_file.as_deref(),
        ca_cert: args.ca_cert.as_deref(),
        timeout: Some(Duration::from_secs(timeout_secs)),
    })?;
    let body = serde_json::to_value(&request).context("cannot encode the request")?;
    let exchange = Exchange {
        client: &client,
        body,
        idempotency_key,
        output: args.output,
    };
    if args.dry_run {
        return client.block_on(exchange.dry_run());
    }
    if args.no_wait {
        return client.block_on(exchange.submit());
    }
    let mut job_id = None;
    client
        .within_timeout(exchange.deploy(&mut job_id))
        .unwrap_or_else(|| {
            Err(match job_id {
                Some(id) => Coded::usage(
                    "deadline_exceeded",
                    format!(
                        "gave up waiting for job {id} after {timeout_secs} s (--timeout); it goes \
                         on on the server: GET {}/api/v1/jobs/{id} tells how it ends",
                        client.base()
                    ),
                ),
                None => client.no_answer(),
            })
        })
}

fn given(value: Option<&String>) -> Option<String> {
    value
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The request body: specs from a file, from text or from the shorthand flags, and the commit
/// metadata.
fn request(args: &DeployArgs) -> anyhow::Result<tug_spec::DeployRequest> {
    let deploy_specs = specs(args)?;
    let notify = (args.no_notify || args.notify_message.is_some()).then(|| tug_spec::NotifySpec {
        disabled: args.no_notify,
        message: given(args.notify_message.as_ref()),
        context: Default::default(),
    });
    Ok(tug_spec::DeployRequest {
        commit_spec: tug_spec::CommitSpec {
            message: commit_message(args),
            user_name: given(args.user_name.as_ref()),
            user_email: given(args.user_email.as_ref()),
            project: given(args.project.as_ref()),
            branch: given(args.source_branch.as_ref()),
            tag: given(args.source_tag.as_ref()),
            short_sha: given(args.short_sha.as_ref()),
        },
        deploy_specs,
        notify,
        idempotency_key: None,
        allow_empty: args.allow_empty,
        strict: args.strict.then_some(true),
    })
}

fn specs(args: &DeployArgs) -> anyhow::Result<Vec<tug_spec::DeploySpec>> {
    if let Some(path) = &args.specs_file {
        let bytes = read_specs_file(path)?;
        return Ok(tug_spec::parse_specs(&path.display().to_string(), &bytes)?);
    }
    if let Some(text) = &args.specs {
        return Ok(tug_spec::parse_specs("--specs", text.as_bytes())?);
    }
    shorthand_spec(args).map(|spec| vec![spec])
}

fn read_specs_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the specs from standard input")?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("cannot read the specs file {}", path.display()))
}

/// `--repository NAME --branch B --path P --image NAME:TAG --chart NAME=VERSION`: kustomize image
/// updates and chart version bumps in one path.
fn shorthand_spec(args: &DeployArgs) -> anyhow::Result<tug_spec::DeploySpec> {
    let repository = given(args.repository.as_ref());
    let url = given(args.url.as_ref());
    if repository.is_none() && url.is_none() {
        return Err(usage(
            "nothing to deploy: give --specs-file, --specs, or --repository (or --url) with \
             --branch, --path and --image or --chart",
        ));
    }
    let Some(branch) = given(args.branch.as_ref()) else {
        return Err(usage("--branch: required with --repository or --url"));
    };
    let Some(path) = args.path.clone() else {
        return Err(usage(
            "--path: required with --repository or --url (`.` for the repository root)",
        ));
    };
    if args.image.is_empty() && args.chart.is_empty() {
        return Err(usage(
            "--image or --chart: required with --repository or --url, as \
             NAME[=NEWNAME][:TAG][@DIGEST] or NAME=VERSION",
        ));
    }
    let images = args
        .image
        .iter()
        .map(|image| {
            tug_edit::ImageSpec::parse(image.trim()).map_err(|e| usage(&format!("--image: {e}")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let chart = args
        .chart
        .iter()
        .map(|chart| {
            let Some((name, version)) = chart.trim().split_once('=') else {
                return Err(usage(&format!("--chart: {chart:?} is not NAME=VERSION")));
            };
            Ok(tug_spec::ChartUpdate {
                file: None,
                name: name.trim().to_owned(),
                repository: None,
                version: version.trim().to_owned(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(tug_spec::DeploySpec {
        url: url.unwrap_or_default(),
        repository,
        updates: vec![tug_spec::BranchUpdate {
            branch,
            paths: vec![tug_spec::PathUpdate {
                path,
                kustomize: (!images.is_empty()).then_some(tug_spec::KustomizeUpdate { images }),
                chart,
                ..Default::default()
            }],
        }],
    })
}

fn usage(message: &str) -> anyhow::Error {
    Coded::usage("invalid_argument", message)
}

/// `deploy <project> <branch|tag>@<short_sha>` with the message as body; the message alone when
/// no source is given; `None` (the server summarises the edits) when neither is.
fn commit_message(args: &DeployArgs) -> Option<String> {
    let message = given(args.message.as_ref());
    let project = given(args.project.as_ref());
    // A tag names a release more precisely than the branch it was cut from.
    let source_ref = given(args.source_tag.as_ref()).or_else(|| given(args.source_branch.as_ref()));
    let sha = given(args.short_sha.as_ref());
    let reference = match (source_ref, sha) {
        (Some(r), Some(sha)) => Some(format!("{r}@{sha}")),
        (r, sha) => r.or(sha),
    };
    if project.is_none() && reference.is_none() {
        return message;
    }
    let title = std::iter::once("deploy".to_owned())
        .chain(project)
        .chain(reference)
        .collect::<Vec<_>>()
        .join(" ");
    Some(match message {
        Some(body) => format!("{title}\n\n{body}"),
        None => title,
    })
}

/// The given key; else, when the project and the source commit are known, one derived from them
/// and the specs, so a retried CI job finds the job of its first attempt.
fn idempotency_key(
    args: &DeployArgs,
    request: &tug_spec::DeployRequest,
) -> anyhow::Result<Option<String>> {
    if let Some(key) = given(args.idempotency_key.as_ref()) {
        return Ok(Some(key));
    }
    let (Some(project), Some(sha)) = (given(args.project.as_ref()), given(args.short_sha.as_ref()))
    else {
        return Ok(None);
    };
    let specs = serde_json::to_vec(&request.deploy_specs).context("cannot encode the specs")?;
    let mut hash = Sha256::new();
    for part in [project.as_bytes(), sha.as_bytes(), &specs] {
        // Length-prefixed, so no two different inputs hash the same bytes.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hex::encode(hash.finalize());
    Ok(Some(format!("tug-deploy-{}", &digest[..32])))
}

struct Exchange<'a> {
    client: &'a Client,
    body: Value,
    idempotency_key: Option<String>,
    output: OutputFormat,
}

impl Exchange<'_> {
    /// The deploy POST. The server stores one job per Idempotency-Key, so a request with a key
    /// may be sent again when the server asks to come back later; a dry run stores nothing.
    fn request<'q>(&'q self, query: &'q [(&'q str, String)]) -> Request<'q> {
        let request = Request::post("/api/v1/deploy", query, &self.body)
            .idempotency_key(self.idempotency_key.as_deref());
        if query.iter().any(|(name, _)| *name == "dryRun") {
            request.repeatable()
        } else {
            request
        }
    }

    /// `--dry-run`: print the server's diffs and commit messages; nothing is stored or pushed.
    async fn dry_run(&self) -> anyhow::Result<ExitCode> {
        let query = [("dryRun", "true".to_owned())];
        let response = self.client.send(&self.request(&query)).await?;
        let preview: Value = response
            .json()
            .await
            .context("the server's answer is not JSON")?;
        match self.output {
            OutputFormat::Json => output::json(&preview),
            OutputFormat::Text => {
                for update in preview
                    .get("updates")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    output::line(&dry_run_text(update));
                }
            }
        }
        if preview.get("status").and_then(Value::as_str) == Some("succeeded") {
            Ok(ExitCode::SUCCESS)
        } else {
            Ok(ExitCode::from(exit::FAILED))
        }
    }

    /// `--no-wait`: the job is stored; print its id.
    async fn submit(&self) -> anyhow::Result<ExitCode> {
        let query = [("wait", "false".to_owned())];
        let response = self.client.send(&self.request(&query)).await?;
        let job: Value = response
            .json()
            .await
            .context("the server's answer is not JSON")?;
        let Some(id) = job.get("jobId").and_then(Value::as_str) else {
            bail!("the server's answer names no job: {job}");
        };
        match self.output {
            OutputFormat::Text => output::line(id),
            OutputFormat::Json => output::json(&job),
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Streams the progress until the final line; `job_id` is set as soon as the server names
    /// the job, for the timeout message.
    async fn deploy(&self, job_id: &mut Option<String>) -> anyhow::Result<ExitCode> {
        let response = self.client.send(&self.request(&[])).await?;
        *job_id = response
            .headers()
            .get("x-tug-job-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(result) = client::ndjson(response, |line| Ok(self.stream_line(&line))).await? {
            return Ok(self.finish(&result));
        }
        let job = job_id.as_deref().unwrap_or("(unknown)");
        Err(Coded::usage(
            "unavailable",
            format!(
                "the server ended the stream before job {job} finished; it goes on on the \
                 server: GET {}/api/v1/jobs/{job} tells how it ends",
                self.client.base()
            ),
        ))
    }

    /// Prints a progress line to stderr; returns the result object of the final line.
    fn stream_line(&self, line: &Value) -> Option<Value> {
        let result = line.get("result").cloned().unwrap_or(Value::Null);
        if result.get("jobId").is_some() {
            return Some(result);
        }
        if let Some(message) = result.get("message").and_then(Value::as_str) {
            progress(message);
        }
        None
    }

    fn finish(&self, result: &Value) -> ExitCode {
        if let Some(message) = result.get("message").and_then(Value::as_str) {
            progress(message);
        }
        match self.output {
            OutputFormat::Json => output::json(result),
            OutputFormat::Text => {
                for update in result
                    .get("updates")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    output::line(&summary_line(update));
                }
            }
        }
        if result.get("status").and_then(Value::as_str) == Some("succeeded") {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(exit::FAILED)
        }
    }
}

/// One branch of a dry run: what would happen, the commit message, then the diffs.
fn dry_run_text(update: &Value) -> String {
    let text = |name: &str| update.get(name).and_then(Value::as_str).unwrap_or("");
    let head = format!("{} {}", text("repository"), text("branch"));
    match text("status") {
        "failed" => format!("{head} would fail: {}", text("error")),
        "up_to_date" => format!("{head} up-to-date: nothing would be committed"),
        _ => {
            let mut out = format!("{head} would commit on {}:\n", text("tip"));
            for line in text("commitMessage").lines() {
                out.push_str("    ");
                out.push_str(line);
                out.push('\n');
            }
            for file in update
                .get("files")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push_str(file.get("diff").and_then(Value::as_str).unwrap_or(""));
            }
            out.trim_end().to_owned()
        }
    }
}

/// `REPOSITORY BRANCH COMMIT`, `REPOSITORY BRANCH up-to-date` or `REPOSITORY BRANCH failed: …`.
fn summary_line(update: &Value) -> String {
    let text = |name: &str| update.get(name).and_then(Value::as_str).unwrap_or("");
    let head = format!("{} {}", text("repository"), text("branch"));
    if text("status") == "failed" {
        format!("{head} failed: {}", text("error"))
    } else if let Some(commit) = update.get("commit").and_then(Value::as_str) {
        format!("{head} {commit}")
    } else if update.get("upToDate").and_then(Value::as_bool) == Some(true) {
        format!("{head} up-to-date")
    } else {
        format!("{head} {}", text("status"))
    }
}

fn progress(message: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{message}");
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> DeployArgs {
        let mut full = vec!["tug", "deploy"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Deploy(args) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_title_names_project_reference_and_commit_above_the_message() {
        let a = args(&[
            "--project",
            "shop/web",
            "--source-branch",
            "main",
            "--short-sha",
            "0a1b2c3",
            "-m",
            "bump web",
        ]);
        assert_eq!(
            commit_message(&a).as_deref(),
            Some("deploy shop/web main@0a1b2c3\n\nbump web")
        );
        let a = args(&[
            "--project",
            "shop/web",
            "--source-tag",
            "v1.2.3",
            "--source-branch",
            "main",
        ]);
        assert_eq!(
            commit_message(&a).as_deref(),
            Some("deploy shop/web v1.2.3")
        );
        let a = args(&["--short-sha", "0a1b2c3"]);
        assert_eq!(commit_message(&a).as_deref(), Some("deploy 0a1b2c3"));
    }

    #[test]
    fn a_message_alone_is_the_title() {
        assert_eq!(
            commit_message(&args(&["-m", "hotfix"])).as_deref(),
            Some("hotfix")
        );
        assert_eq!(commit_message(&args(&[])), None);
    }

    #[test]
    fn the_derived_idempotency_key_follows_project_commit_and_specs() {
        let key = |image: &str, sha: Option<&str>, extra: &[&str]| {
            let mut argv = vec![
                "--repository",
                "gitops",
                "--branch",
                "main",
                "--path",
                "apps/web",
                "--image",
                image,
                "--project",
                "shop/web",
            ];
            if let Some(sha) = sha {
                argv.extend(["--short-sha", sha]);
            }
            argv.extend_from_slice(extra);
            let a = args(&argv);
            idempotency_key(&a, &request(&a).unwrap()).unwrap()
        };
        let first = key("web:v1", Some("0a1b2c3"), &[]).unwrap();
        assert!(first.starts_with("tug-deploy-"), "{first}");
        assert_eq!(key("web:v1", Some("0a1b2c3"), &[]), Some(first.clone()));
        // The message is not part of the key: a retry may word it differently.
        assert_eq!(
            key("web:v1", Some("0a1b2c3"), &["-m", "again"]),
            Some(first.clone())
        );
        assert_ne!(key("web:v2", Some("0a1b2c3"), &[]), Some(first.clone()));
        assert_ne!(key("web:v1", Some("ffffff0"), &[]), Some(first));
        assert_eq!(
            key("web:v1", Some("0a1b2c3"), &["--idempotency-key", "mine"]).as_deref(),
            Some("mine")
        );
        assert_eq!(key("web:v1", None, &[]), None);
    }

    #[test]
    fn the_shorthand_is_one_kustomize_image_update() {
        let a = args(&[
            "--repository",
            "gitops",
            "--branch",
            "main",
            "--path",
            "apps/demo/dev",
            "--image",
            "registry.example.com/demo/app:v1.2.4",
        ]);
        let body = serde_json::to_value(request(&a).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "commitSpec": {},
                "deploySpecs": [{"url": "", "repository": "gitops", "updates": [
                    {"branch": "main", "paths": [{"path": "apps/demo/dev", "kustomize": {"images": [
                        {"name": "registry.example.com/demo/app", "newTag": "v1.2.4"}]}}]}]}]
            })
        );
    }

    #[test]
    fn the_shorthand_takes_chart_versions() {
        let a = args(&[
            "--repository",
            "gitops",
            "--branch",
            "main",
            "--path",
            "apps/demo/dev",
            "--chart",
            "podinfo=6.10",
            "--chart",
            "redis = >=19.0.0 <20",
        ]);
        let body = serde_json::to_value(request(&a).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "commitSpec": {},
                "deploySpecs": [{"url": "", "repository": "gitops", "updates": [
                    {"branch": "main", "paths": [{"path": "apps/demo/dev", "chart": [
                        {"name": "podinfo", "version": "6.10"},
                        {"name": "redis", "version": ">=19.0.0 <20"}]}]}]}]
            })
        );
        let mut bad = a;
        bad.chart = vec!["podinfo:6.10".to_owned()];
        let e = request(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--chart: \"podinfo:6.10\" is not NAME=VERSION"
        );
    }

    #[test]
    fn the_shorthand_names_what_is_missing() {
        let e = request(&args(&[
            "--repository",
            "gitops",
            "--path",
            "x",
            "--image",
            "a:1",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("--branch"), "{e}");
        let e = request(&args(&[
            "--repository",
            "gitops",
            "--branch",
            "main",
            "--path",
            "x",
            "--image",
            "a",
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("--image: "), "{e}");
        assert!(e.to_string().contains("changes nothing"), "{e}");
        let e = request(&args(&[])).unwrap_err();
        assert!(e.to_string().contains("nothing to deploy"), "{e}");
    }

    #[test]
    fn the_summary_has_one_line_per_branch() {
        let ok = serde_json::json!({"repository": "gitops", "branch": "main",
            "status": "succeeded", "commit": "abc123"});
        assert_eq!(summary_line(&ok), "gitops main abc123");
        let same = serde_json::json!({"repository": "gitops", "branch": "main",
            "status": "succeeded", "upToDate": true});
        assert_eq!(summary_line(&same), "gitops main up-to-date");
        let failed = serde_json::json!({"repository": "gitops", "branch": "prod",
            "status": "failed", "error": "no kustomization"});
        assert_eq!(
            summary_line(&failed),
            "gitops prod failed: no kustomization"
        );
    }
}
