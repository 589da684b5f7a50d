//! Every flag of every subcommand, in one place: completions are generated from these definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tug",
    version,
    about = "GitOps delivery: byte-exact manifest edits, grouped pushes, releases",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Edit one manifest file in place, byte-exactly.
    #[command(subcommand)]
    Edit(EditCommand),
    /// Apply deploy specs to a local checkout (--dir) or to the remote repositories (--push).
    Apply(ApplyArgs),
    /// Run the server: deploy requests over REST and gRPC, one writer per repository branch.
    Server {
        /// Configuration file (YAML); `TUG_*` variables override its scalars.
        #[arg(long, short = 'c', env = "TUG_CONFIG", default_value = "tug.yaml")]
        config: PathBuf,
        /// Load and validate the configuration, print `configuration OK`, and exit without
        /// serving.
        #[arg(long)]
        check: bool,
    },
    /// Create a sample GitOps repository and configuration in DIR, then run the server on it.
    Quickstart {
        /// Where the sample repository, configuration, token and data go (created when
        /// missing); outside any checkout by default, so `git status` stays clean.
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// HTTP listen address (the default is the Delivery server's 127.0.0.1:12011).
        #[arg(long)]
        http: Option<String>,
    },
    /// Ask a tug server to deploy (the CI client): send deploy specs, stream the progress to
    /// stderr, print the commit of each repository branch. Every flag also reads a `TUG_*`
    /// variable; the Delivery client's `DELIVERY_*` variable each replaces is named in its help.
    /// Exit status: 0 deployed, 1 the job failed or its request was invalid, 2 usage, transport
    /// or authentication.
    Deploy(Box<DeployArgs>),
    /// Artifacts from CI: write artifact.json (init, add) and register it with the server (push).
    #[command(subcommand)]
    Artifact(ArtifactCommand),
    /// Release an artifact (by id, or the newest of a branch) to one or more environments.
    Release(ReleaseArgs),
    /// Release what runs in the previous environment of the promotion order (or --from-env).
    Promote(PromoteArgs),
    /// Go back to the previous release of an environment (or --artifact); pins the environment
    /// against auto-releases until a release, a promotion or `tug unpin`.
    Rollback(RollbackArgs),
    /// Lift the rollback pin of an environment, so auto-releases resume.
    Unpin(UnpinArgs),
    /// What runs in each environment of a service.
    Status(StatusArgs),
    /// Release history and registered artifacts.
    #[command(subcommand)]
    Describe(DescribeCommand),
    /// List, apply and delete the release policies of a service.
    Policy(PolicyArgs),
    /// Rebuild the server's release index from git history.
    Reindex(ReindexArgs),
    /// The server's audit trail: who deployed, released, pushed or changed what, accepted or
    /// refused, newest first.
    Audit(AuditArgs),
    /// Print a shell completion script.
    Completion {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum OutputFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document on stdout (camelCase names); a failure is `{"error": {"code",
    /// "message"}}`.
    Json,
}

/// Whether the raw arguments (or `TUG_OUTPUT`) ask for JSON, for errors found before the
/// arguments could be parsed.
pub(crate) fn asks_for_json(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    let flag = args
        .windows(2)
        .any(|w| (w[0] == "-o" || w[0] == "--output") && w[1] == "json")
        || args
            .iter()
            .any(|a| a == "--output=json" || a == "-ojson" || a == "-o=json");
    flag || std::env::var("TUG_OUTPUT").is_ok_and(|v| v == "json")
}

