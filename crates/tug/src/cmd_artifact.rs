//! `tug artifact init|add|push`: CI writes `artifact.json` step by step, then registers it.

use std::path::Path;

use anyhow::{Context, anyhow};
use serde_json::Value;
use tug_release::artifact::{ImageData, Repository, ScanData, TestData, TestResults};
use tug_release::{Artifact, ArtifactInit, Stage};

use crate::cli::{
    ArtifactCommand, ArtifactFileArg, ArtifactInitArgs, ArtifactPushArgs, ArtifactStage,
    OutputFormat,
};
use crate::client::{ReleaseClient, block_on};
use crate::output;

pub fn run(cmd: ArtifactCommand) -> anyhow::Result<()> {
    match cmd {
        ArtifactCommand::Init(args) => init(*args),
        ArtifactCommand::Add(stage) => add(stage),
        ArtifactCommand::Push(args) => push(&args),
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
    let client = ReleaseClient::new(&args.server)?;
    let answer = block_on(client.post("/api/v1/artifacts", &body))?;
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
            for auto in answer
                .get("autoReleases")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                output::line(&auto_release_line(auto));
            }
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
    fn an_auto_release_line_names_environment_status_and_job() {
        let line = auto_release_line(&json!({
            "environment": "dev", "status": "queued", "message": "releasing", "jobId": "j1"
        }));
        assert_eq!(line, "auto-release to dev: queued (job j1): releasing");
        let refused = auto_release_line(&json!({"environment": "prod", "status": "refused"}));
        assert_eq!(refused, "auto-release to prod: refused");
    }
}
