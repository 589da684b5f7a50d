//! `tug server` and `tug quickstart`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tug_server::Config;
use tug_server::telemetry::Tracing;

use crate::output;

/// Runs the server until SIGTERM or Ctrl-C; then stops accepting, lets the writers finish the
/// push in flight and exits. Queued jobs resume at the next start.
/// With `check`, only loads and validates the configuration.
pub(crate) fn run(config_path: &Path, check: bool) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var(name).ok();
    let config = Config::load(config_path, &env)?;
    if check {
        output::line(&format!("{}: configuration OK", config_path.display()));
        return Ok(ExitCode::SUCCESS);
    }
    serve(config)
}

fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The trace exporter's gRPC channel runs on the runtime.
    let traces = match &config.trace_export {
        Some(export) => {
            let _entered = runtime.enter();
            tug_server::otlp::start(export)?
        }
        None => Tracing::off(),
    };
    tug_server::logging::init(&config.log, &traces)?;
    if let Some(export) = &config.trace_export {
        // The endpoint only: header values are secrets.
        tracing::info!(endpoint = %export.endpoint, service = %export.service_name, "exporting traces over OTLP/gRPC");
    }
    runtime.block_on(async move {
        let served = async {
            let running = tug_server::start(config).await?;
            wait_for_signal().await?;
            tracing::info!("shutting down: finishing the push in flight");
            running.shutdown().await?;
            tracing::info!("stopped");
            anyhow::Ok(())
        }
        .await;
        // The spans of the last requests and pushes are still buffered: send them, whatever
        // the outcome.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        served.map(|()| ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

const SAMPLE_KUSTOMIZATION: &str = r#"# Managed by tug: CI bumps newTag through `tug deploy` or POST /api/v1/deploy.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
images:
  # application container
  - name: registry.example.com/demo/app
    newTag: "1.0.0"  # release tag
"#;

const SAMPLE_DEPLOYMENT: &str = r"apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo
spec:
  replicas: 1
  selector:
    matchLabels:
      app: demo
  template:
    metadata:
      labels:
        app: demo
    spec:
      containers:
        - name: app
          image: registry.example.com/demo/app
";

/// Creates a sample GitOps repository (a bare repository on disk, reached over file://), a
/// configuration with a fresh token, and runs the server.
pub(crate) fn quickstart(dir: Option<&Path>, http: Option<String>) -> anyhow::Result<ExitCode> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => default_quickstart_dir(),
    };
    let dir = dir.as_path();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let remote = dir.join("gitops.git");
    if !remote.join("HEAD").exists() {
        create_sample_repository(&dir, &remote)?;
    }
    let config_path = dir.join("tug.yaml");
    let token_path = dir.join("token");
    if !config_path.exists() {
        let token = random_token()?;
        let sha = hex::encode(Sha256::digest(token.as_bytes()));
        let url = format!("file://{}", remote.display());
        let mut yaml = Config::sample(&tug_server::config::Sample {
            repository_name: "gitops",
            repository_url: &url,
            token_sha256: Some(&sha),
        });
        if let Some(addr) = &http {
            yaml = yaml.replace(
                &format!("http: \"{}\"", default_http()),
                &format!("http: \"{addr}\""),
            );
        }
        yaml.push_str(QUICKSTART_RELEASES);
        std::fs::write(&config_path, yaml)?;
        write_private(&token_path, &token)?;
        // Nothing in here belongs in a checkout the quick start was pointed into.
        std::fs::write(dir.join(".gitignore"), "*\n")?;
    }
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("cannot read {}", token_path.display()))?;
    let env = |name: &str| std::env::var(name).ok();
    let config = Config::load(&config_path, &env)?;
    let http_addr = config.listen.http;
    let url = format!("file://{}", remote.display());
    output::line(&format!(
        r#"tug quickstart
  GitOps repository: {url}  (clone it to see tug's commits)
  configuration:     {config}
  token:             stored in {token_file}

Try, in another terminal:

  export TUG_TOKEN=$(cat {token_file})
  curl --no-buffer -X POST http://{http_addr}/api/v1/deploy \
    -H "Authorization: Bearer $TUG_TOKEN" -H "Content-Type: application/json" \
    -d '{{"commitSpec":{{"CommitMessage":"update image tag to v1.2.3"}},
         "deploySpecs":[{{"url":"{url}","updates":[{{"branch":"main","paths":[
           {{"path":"apps/demo/dev","kustomize":{{"images":[
             {{"name":"registry.example.com/demo/app","newTag":"v1.2.3"}}]}}}}]}}]}}]}}'

  {tug} deploy --server http://{http_addr} --repository gitops --branch main \
    --path apps/demo/dev --image registry.example.com/demo/app:v1.2.4

Releases (service demo, environments dev -> prod), from a directory of your own:

  export TUG_SERVER=http://{http_addr}
  {tug} artifact init --service demo --id demo-1.3.0 --branch main --sha 0a1b2c3 -m "first release"
  {tug} artifact add push --image registry.example.com/demo/app --tag 1.3.0
  {tug} artifact push
  {tug} release --service demo --env dev --artifact demo-1.3.0
  {tug} promote --service demo --env prod
  {tug} artifact init --service demo --id demo-1.4.0 --branch main --sha 1b2c3d4 -m "second release"
  {tug} artifact add push --image registry.example.com/demo/app --tag 1.4.0
  {tug} artifact push
  {tug} release --service demo --env dev,prod --artifact demo-1.4.0
  {tug} rollback --service demo --env prod
  {tug} status --service demo
  {tug} unpin --service demo --env prod

  git --git-dir {remote} log --format='%h %s%n%b' -3
"#,
        config = config_path.display(),
        token_file = token_path.display(),
        remote = remote.display(),
        tug = tug_command(),
    ));
    let _ = token;
    serve(config)
}

