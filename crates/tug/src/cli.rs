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
