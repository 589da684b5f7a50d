//! `tug artifact init|add|push|bundle`: CI writes `artifact.json` step by step, registers it,
//! and optionally uploads rendered manifests for copy-mode releases.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use tug_release::artifact::{ChartData, ImageData, Repository, ScanData, TestData, TestResults};
use tug_release::{Artifact, ArtifactInit, Stage};

use crate::cli::{
    ArtifactBundleArgs, ArtifactCommand, ArtifactFileArg, ArtifactInitArgs, ArtifactPushArgs,
    ArtifactStage, OutputFormat,
};
use crate::client::{Client, Endpoint, Request};
use crate::output;

pub(crate) fn run(cmd: ArtifactCommand) -> anyhow::Result<()> {
    match cmd {
        ArtifactCommand::Init(args) => init(*args),
        ArtifactCommand::Add(stage) => add(stage),
        ArtifactCommand::Push(args) => push(&args),
        ArtifactCommand::Bundle(args) => bundle(&args),
    }
}

/// The most files one bundle may hold; a directory this large is almost surely the wrong one.
const MAX_BUNDLE_FILES: usize = 10_000;

/// Reads `dir/<env>/**` into `"<env>/<path>" → content`. Only regular UTF-8 files are taken;
/// a symlink or a binary file is an error naming it, so nothing is uploaded half.
fn read_bundle(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read directory {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("cannot read directory {}", dir.display()))?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = entry.path();
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot stat {}", path.display()))?;
            if kind.is_dir() {
                walk(root, &path, files)?;
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(root)
                    .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
                let name = relative
                    .components()
                    .map(|c| c.as_os_str().to_str())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| anyhow!("{}: the file name is not UTF-8", path.display()))?
                    .join("/");
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| anyhow!("{}: not a UTF-8 text file", path.display()))?;
                files.insert(name, text);
                if files.len() > MAX_BUNDLE_FILES {
                    bail!("{}: more than {MAX_BUNDLE_FILES} files", root.display());
                }
            } else {
                bail!(
                    "{}: only regular files and directories can be bundled",
                    path.display()
                );
            }
        }
        Ok(())
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files)?;
    if let Some(top) = files.keys().find(|k| !k.contains('/')) {
        bail!(
            "{}: {top} is not inside an environment directory (expected {}/<env>/…)",
            dir.join(top).display(),
            dir.display()
        );
    }
    if files.is_empty() {
        bail!("{}: no files to bundle", dir.display());
    }
    Ok(files)
}

fn bundle(args: &ArtifactBundleArgs) -> anyhow::Result<()> {
    let artifact = read(&args.artifact.file)?;
    let files = read_bundle(&args.dir)?;
    let count = files.len();
    let body = serde_json::json!({"service": artifact.service, "files": files});
    let client = Client::new(&Endpoint::from(&args.artifact.server))?;
    // The id was checked when artifact.json was read: it is safe as a path segment.
    let path = format!("/api/v1/artifacts/{}/bundle", artifact.id);
    let answer = client.block_on(client.post(&path, &body))?;
    match args.artifact.server.output {
        OutputFormat::Json => output::json(&answer),
        OutputFormat::Text => {
            output::line(&format!(
                "bundle of artifact {} ({count} files) stored",
                artifact.id
            ));
            print_auto_releases(&answer);
        }
    }
    Ok(())
}

/// One line per auto-release the server started for a pushed artifact or bundle.
fn print_auto_releases(answer: &Value) {
    for auto in answer
        .get("autoReleases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        output::line(&auto_release_line(auto));
    }
}

fn text(value: Option<String>) -> String {
    value.map(|v| v.trim().to_owned()).unwrap_or_default()
}

fn init(args: ArtifactInitArgs) -> anyhow::Result<()> {
    let artifact = Artifact::init(ArtifactInit {
        id: args.id.trim().to_owned(),
        service: args.service.trim().to_owned(),
        namespace: text(args.namespace),
        application: Repository {
            branch: text(args.branch),
            sha: text(args.sha),
            author_name: text(args.author_name),
            author_email: text(args.author_email),
            committer_name: text(args.committer_name),
            committer_email: text(args.committer_email),
            message: text(args.message),
            name: String::new(),
            url: text(args.url),
            provider: text(args.provider),
        },
        ci_job_url: text(args.ci_job_url),
        ci_start: jiff::Timestamp::now(),
    })
    .map_err(|e| anyhow!("artifact init: {e}"))?;
    write(&args.file, &artifact)
}

fn read(path: &Path) -> anyhow::Result<Artifact> {
    let json = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {} (create it with `tug artifact init`)",
            path.display()
        )
    })?;
    Artifact::from_json(&json).map_err(|e| anyhow!("{}: {e}", path.display()))
}