impl Command {
    /// The output format the command was asked for.
    pub(crate) fn output_format(&self) -> OutputFormat {
        match self {
            Command::Edit(
                EditCommand::Image { common, .. }
                | EditCommand::HelmImage { common, .. }
                | EditCommand::Set { common, .. }
                | EditCommand::Chart { common, .. }
                | EditCommand::Redeploy { common, .. },
            ) => common.output,
            Command::Apply(a) => a.output,
            Command::Deploy(a) => a.output,
            Command::Artifact(a) => match a {
                ArtifactCommand::Init(a) => a.file.output,
                ArtifactCommand::Add(ArtifactStage::Build(s) | ArtifactStage::Push(s)) => {
                    s.file.output
                }
                ArtifactCommand::Add(ArtifactStage::Test(s)) => s.file.output,
                ArtifactCommand::Add(ArtifactStage::Scan(s)) => s.file.output,
                ArtifactCommand::Add(ArtifactStage::Chart(s)) => s.file.output,
                ArtifactCommand::Push(a) => a.server.output,
                ArtifactCommand::Bundle(a) => a.artifact.server.output,
            },
            Command::Release(a) => a.server.output,
            Command::Promote(a) => a.server.output,
            Command::Rollback(a) => a.server.output,
            Command::Unpin(a) => a.server.output,
            Command::Status(a) => a.server.output,
            Command::Describe(
                DescribeCommand::Release { server, .. } | DescribeCommand::Artifact { server, .. },
            ) => server.output,
            Command::Policy(a) => a.server.output,
            Command::Reindex(a) => a.server.output,
            Command::Audit(a) => a.server.output,
            Command::Server { .. } | Command::Quickstart { .. } | Command::Completion { .. } => {
                OutputFormat::Text
            }
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct EditCommon {
    /// Print the change as a unified diff instead of writing the file.
    #[arg(long)]
    pub dry_run: bool,
    /// How to print the result.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EditCommand {
    /// Set an image: kustomize `images` in a kustomization (file or directory), else every
    /// matching container of a manifest file. SPEC is NAME[=NEWNAME][:TAG][@DIGEST].
    Image {
        /// A kustomization file, a directory holding one, or a manifest file.
        path: PathBuf,
        /// NAME[=NEWNAME][:TAG][@DIGEST]. In a kustomization NAME is the `images` entry's name;
        /// in a manifest it is the image repository of the containers to change (their image
        /// without tag or digest; NEWNAME when they were renamed already), not a container name.
        spec: String,
        #[command(flatten)]
        common: EditCommon,
    },
    /// Set the image of a Helm values file (`image: {repository, tag}` or `image: repo:tag`).
    /// SPEC is NAME[=NEWNAME][:TAG][@DIGEST]; NAME must match the current repository.
    HelmImage {
        /// The Helm values file.
        file: PathBuf,
        /// NAME[=NEWNAME][:TAG][@DIGEST]; NAME must match the current repository.
        spec: String,
        /// Path of the image node.
        #[arg(long, default_value = ".image")]
        key: String,
        #[command(flatten)]
        common: EditCommon,
    },
    /// Set a value at a YAML path (`.image.tag`, `.spec.template.spec.containers[name=app].image`).
    Set {
        /// The YAML file.
        file: PathBuf,
        /// The path to set, in yq syntax (`.image.tag`, `.a[0].b`, `.list[name=x].v`).
        key: String,
        /// The new value.
        value: String,
        /// How VALUE is typed (YAML 1.2 core schema, written so YAML 1.1 readers agree).
        ///
        /// auto: `null`, `Null`, `NULL` and `~` become null, written `null`; `true`, `True`,
        /// `TRUE`, `false`, `False`, `FALSE` a bool, as given; `12`, `-3`, `+4` an integer
        /// without leading zeros (`012` is written `12`); `0x1A` an integer, as given; `0o17`
        /// an integer, written `15`; `1.5`, `1e3`, `.5`, `.inf`, `-.Inf`, `.nan` a float, as
        /// given; anything else (`yes`, `on`, `1_000`, `1:20`, `2026-01-01`, `<<`) a string,
        /// quoted when a YAML reader would read another type. An existing string stays a
        /// string, and a custom tag (`!cat`) is kept. string: always a string. number, bool,
        /// null: VALUE must be of that type.
        #[arg(long = "type", value_enum, default_value_t = ValueTypeArg::Auto)]
        value_type: ValueTypeArg,
        #[command(flatten)]
        common: EditCommon,
    },
    /// Set the version of a Helm chart: a kustomization's `helmCharts` entry, a Chart.yaml
    /// dependency or a Flux HelmRelease's `spec.chart.spec.version`. Exactly one must match.
    Chart {
        /// A kustomization, Chart.yaml or manifest file; or a directory, in which exactly one of
        /// these files must pin the chart.
        path: PathBuf,
        /// The chart's name (`helmCharts[].name`, `dependencies[].name`,
        /// `spec.chart.spec.chart`).
        name: String,
        /// The version to pin (`1.2.3`, or a range such as `>=1.2.0 <2` where the reader takes
        /// one); always written as a string, quoted when YAML would read a number.
        #[arg(value_name = "VERSION")]
        chart_version: String,
        /// Only the entry from this repository, as the file writes it: `helmCharts[].repo`,
        /// `dependencies[].repository`, or a HelmRelease's `spec.chart.spec.sourceRef.name`.
        #[arg(long)]
        repository: Option<String>,
        #[command(flatten)]
        common: EditCommon,
    },
    /// Bump the pod-template annotation so pods roll even though the image did not change.
    Redeploy {
        /// The manifest file holding the workloads.
        file: PathBuf,
        /// Only the workload with this metadata.name.
        #[arg(long)]
        workload: Option<String>,
        /// The pod-template annotation to bump.
        #[arg(long, default_value = tug_spec::REDEPLOY_ANNOTATION)]
        annotation: String,
        /// The annotation value; defaults to the current time (RFC 3339).
        #[arg(long)]
        value: Option<String>,
        #[command(flatten)]
        common: EditCommon,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ValueTypeArg {
    /// An existing string stays a string; otherwise numbers, booleans and null are detected.
    Auto,
    /// Always a string (quoted when needed).
    String,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
}

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// Spec file (YAML or JSON; `-` for standard input).
    pub specs: PathBuf,
    /// Edit this checkout instead of pushing.
    #[arg(long, conflicts_with = "push", required_unless_present = "push")]
    pub dir: Option<PathBuf>,
    /// Clone or fetch each repository of the specs, commit and push.
    #[arg(long)]
    pub push: bool,
    /// Only the specs of this repository URL.
    #[arg(long)]
    pub url: Option<String>,
    /// Only the updates of this branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// Print a unified diff and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How to print the result.
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Commit message title (a summary of the edits by default).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// The commit author's name.
    #[arg(long, env = "TUG_AUTHOR_NAME", default_value = "tug")]
    pub author_name: String,
    /// The commit author's email.
    #[arg(long, env = "TUG_AUTHOR_EMAIL", default_value = "tug@localhost")]
    pub author_email: String,
    /// Commit even when nothing changes.
    #[arg(long)]
    pub allow_empty: bool,
    /// Where bare mirrors are kept between runs.
    #[arg(long, env = "TUG_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// HTTPS user name; the password or token is read from TUG_GIT_PASSWORD, never from a flag.
    #[arg(long, env = "TUG_GIT_USERNAME")]
    pub http_username: Option<String>,
    /// SSH private key for ssh:// and scp-like URLs.
    #[arg(long, env = "TUG_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file for SSH (host key checking always stays on).
    #[arg(long, env = "TUG_SSH_KNOWN_HOSTS")]
    pub known_hosts: Option<PathBuf>,
    /// Value written by redeploy edits (defaults to the current time).
    #[arg(long)]
    pub redeploy_value: Option<String>,
}

/// `tug deploy`. The token is read from the `TUG_TOKEN` variable or from `--token-file`, never from
/// a flag value: the command line of a process is visible to every user of the machine.
#[derive(Debug, Args)]
#[command(after_help = DEPLOY_AFTER_HELP)]
pub(crate) struct DeployArgs {
    /// The server's REST URL [default: http://127.0.0.1:12011] (Delivery: DELIVERY_SERVER_ADDR
    /// and DELIVERY_SERVER_PORT; tug speaks REST on the HTTP port, 12011, which passes proxies
    /// more easily than gRPC on 12010).
    #[arg(long, env = "TUG_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Read the token from this file instead of the TUG_TOKEN variable.
    #[arg(long, env = "TUG_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// A PEM certificate to trust as a root for an https server, in addition to the usual
    /// roots (Delivery: DELIVERY_SERVER_ROOT_CERT).
    #[arg(long, env = "TUG_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Deploy specs file, YAML or JSON: a list of specs or one spec; `-` reads standard input
    /// (Delivery: DELIVERY_SPECS_FILE).
    #[arg(long, env = "TUG_SPECS_FILE", value_name = "PATH", conflicts_with_all = ["specs", "repository", "url"])]
    pub specs_file: Option<PathBuf>,
    /// Deploy specs as JSON or YAML text (Delivery: DELIVERY_SPECS).
    #[arg(long, env = "TUG_SPECS", value_name = "SPECS", conflicts_with_all = ["repository", "url"])]
    pub specs: Option<String>,
    /// Shorthand for kustomize image updates and chart version bumps in one path: the
    /// repository's name in the server's configuration (with --branch, --path and --image or
    /// --chart).
    #[arg(
        long,
        env = "TUG_REPOSITORY",
        value_name = "NAME",
        conflicts_with = "url"
    )]
    pub repository: Option<String>,
    /// Shorthand: the repository's URL as configured on the server, instead of --repository.
    #[arg(long, env = "TUG_REPOSITORY_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Shorthand: the manifest repository's branch to commit to.
    #[arg(long, env = "TUG_BRANCH", value_name = "BRANCH")]
    pub branch: Option<String>,
    /// Shorthand: the directory holding the kustomization (or the chart files).
    #[arg(long, env = "TUG_PATH", value_name = "PATH")]
    pub path: Option<String>,
    /// Shorthand: the image to set, NAME[=NEWNAME][:TAG][@DIGEST]; repeat (or separate with
    /// commas) for several images.
    #[arg(long, env = "TUG_IMAGE", value_name = "IMAGE", value_delimiter = ',')]
    pub image: Vec<String>,
    /// Shorthand: a chart version to pin, NAME=VERSION, in the one file of the path that pins
    /// the chart (its kustomization's helmCharts, Chart.yaml dependencies or a Flux
    /// HelmRelease); repeat for several charts.
    #[arg(long, env = "TUG_CHART", value_name = "NAME=VERSION")]
    pub chart: Vec<String>,
    /// The source project that produced the artifact; recorded as the Source-Project trailer
    /// (Delivery: DELIVERY_COMMIT_PROJECT).
    #[arg(long, env = "TUG_COMMIT_PROJECT")]
    pub project: Option<String>,
    /// The source branch (Delivery: DELIVERY_COMMIT_BRANCH).
    #[arg(long, env = "TUG_COMMIT_BRANCH", value_name = "BRANCH")]
    pub source_branch: Option<String>,
    /// The source tag; named in the title instead of the branch when both are given
    /// (Delivery: DELIVERY_COMMIT_TAG).
    #[arg(long, env = "TUG_COMMIT_TAG", value_name = "TAG")]
    pub source_tag: Option<String>,
    /// The source commit (Delivery: DELIVERY_COMMIT_SHORT_SHA).
    #[arg(long, env = "TUG_COMMIT_SHORT_SHA", value_name = "SHA")]
    pub short_sha: Option<String>,
    /// The commit message body under the title `deploy <project> <branch|tag>@<sha>`; the title
    /// itself when no source is given (Delivery: DELIVERY_COMMIT_MESSAGE).
    #[arg(long, short = 'm', env = "TUG_COMMIT_MESSAGE")]
    pub message: Option<String>,
    /// The commit author's name; the token's name by default (Delivery:
    /// DELIVERY_COMMIT_USER_NAME).
    #[arg(long, env = "TUG_COMMIT_USER_NAME", value_name = "NAME")]
    pub user_name: Option<String>,
    /// The commit author's email (Delivery: DELIVERY_COMMIT_USER_EMAIL).
    #[arg(long, env = "TUG_COMMIT_USER_EMAIL", value_name = "EMAIL")]
    pub user_email: Option<String>,
    /// Sending a key again returns the job stored under it instead of deploying twice. By
    /// default derived from --project, --short-sha and the specs when both are given, so a
    /// retried CI job never deploys twice.
    #[arg(long, env = "TUG_IDEMPOTENCY_KEY", value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Commit even when the files already hold the requested state.
    #[arg(long, env = "TUG_ALLOW_EMPTY")]
    pub allow_empty: bool,
    /// Refuse the deploy (nothing is pushed) when an edit would only add — a new kustomize
    /// `images:` entry, a new key — instead of changing what exists: a typo in a name or key.
    /// Without it the server's `deploy.strict` decides (off: such a deploy lands with a
    /// `[WARN]` line).
    #[arg(long, env = "TUG_STRICT")]
    pub strict: bool,
    /// An extra line for the notifications the server sends about this deploy.
    #[arg(long, env = "TUG_NOTIFY_MESSAGE", value_name = "TEXT")]
    pub notify_message: Option<String>,
    /// Ask the server to send no notification about this deploy.
    #[arg(long, env = "TUG_NO_NOTIFY")]
    pub no_notify: bool,
    /// Give up waiting after this many seconds [default: 300]; the job goes on on the server
    /// (Delivery: DELIVERY_TIMEOUT, which limited the connection only).
    #[arg(long, env = "TUG_TIMEOUT", value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Return once the server has stored the request; print the job id.
    #[arg(long, env = "TUG_NO_WAIT")]
    pub no_wait: bool,
    /// Print what the deploy would change — a diff per file and the commit message, computed by
    /// the server on the current tip of each branch with the same checks as a real deploy —
    /// and store and push nothing. Exits 1 when the deploy would fail.
    #[arg(long, env = "TUG_DRY_RUN", conflicts_with = "no_wait")]
    pub dry_run: bool,
    /// How to print the result; `json` prints the server's final result object.
    #[arg(long, short = 'o', env = "TUG_OUTPUT", value_enum, default_value_t)]
    pub output: OutputFormat,
}

const DEPLOY_AFTER_HELP: &str = "\
The token: TUG_TOKEN, or the file named by --token-file (TUG_TOKEN_FILE); never a flag value.

From the Delivery client: each DELIVERY_* variable is read when its TUG_* variable and flag
are not given.
  DELIVERY_SERVER_ADDR, _PORT         TUG_SERVER (a URL; tug's REST port is 12011)
  DELIVERY_SERVER_ROOT_CERT           TUG_CA_CERT
  DELIVERY_SPECS, _SPECS_FILE         TUG_SPECS, TUG_SPECS_FILE
  DELIVERY_COMMIT_PROJECT             TUG_COMMIT_PROJECT
  DELIVERY_COMMIT_BRANCH, _TAG        TUG_COMMIT_BRANCH, TUG_COMMIT_TAG
  DELIVERY_COMMIT_SHORT_SHA           TUG_COMMIT_SHORT_SHA
  DELIVERY_COMMIT_MESSAGE             TUG_COMMIT_MESSAGE
  DELIVERY_COMMIT_USER_NAME, _EMAIL   TUG_COMMIT_USER_NAME, TUG_COMMIT_USER_EMAIL
  DELIVERY_TIMEOUT                    TUG_TIMEOUT (the whole wait, not only the connection)
  DELIVERY_NOTIFY_SPEC                TUG_NOTIFY_MESSAGE, TUG_NO_NOTIFY (sinks are the server's;
                                      not read)

A 429 or 503 answer with Retry-After is waited out and the request sent again (at most 5
times, within --timeout) when that cannot deploy twice: a dry run, or a request with an
idempotency key (--idempotency-key, or the one derived from --project and --short-sha).

Exit status: 0 deployed, 1 the job failed or its request was invalid, 2 usage, transport,
authentication or a wait that timed out.";

/// How the release commands reach the server. The token is read from `TUG_TOKEN` or from
/// `--token-file`, never from a flag value.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The server's REST URL.
    #[arg(
        long,
        env = "TUG_SERVER",
        default_value = "http://127.0.0.1:12011",
        global = true
    )]
    pub server: String,
    /// Read the token from this file instead of the TUG_TOKEN variable.
    #[arg(long, env = "TUG_TOKEN_FILE", value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,
    /// A PEM certificate to trust as a root for an https server.
    #[arg(long, env = "TUG_CA_CERT", value_name = "PEM", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// How to print the result.
    #[arg(
        long,
        short = 'o',
        env = "TUG_OUTPUT",
        value_enum,
        default_value_t,
        global = true
    )]
    pub output: OutputFormat,
}