/// The releases half of the quick start: the sample repository's `main` is `dev`, `prod` comes
/// after it, and the service `demo` lives in `apps/demo/{env}`.
const QUICKSTART_RELEASES: &str = r#"
# Releases: environments in promotion order and the services released to them.
environments:
  - { name: dev, repository: gitops, branch: main }
  - { name: prod, after: dev }
services:
  - name: demo
    path: "apps/{service}/{env}"
    edit: { kind: kustomize }
"#;

/// `tug` when the `tug` on PATH is this binary; else this binary's path, so the printed
/// commands run as they are (after `cargo run`, `tug` is usually not on PATH).
fn tug_command() -> String {
    let Ok(me) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "tug".to_owned();
    };
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::canonicalize(dir.join("tug")).is_ok_and(|found| found == me))
    });
    if on_path {
        "tug".to_owned()
    } else {
        me.display().to_string()
    }
}

/// `$XDG_DATA_HOME/tug/quickstart` (`~/.local/share/tug/quickstart`): outside any checkout, so
/// running the quick start from a clone of tug leaves its `git status` clean.
fn default_quickstart_dir() -> PathBuf {
    let data_home = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".local/share"))
        })
        .unwrap_or_else(std::env::temp_dir);
    data_home.join("tug/quickstart")
}

fn default_http() -> &'static str {
    "127.0.0.1:12011"
}

fn create_sample_repository(dir: &Path, remote: &Path) -> anyhow::Result<()> {
    let work = tempfile::Builder::new()
        .prefix("tug-quickstart-")
        .tempdir_in(dir)?;
    let w = work.path();
    for env in ["dev", "prod"] {
        let d = w.join("apps/demo").join(env);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("kustomization.yaml"), SAMPLE_KUSTOMIZATION)?;
        std::fs::write(d.join("deployment.yaml"), SAMPLE_DEPLOYMENT)?;
    }
    std::fs::write(
        w.join("README.md"),
        "# GitOps manifests\n\nOne directory per service under apps/, one overlay per environment.\n",
    )?;
    git(w, &["init", "-q", "-b", "main"])?;
    git(w, &["add", "-A"])?;
    git(w, &["commit", "-q", "-m", "Initial manifests"])?;
    git(
        dir,
        &[
            "clone",
            "-q",
            "--bare",
            &w.display().to_string(),
            &remote.display().to_string(),
        ],
    )?;
    Ok(())
}

fn git(cwd: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=tug quickstart",
            "-c",
            "user.email=quickstart@tug.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(cwd)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .context("cannot run git: is it installed?")?;
    if !status.success() {
        bail!("git {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    let mut f = std::fs::File::open("/dev/urandom").context("cannot read /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes)?;
    Ok(format!("tug_{}", hex::encode(bytes)))
}

fn write_private(path: &PathBuf, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut f, content.as_bytes())?;
    Ok(())
}