fn write(file: &ArtifactFileArg, artifact: &Artifact) -> anyhow::Result<()> {
    let json = artifact
        .to_json()
        .map_err(|e| anyhow!("{}: {e}", file.file.display()))?;
    std::fs::write(&file.file, &json)
        .with_context(|| format!("cannot write {}", file.file.display()))?;
    match file.output {
        OutputFormat::Text => output::line(&format!(
            "{}: artifact {} of service {} with {} stage(s)",
            file.file.display(),
            artifact.id,
            artifact.service,
            artifact.stages.len()
        )),
        OutputFormat::Json => {
            output::json(&serde_json::from_str::<Value>(&json).context("the artifact is not JSON")?)
        }
    }
    Ok(())
}

fn image(image: String, tag: String, digest: Option<String>) -> ImageData {
    ImageData {
        image: image.trim().to_owned(),
        tag: tag.trim().to_owned(),
        digest: digest
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty()),
        docker_version: String::new(),
    }
}

fn add(stage: ArtifactStage) -> anyhow::Result<()> {
    let (stage, file) = match stage {
        ArtifactStage::Build(a) => (Stage::build(image(a.image, a.tag, a.digest)), a.file),
        ArtifactStage::Push(a) => (Stage::push(image(a.image, a.tag, a.digest)), a.file),
        ArtifactStage::Test(a) => (
            Stage::test(TestData {
                url: text(a.url),
                results: TestResults {
                    passed: a.passed,
                    failed: a.failed,
                    skipped: a.skipped,
                },
            }),
            a.file,
        ),
        ArtifactStage::Scan(a) => (
            Stage::scan(ScanData {
                scanner: text(a.scanner),
                url: text(a.url),
                vulnerabilities: tug_release::artifact::Vulnerabilities {
                    high: a.high,
                    medium: a.medium,
                    low: a.low,
                },
            }),
            a.file,
        ),
        ArtifactStage::Chart(a) => (
            Stage::chart(ChartData {
                name: a.name,
                version: a.chart_version,
            }),
            a.file,
        ),
    };
    let mut artifact = read(&file.file)?;
    artifact
        .add_stage(stage)
        .map_err(|e| anyhow!("{}: {e}", file.file.display()))?;
    write(&file, &artifact)
}

fn push(args: &ArtifactPushArgs) -> anyhow::Result<()> {
    let artifact = read(&args.file)?;
    let json = artifact
        .to_json()
        .map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    let body: Value = serde_json::from_str(&json).context("the artifact is not JSON")?;
    let client = Client::new(&Endpoint::from(&args.server))?;
    // The server keeps one artifact per id and answers a second push of it with `created:
    // false`: safe to repeat.
    let request = Request::post("/api/v1/artifacts", &[], &body).repeatable();
    let answer = client.block_on(client.json(&request))?;
    match args.server.output {
        OutputFormat::Json => output::json(&answer),
        OutputFormat::Text => {
            let created = answer.get("created").and_then(Value::as_bool) == Some(true);
            output::line(&format!(
                "artifact {} of service {} {}",
                artifact.id,
                artifact.service,
                if created {
                    "registered"
                } else {
                    "already registered"
                }
            ));
            print_auto_releases(&answer);
        }
    }
    Ok(())
}

/// `auto-release to dev: queued (job …): message`.
fn auto_release_line(auto: &Value) -> String {
    let field = |name: &str| auto.get(name).and_then(Value::as_str).unwrap_or("");
    let job = auto
        .get("jobId")
        .and_then(Value::as_str)
        .map(|id| format!(" (job {id})"))
        .unwrap_or_default();
    let message = match field("message") {
        "" => String::new(),
        m => format!(": {m}"),
    };
    format!(
        "auto-release to {}: {}{job}{message}",
        field("environment"),
        field("status")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_bundle_is_read_per_environment_and_refuses_stray_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev/sub")).unwrap();
        std::fs::create_dir_all(dir.path().join("prod")).unwrap();
        std::fs::write(dir.path().join("dev/deploy.yaml"), "kind: Deployment\n").unwrap();
        std::fs::write(dir.path().join("dev/sub/svc.yaml"), "kind: Service\n").unwrap();
        std::fs::write(dir.path().join("prod/deploy.yaml"), "kind: Deployment\n").unwrap();
        let files = read_bundle(dir.path()).unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["dev/deploy.yaml", "dev/sub/svc.yaml", "prod/deploy.yaml"]
        );
        std::fs::write(dir.path().join("stray.yaml"), "x: 1\n").unwrap();
        let error = read_bundle(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("stray.yaml is not inside an environment directory"),
            "{error}"
        );
        std::fs::remove_file(dir.path().join("stray.yaml")).unwrap();
        std::fs::write(dir.path().join("dev/logo.png"), [0x89, 0x50, 0xff, 0xfe]).unwrap();
        let error = read_bundle(dir.path()).unwrap_err().to_string();
        assert!(error.contains("logo.png: not a UTF-8 text file"), "{error}");
    }

    #[test]
    fn an_auto_release_line_names_environment_status_and_job() {
        let line = auto_release_line(&json!({
            "environment": "dev", "status": "queued", "message": "releasing", "jobId": "j1"
        }));
        assert_eq!(line, "auto-release to dev: queued (job j1): releasing");
        let refused = auto_release_line(&json!({"environment": "prod", "status": "refused"}));
        assert_eq!(refused, "auto-release to prod: refused");
    }
}