/// Where `artifact.json` is read and written.
#[derive(Debug, Args)]
pub(crate) struct ArtifactFileArg {
    /// The artifact file.
    #[arg(
        long,
        short = 'f',
        env = "TUG_ARTIFACT_FILE",
        default_value = "artifact.json",
        value_name = "PATH"
    )]
    pub file: PathBuf,
    /// How to print the result.
    #[arg(long, short = 'o', env = "TUG_OUTPUT", value_enum, default_value_t)]
    pub output: OutputFormat,
}

const ARTIFACT_AFTER_HELP: &str = "\
Every flag of `tug artifact init` also reads a variable, for CI jobs:
  --service TUG_SERVICE, --id TUG_ARTIFACT_ID, --namespace TUG_NAMESPACE,
  --branch TUG_COMMIT_BRANCH, --sha TUG_COMMIT_SHA, --message TUG_COMMIT_MESSAGE,
  --author-name/-email TUG_COMMIT_AUTHOR_NAME/_EMAIL,
  --committer-name/-email TUG_COMMIT_COMMITTER_NAME/_EMAIL,
  --url TUG_COMMIT_URL, --provider TUG_COMMIT_PROVIDER, --ci-job-url TUG_CI_JOB_URL;
--file of every artifact command reads TUG_ARTIFACT_FILE.";

