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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    },
    /// Create a sample GitOps repository and configuration in DIR, then run the server on it.
    Quickstart {
        #[arg(default_value = "tug-quickstart")]
        dir: PathBuf,
        /// HTTP listen address (the default is the Delivery server's 127.0.0.1:12011).
        #[arg(long)]
        http: Option<String>,
    },
    /// Ask a tug server to deploy (the CI client): send deploy specs, stream the progress to
    /// stderr, print the commit of each repository branch. Every flag also reads a `TUG_*`
    /// variable; the Delivery client's `DELIVERY_*` variable each replaces is named in its help.
    /// Exit status: 0 deployed, 1 the job failed, 2 usage, transport or rejected request.
    Deploy(DeployArgs),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct EditCommon {
    /// Print the change as a unified diff instead of writing the file.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum EditCommand {
    /// Set an image: kustomize `images` in a kustomization (file or directory), else every
    /// matching container of a manifest file. SPEC is NAME[=NEWNAME][:TAG][@DIGEST].
    Image {
        path: PathBuf,
        spec: String,
        #[command(flatten)]
        common: EditCommon,
    },
    /// Set the image of a Helm values file (`image: {repository, tag}` or `image: repo:tag`).
    /// SPEC is NAME[=NEWNAME][:TAG][@DIGEST]; NAME must match the current repository.
    HelmImage {
        file: PathBuf,
        spec: String,
        /// Path of the image node.
        #[arg(long, default_value = ".image")]
        key: String,
        #[command(flatten)]
        common: EditCommon,
    },
    /// Set a value at a YAML path (`.image.tag`, `.spec.template.spec.containers[name=app].image`).
    Set {
        file: PathBuf,
        key: String,
        value: String,
        #[arg(long = "type", value_enum, default_value_t = ValueTypeArg::Auto)]
        value_type: ValueTypeArg,
        #[command(flatten)]
        common: EditCommon,
    },
    /// Bump the pod-template annotation so pods roll even though the image did not change.
    Redeploy {
        file: PathBuf,
        /// Only the workload with this metadata.name.
        #[arg(long)]
        workload: Option<String>,
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
pub enum ValueTypeArg {
    Auto,
    String,
    Number,
    Bool,
    Null,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
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
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: OutputFormat,
    /// Commit message title (a summary of the edits by default).
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    #[arg(long, env = "TUG_AUTHOR_NAME", default_value = "tug")]
    pub author_name: String,
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
pub struct DeployArgs {
    /// The server's REST URL (Delivery: DELIVERY_SERVER_ADDR and DELIVERY_SERVER_PORT; tug speaks
    /// REST on the HTTP port, 12011, which passes proxies more easily than gRPC on 12010).
    #[arg(long, env = "TUG_SERVER", default_value = "http://127.0.0.1:12011")]
    pub server: String,
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
    /// Shorthand for one kustomize image update: the repository's name in the server's
    /// configuration (with --branch, --path and --image).
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
    /// Shorthand: the directory holding the kustomization.
    #[arg(long, env = "TUG_PATH", value_name = "PATH")]
    pub path: Option<String>,
    /// Shorthand: the image to set, NAME[=NEWNAME][:TAG][@DIGEST]; repeat (or separate with
    /// commas) for several images.
    #[arg(long, env = "TUG_IMAGE", value_name = "IMAGE", value_delimiter = ',')]
    pub image: Vec<String>,
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
    /// An extra line for the notifications the server sends about this deploy.
    #[arg(long, env = "TUG_NOTIFY_MESSAGE", value_name = "TEXT")]
    pub notify_message: Option<String>,
    /// Ask the server to send no notification about this deploy.
    #[arg(long, env = "TUG_NO_NOTIFY")]
    pub no_notify: bool,
    /// Give up waiting after this many seconds; the job goes on on the server (Delivery:
    /// DELIVERY_TIMEOUT, which limited the connection only).
    #[arg(long, env = "TUG_TIMEOUT", value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// Return once the server has stored the request; print the job id.
    #[arg(long, env = "TUG_NO_WAIT")]
    pub no_wait: bool,
    /// `json` prints the server's final result object.
    #[arg(long, short = 'o', env = "TUG_OUTPUT", value_enum, default_value_t)]
    pub output: OutputFormat,
}

const DEPLOY_AFTER_HELP: &str = "\
The token: TUG_TOKEN, or the file named by --token-file (TUG_TOKEN_FILE); never a flag value.

From the Delivery client:
  DELIVERY_SERVER_ADDR, _PORT         TUG_SERVER (a URL; tug's REST port is 12011)
  DELIVERY_SERVER_ROOT_CERT           TUG_CA_CERT
  DELIVERY_SPECS, _SPECS_FILE         TUG_SPECS, TUG_SPECS_FILE
  DELIVERY_COMMIT_PROJECT             TUG_COMMIT_PROJECT
  DELIVERY_COMMIT_BRANCH, _TAG        TUG_COMMIT_BRANCH, TUG_COMMIT_TAG
  DELIVERY_COMMIT_SHORT_SHA           TUG_COMMIT_SHORT_SHA
  DELIVERY_COMMIT_MESSAGE             TUG_COMMIT_MESSAGE
  DELIVERY_COMMIT_USER_NAME, _EMAIL   TUG_COMMIT_USER_NAME, TUG_COMMIT_USER_EMAIL
  DELIVERY_TIMEOUT                    TUG_TIMEOUT (the whole wait, not only the connection)
  DELIVERY_NOTIFY_SPEC                TUG_NOTIFY_MESSAGE, TUG_NO_NOTIFY (sinks are the server's)";