#[derive(Debug, Subcommand)]
#[command(after_help = ARTIFACT_AFTER_HELP)]
pub(crate) enum ArtifactCommand {
    /// Write a new artifact.json (no stages yet), replacing any file there.
    Init(Box<ArtifactInitArgs>),
    /// Add a stage to artifact.json (replacing a stage of the same kind).
    #[command(subcommand)]
    Add(ArtifactStage),
    /// Register artifact.json with the server; prints the auto-releases it started.
    Push(ArtifactPushArgs),
    /// Upload rendered manifests for copy-mode releases: DIR holds one directory per environment
    /// (DIR/dev/…, DIR/prod/…); the artifact must be registered first.
    Bundle(ArtifactBundleArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ArtifactBundleArgs {
    /// The directory holding one subdirectory of manifests per environment.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The artifact (its id and service) the manifests belong to.
    #[command(flatten)]
    pub artifact: ArtifactPushArgs,
}

#[derive(Debug, Args)]
#[command(after_help = ARTIFACT_AFTER_HELP)]
pub(crate) struct ArtifactInitArgs {
    /// The service.
    #[arg(long, env = "TUG_SERVICE")]
    pub service: String,
    /// The artifact id, unique per service (the image tag is a good choice).
    #[arg(long, env = "TUG_ARTIFACT_ID")]
    pub id: String,
    /// Kubernetes namespace; the environment's name when absent.
    #[arg(long, env = "TUG_NAMESPACE")]
    pub namespace: Option<String>,
    /// The source branch the artifact was built from.
    #[arg(long, env = "TUG_COMMIT_BRANCH")]
    pub branch: Option<String>,
    /// The source commit the artifact was built from.
    #[arg(long, env = "TUG_COMMIT_SHA")]
    pub sha: Option<String>,
    /// The source commit's author name.
    #[arg(long, env = "TUG_COMMIT_AUTHOR_NAME")]
    pub author_name: Option<String>,
    /// The source commit's author email.
    #[arg(long, env = "TUG_COMMIT_AUTHOR_EMAIL")]
    pub author_email: Option<String>,
    /// The source commit's committer name.
    #[arg(long, env = "TUG_COMMIT_COMMITTER_NAME")]
    pub committer_name: Option<String>,
    /// The source commit's committer email.
    #[arg(long, env = "TUG_COMMIT_COMMITTER_EMAIL")]
    pub committer_email: Option<String>,
    /// The source commit's message.
    #[arg(long, short = 'm', env = "TUG_COMMIT_MESSAGE")]
    pub message: Option<String>,
    /// A link to the source commit.
    #[arg(long, env = "TUG_COMMIT_URL")]
    pub url: Option<String>,
    /// Where the source lives (`GitHub`, `GitLab` …).
    #[arg(long, env = "TUG_COMMIT_PROVIDER")]
    pub provider: Option<String>,
    /// A link to the CI job that built the artifact.
    #[arg(long, env = "TUG_CI_JOB_URL")]
    pub ci_job_url: Option<String>,
    #[command(flatten)]
    pub file: ArtifactFileArg,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactStage {
    /// The image CI built.
    Build(ImageStageArgs),
    /// The image CI pushed (what releases set).
    Push(ImageStageArgs),
    /// Test results.
    Test(TestStageArgs),
    /// Vulnerability counts of an image scan.
    Scan(ScanStageArgs),
    /// The Helm chart version CI published (what services with `edit: {kind: chart}` release).
    Chart(ChartStageArgs),
}

#[derive(Debug, Args)]
#[command(disable_version_flag = true)]
pub(crate) struct ChartStageArgs {
    /// The chart's name, as the manifests name it (`helmCharts[].name`,
    /// `dependencies[].name`, a HelmRelease's `spec.chart.spec.chart`).
    #[arg(long)]
    pub name: String,
    /// The published chart version.
    #[arg(long = "version", id = "chart_version", value_name = "VERSION")]
    pub chart_version: String,
    #[command(flatten)]
    pub file: ArtifactFileArg,
}

#[derive(Debug, Args)]
pub(crate) struct ImageStageArgs {
    /// Image repository without tag, e.g. `registry.example.com/shop/api`.
    #[arg(long)]
    pub image: String,
    /// The image tag.
    #[arg(long)]
    pub tag: String,
    /// Content digest, `sha256:…`.
    #[arg(long)]
    pub digest: Option<String>,
    #[command(flatten)]
    pub file: ArtifactFileArg,
}

#[derive(Debug, Args)]
pub(crate) struct TestStageArgs {
    /// How many tests passed.
    #[arg(long)]
    pub passed: u64,
    /// How many tests failed.
    #[arg(long)]
    pub failed: u64,
    /// How many tests were skipped.
    #[arg(long, default_value_t = 0)]
    pub skipped: u64,
    /// A link to the test report.
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub file: ArtifactFileArg,
}

#[derive(Debug, Args)]
pub(crate) struct ScanStageArgs {
    /// High-severity findings.
    #[arg(long)]
    pub high: u64,
    /// Medium-severity findings.
    #[arg(long)]
    pub medium: u64,
    /// Low-severity findings.
    #[arg(long)]
    pub low: u64,
    /// The scanner (`trivy`, `grype` …).
    #[arg(long)]
    pub scanner: Option<String>,
    /// A link to the scan report.
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub file: ArtifactFileArg,
}

#[derive(Debug, Args)]
pub(crate) struct ArtifactPushArgs {
    /// The artifact file.
    #[arg(
        long,
        short = 'f',
        env = "TUG_ARTIFACT_FILE",
        default_value = "artifact.json",
        value_name = "PATH"
    )]
    pub file: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["artifact", "branch"]))]
pub(crate) struct ReleaseArgs {
    /// The service.
    #[arg(long, env = "TUG_SERVICE")]
    pub service: String,
    /// The environments to release to, comma separated or repeated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub env: Vec<String>,
    /// The artifact id to release.
    #[arg(long)]
    pub artifact: Option<String>,
    /// Release the newest artifact of this source branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// Return once the server has stored the release; print the jobs.
    #[arg(long)]
    pub no_wait: bool,
    /// Show what would be committed in each environment (commit message and a diff per file),
    /// computed by the server on the current tips; nothing is stored or pushed.
    #[arg(long, conflicts_with = "no_wait")]
    pub dry_run: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PromoteArgs {
    /// The service.
    #[arg(long, env = "TUG_SERVICE")]
    pub service: String,
    /// The environments to promote to, comma separated or repeated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub env: Vec<String>,
    /// Promote from this environment instead of the one before --env in the promotion order.
    #[arg(long)]
    pub from_env: Option<String>,
    /// Return once the server has stored the request; print the jobs.
    #[arg(long)]
    pub no_wait: bool,
    /// Show what would be committed in each environment (commit message and a diff per file),
    /// computed by the server on the current tips; nothing is stored or pushed.
    #[arg(long, conflicts_with = "no_wait")]
    pub dry_run: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The service.
    #[arg(long, env = "TUG_SERVICE")]
    pub service: String,
    /// The environment to roll back.
    #[arg(long)]
    pub env: String,
    /// The artifact to go back to. Without it, a terminal offers the recent releases to pick
    /// from; otherwise the previous release is used.
    #[arg(long)]
    pub artifact: Option<String>,
    /// Return once the server has stored the request; print the jobs.
    #[arg(long)]
    pub no_wait: bool,
    /// Show what would be committed in each environment (commit message and a diff per file),
    /// computed by the server on the current tips; nothing is stored or pushed.
    #[arg(long, conflicts_with = "no_wait")]
    pub dry_run: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UnpinArgs {
    /// The service.
    #[arg(long, env = "TUG_SERVICE")]
    pub service: String,
    /// The environment to unpin.
    #[arg(long)]
    pub env: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The service.
    #[arg(long, env = "TUG_SERVICE")]
    pub service: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DescribeCommand {
    /// Release history of a service, newest first.
    Release {
        /// The service.
        #[arg(long, env = "TUG_SERVICE")]
        service: String,
        /// Only this environment.
        #[arg(long)]
        env: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 10)]
        count: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Artifacts registered for a service, newest first.
    Artifact {
        /// The service.
        #[arg(long, env = "TUG_SERVICE")]
        service: String,
        /// Only artifacts of this source branch.
        #[arg(long)]
        branch: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 10)]
        count: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct PolicyArgs {
    /// The service (required; read from TUG_SERVICE when absent).
    #[arg(long, env = "TUG_SERVICE", global = true)]
    pub service: Option<String>,
    #[command(subcommand)]
    pub command: PolicyCommand,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// The service's policies, the server's global branch restrictions included.
    List,
    /// Apply a policy.
    #[command(subcommand)]
    Apply(PolicyApply),
    /// Delete policies by id.
    Delete {
        /// The ids of the policies to delete (`tug policy list` shows them).
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyApply {
    /// Release new artifacts of --branch to --env as soon as they are registered.
    AutoRelease {
        /// The source branch whose artifacts are released.
        #[arg(long)]
        branch: String,
        /// The environment they are released to.
        #[arg(long)]
        env: String,
    },
    /// Allow only branches matching --branch-regex (anchor it: `^main$`) in --env.
    BranchRestriction {
        /// The environment the restriction guards.
        #[arg(long)]
        env: String,
        /// The regular expression a source branch must match.
        #[arg(long)]
        branch_regex: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ReindexArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Only calls by this actor (a token's name; `unknown` for calls without a valid token).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action (`deploy`, `artifact.push`, `release`, `promote`, `rollback`, `unpin`,
    /// `policy.write`, `reindex`, `rollout.report`, `webhook.<source>`, …).
    #[arg(long)]
    pub action: Option<String>,
    /// Only calls about this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only calls about this environment.
    #[arg(long, alias = "env")]
    pub environment: Option<String>,
    /// Records at or after this time (RFC 3339, e.g. 2026-01-31T12:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Records before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many records (1 to 1000; the server's default is 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Records older than this id: the next page after one whose `next` it is.
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every subcommand, positional argument and flag says what it is in `--help`.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(format!("{sub_path} (the command)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "tug", &mut missing);
        assert!(missing.is_empty(), "without help:\n{}", missing.join("\n"));
    }

    #[test]
    fn json_is_asked_for_in_every_spelling() {
        let asks = |args: &[&str]| asks_for_json(args.iter().map(|a| (*a).to_owned()));
        assert!(asks(&["tug", "status", "-o", "json"]));
        assert!(asks(&["tug", "status", "--output", "json"]));
        assert!(asks(&["tug", "status", "--output=json"]));
        assert!(asks(&["tug", "status", "-ojson"]));
        assert!(!asks(&["tug", "status", "-o", "text"]));
    }
}
