//! The `tug server --config FILE` configuration.
//!
//! Loading happens in four steps, each reporting errors with the file and the field at fault:
//! 1. the YAML is parsed strictly (unknown fields are errors, with line and column);
//! 2. `${VAR}` references in string values are replaced from the environment (`$${` writes a
//!    literal `${`); an unset variable is an error naming the variable and the field;
//! 3. `TUG_*` environment variables override scalar settings (see [`ENV_OVERRIDES`]);
//! 4. the result is validated: authentication must be configured explicitly, repository names
//!    are unique, URLs carry no password, token scopes name configured repositories.
//!
//! Relative paths written in the file (`data_dir`, TLS and SSH key files) are resolved against
//! the directory holding the file, so a configuration means the same from any working directory.
//! Paths given through `TUG_*` variables are used as given.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod auth;
pub mod release;
pub mod release_notify;
pub mod rollout_feedback;
pub mod telemetry;
pub mod triggers;

pub use auth::{AuthConfig, AuthMode, GrantConfig, OidcIssuerConfig, TokenConfig, VerbName};

/// Parses a log filter such as `info` or `warn,tug_server=debug`.
pub fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map_err(|error| format!("`{level}` is not a valid log filter: {error}"))
}

pub use tug_git::Secret;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub commit: CommitConfig,
    #[serde(default)]
    pub deploy: DeployConfig,
    #[serde(default)]
    pub repositories: Vec<RepositoryConfig>,
    /// Required: either tokens or an explicit `mode: none`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Where jobs, artifacts and the release index live: SQLite under `data_dir` when absent,
    /// or a PostgreSQL database every replica shares.
    #[serde(default)]
    pub store: StoreConfig,
    /// Release environments in promotion order (see [`crate::release`]).
    #[serde(default)]
    pub environments: Vec<tug_release::Environment>,
    /// Released services and where each lives in each environment.
    #[serde(default)]
    pub services: Vec<tug_release::ServiceSpec>,
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Inbound webhooks and dispatch rules (see [`crate::release::triggers`]).
    #[serde(default)]
    pub triggers: triggers::TriggersConfig,
    /// Per-release Slack, GitHub commit status and Grafana annotation
    /// (see [`crate::release::release_notify`]).
    #[serde(default)]
    pub release_notify: release_notify::ReleaseNotifyConfig,
    /// How Argo CD / Flux objects are named after service and environment
    /// (see [`crate::release::feedback`]).
    #[serde(default)]
    pub rollout_feedback: rollout_feedback::RolloutFeedbackConfig,
    /// Traces over OTLP (see [`crate::telemetry`]).
    #[serde(default)]
    pub telemetry: telemetry::TelemetryConfig,
    /// Where spans go: `telemetry:` and the `OTEL_*` variables combined at load time; `None`
    /// when tracing is off.
    #[serde(skip)]
    pub trace_export: Option<telemetry::TraceExport>,
}

/// Release policies the server imposes, and where services' own policies live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// `env=regex` items: every service may release to `env` only artifacts of branches matching
    /// `regex`. They take precedence over services' own restrictions and cannot be deleted.
    #[serde(default)]
    pub branch_restrictions: Vec<String>,
    /// The configured repository holding `policies/<service>.json`; defaults to the repository of
    /// the first environment in promotion order.
    #[serde(default)]
    pub repository: Option<String>,
    /// Its branch; defaults to the branch of the first environment when `repository` is not
    /// set, else `main`.
    #[serde(default)]
    pub branch: Option<String>,
}

/// Where the server listens. The ports are those of the Delivery server, so its clients keep
/// working with only the host changed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(default = "default_grpc_addr")]
    pub grpc: SocketAddr,
    #[serde(default = "default_http_addr")]
    pub http: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            grpc: default_grpc_addr(),
            http: default_http_addr(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}`, expected `text` or `json`"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter: `info`, or `warn,tug_server=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The committer identity of every commit tug makes; the author is the requester.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitConfig {
    #[serde(default = "default_committer_name")]
    pub committer_name: String,
    #[serde(default = "default_committer_email")]
    pub committer_email: String,
    /// Commit even when the files already hold the desired state (the Delivery server's
    /// `DELIVERY_ALLOW_EMPTY_COMMIT`).
    #[serde(default)]
    pub allow_empty: bool,
}

/// Defaults for deploy requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// Refuse a request whose edit would only add (a new kustomize `images:` entry, a new key
    /// at a yq path, new Helm image keys) — usually a typo in a name or key. Off: the request
    /// lands with a `[WARN]` line and its result lists the additions under `created`. A request
    /// may say `strict` itself; releases are always strict.
    #[serde(default)]
    pub strict: bool,
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            committer_name: default_committer_name(),
            committer_email: default_committer_email(),
            allow_empty: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// How requests, tokens and metrics name the repository.
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub http: Option<HttpCredentials>,
    #[serde(default)]
    pub ssh: Option<SshCredentials>,
    /// Signs every commit tug writes to this repository.
    #[serde(default)]
    pub signing: Option<SigningConfig>,
}

/// How commits are signed: exactly one key, SSH (`gpg.format=ssh` for `git verify-commit`) or
/// OpenPGP (git's default format, verified by gpg). Both fields are optional for the parser
/// only: [`Config::validate`] refuses both and neither, naming `repositories[i].signing`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// An SSH private key without a passphrase.
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
    /// An ASCII-armoured OpenPGP secret key without a passphrase
    /// (`gpg --export-secret-keys --armor`).
    #[serde(default)]
    pub openpgp_key_file: Option<PathBuf>,
}

impl SigningConfig {
    /// The signer, and the name of the field its key file came from. `None` when both or
    /// neither key is set, which a validated configuration never has.
    pub fn signer(&self) -> Option<(tug_git::Signer, &'static str)> {
        match (&self.ssh_key_file, &self.openpgp_key_file) {
            (Some(key_file), None) => {
                Some((tug_git::SshSigner::new(key_file).into(), "ssh_key_file"))
            }
            (None, Some(key_file)) => Some((
                tug_git::OpenPgpSigner::new(key_file).into(),
                "openpgp_key_file",
            )),
            _ => None,
        }
    }

    fn key_files_mut(&mut self) -> impl Iterator<Item = (&mut PathBuf, &'static str)> {
        let ssh = self.ssh_key_file.as_mut().map(|p| (p, "ssh_key_file"));
        let openpgp = self
            .openpgp_key_file
            .as_mut()
            .map(|p| (p, "openpgp_key_file"));
        ssh.into_iter().chain(openpgp)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCredentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshCredentials {
    pub private_key_file: PathBuf,
    /// Host keys to trust; host key checking is never turned off. Without it, the isolated git
    /// environment has no known hosts and every SSH connection is refused.
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub slack: Vec<SlackSinkConfig>,
    #[serde(default)]
    pub webhooks: Vec<WebhookSinkConfig>,
    /// Attempts per sink and notification, the first included.
    #[serde(default = "default_notify_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; each further retry waits twice as long.
    #[serde(default = "default_notify_base_delay_ms")]
    pub base_delay_ms: u64,
    /// Time limit of one attempt.
    #[serde(default = "default_notify_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            slack: Vec::new(),
            webhooks: Vec::new(),
            max_attempts: default_notify_max_attempts(),
            base_delay_ms: default_notify_base_delay_ms(),
            timeout_ms: default_notify_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSinkConfig {
    /// The incoming-webhook URL; its path is the credential, so it is a secret.
    pub webhook_url: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Treated as a secret: query strings often carry tokens.
    pub url: Secret,
    /// Key of the `X-Tug-Signature` HMAC; without it requests are unsigned.
    #[serde(default)]
    pub secret: Option<Secret>,
}

/// `store:` — the database. Absent: SQLite at `data_dir/tug.db`, for one process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
}

/// `store.postgres` — a PostgreSQL database shared by every replica of the server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:5432/tug` or `postgres:///tug?host=/run/postgresql`;
    /// usually `"${DATABASE_URL}"`. A secret: it may hold the password.
    pub url: Secret,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    16
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "default_max_paths_per_request")]
    pub max_paths_per_request: u32,
    /// Most requests one push carries for a branch.
    #[serde(default = "default_batch_max")]
    pub batch_max: u32,
    /// Most callers waiting on a stream for their job at once. Beyond it a request that wants to
    /// wait is refused with 429 and `Retry-After` before anything is stored, so an overloaded
    /// server keeps its memory bounded and callers back off; `wait=false` requests are still
    /// accepted (the stored queue absorbs them). Unset: [`Limits::max_waiting_streams`].
    #[serde(default)]
    pub max_waiting_streams: Option<u32>,
}

impl Limits {
    /// `max_waiting_streams` as set, or three batches of callers and at least 512. At the rate
    /// a writer lands, a caller waits for the batch being pushed and then for its own, so about
    /// two batches of callers wait at any time; the third leaves room for a slow push. Each
    /// waiting caller holds a connection (some 30 KiB of the server's memory under load), so
    /// the limit is also the server's memory under overload: on a 2-core machine with
    /// `batch_max: 256`, 1,024 peaked at 104 MiB under 4 × capacity, 768 at 91–96 MiB, and at
    /// 1,000 requests/s offered 512 refused some where 768 refused none (or a few percent when
    /// pushes were slow).
    pub fn max_waiting_streams(&self) -> u32 {
        self.max_waiting_streams
            .unwrap_or_else(|| self.batch_max.saturating_mul(3).max(512))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body_bytes(),
            max_paths_per_request: default_max_paths_per_request(),
            batch_max: default_batch_max(),
            max_waiting_streams: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("tug-data")
}
fn default_grpc_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 12010))
}
fn default_http_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 12011))
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_committer_name() -> String {
    "tug".to_owned()
}
fn default_committer_email() -> String {
    "tug@localhost".to_owned()
}
fn default_notify_max_attempts() -> u32 {
    4
}
fn default_notify_base_delay_ms() -> u64 {
    500
}
fn default_notify_timeout_ms() -> u64 {
    5_000
}
fn default_max_body_bytes() -> u64 {
    1024 * 1024
}
fn default_max_paths_per_request() -> u32 {
    256
}
fn default_batch_max() -> u32 {
    64
}

/// The `TUG_*` environment variables and the setting each overrides. They apply after the file
/// is read, so a container can keep one file and change addresses or paths per deployment.
/// Their values are taken literally (no `${VAR}` expansion).
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("TUG_LISTEN_GRPC", "listen.grpc"),
    ("TUG_LISTEN_HTTP", "listen.http"),
    ("TUG_DATA_DIR", "data_dir"),
    ("TUG_LOG_FORMAT", "log.format"),
    ("TUG_LOG_LEVEL", "log.level"),
    ("TUG_TLS_CERT_FILE", "tls.cert_file"),
    ("TUG_TLS_KEY_FILE", "tls.key_file"),
    ("TUG_COMMIT_COMMITTER_NAME", "commit.committer_name"),
    ("TUG_COMMIT_COMMITTER_EMAIL", "commit.committer_email"),
    ("TUG_COMMIT_ALLOW_EMPTY", "commit.allow_empty"),
    ("TUG_DEPLOY_STRICT", "deploy.strict"),
    ("TUG_LIMITS_MAX_BODY_BYTES", "limits.max_body_bytes"),
    (
        "TUG_LIMITS_MAX_PATHS_PER_REQUEST",
        "limits.max_paths_per_request",
    ),
    ("TUG_LIMITS_BATCH_MAX", "limits.batch_max"),
    (
        "TUG_LIMITS_MAX_WAITING_STREAMS",
        "limits.max_waiting_streams",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{}: {message}", path.display(), position(*line, *column))]
    Parse {
        path: PathBuf,
        line: Option<u64>,
        column: Option<u64>,
        message: String,
    },
    #[error(
        "{}{}: {field}: environment variable `{variable}` is not set (write `$${{` for a literal `${{`)",
        path.display(), position(*line, None)
    )]
    UnsetVariable {
        path: PathBuf,
        /// The line of the first `${variable}` in the file.
        line: Option<u64>,
        field: String,
        variable: String,
    },
    #[error("{}{}: {field}: {message}", path.display(), position(*line, None))]
    Reference {
        path: PathBuf,
        line: Option<u64>,
        field: String,
        message: String,
    },
    #[error("environment variable {variable} (overrides `{field}`): {message}")]
    Override {
        variable: &'static str,
        field: &'static str,
        message: String,
    },
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// The parser's message gives the position twice and, for a value of the wrong type, not the
/// field; this puts the position first (`file:line:column`, as compilers do) and names the key the
/// value belongs to.
fn parse_error(error: &serde_saphyr::Error, text: &str, path: &Path) -> ConfigError {
    let location = error.location();
    let line = location.map(|l| l.line());
    let column = location.map(|l| l.column());
    let mut message = error.without_snippet().to_string();
    if let (Some(line), Some(column)) = (line, column) {
        let suffix = format!(" at line {line}, column {column}");
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
        let key = usize::try_from(line)
            .ok()
            .and_then(|line| text.lines().nth(line.checked_sub(1)?))
            .and_then(|source| key_before_column(source, column));
        if let Some(key) = key
            && !message.contains(&format!("`{key}`"))
        {
            message = format!("{key}: {message}");
        }
    }
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// The mapping key written last before `column` on a YAML source line (`  batch_max: lots` or
/// `limits: { batch_max: lots }`), if any.
fn key_before_column(source: &str, column: u64) -> Option<&str> {
    let end = usize::try_from(column)
        .ok()?
        .saturating_sub(1)
        .min(source.len());
    let prefix = source.get(..end)?;
    let colon = prefix.trim_end().strip_suffix(':')?;
    let start = colon
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .map_or(0, |at| at + 1);
    let key = &colon[start..];
    (!key.is_empty()).then_some(key)
}

fn position(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

/// Reads environment variables; `&|name| std::env::var(name).ok()` in production.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Reads, expands, overrides and validates the configuration file at `path`.
    pub fn load(path: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, path, env)
    }

    /// Like [`Config::load`] for text already read; `path` names it in errors and anchors
    /// relative paths.
    pub fn from_yaml(text: &str, path: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
        let mut config: Config =
            serde_saphyr::from_str(text).map_err(|error| parse_error(&error, text, path))?;
        config.expand_variables(path, text, env)?;
        config.resolve_relative_paths(path);
        config.apply_env_overrides(env)?;
        config.validate(path)?;
        config.trace_export =
            config
                .telemetry
                .export(env)
                .map_err(|(field, message)| ConfigError::Invalid {
                    path: path.to_owned(),
                    field,
                    message,
                })?;
        Ok(config)
    }

    /// The repository configured under `name`.
    pub fn repository(&self, name: &str) -> Option<&RepositoryConfig> {
        self.repositories.iter().find(|repo| repo.name == name)
    }

    /// The repository whose configured URL is `url` (how Delivery-style requests name it).
    pub fn repository_by_url(&self, url: &str) -> Option<&RepositoryConfig> {
        let wanted = normalize_url(url);
        self.repositories
            .iter()
            .find(|repo| normalize_url(&repo.url) == wanted)
    }

    /// The auth section; validation guarantees it is present.
    pub fn auth(&self) -> AuthConfig {
        self.auth.clone().unwrap_or(AuthConfig {
            mode: Some(AuthMode::Tokens),
            tokens: Vec::new(),
            oidc: Vec::new(),
        })
    }

    fn expand_variables(
        &mut self,
        path: &Path,
        text: &str,
        env: Env<'_>,
    ) -> Result<(), ConfigError> {
        let x = Expander { path, text, env };
        x.path_buf(&mut self.data_dir, "data_dir")?;
        x.string(&mut self.log.level, "log.level")?;
        if let Some(tls) = &mut self.tls {
            x.path_buf(&mut tls.cert_file, "tls.cert_file")?;
            x.path_buf(&mut tls.key_file, "tls.key_file")?;
        }
        if let Some(postgres) = &mut self.store.postgres {
            x.string(postgres.url.expose_mut(), "store.postgres.url")?;
        }
        x.string(&mut self.commit.committer_name, "commit.committer_name")?;
        x.string(&mut self.commit.committer_email, "commit.committer_email")?;
        for (i, repo) in self.repositories.iter_mut().enumerate() {
            let at = format!("repositories[{i}]");
            x.string(&mut repo.name, &format!("{at}.name"))?;
            x.string(&mut repo.url, &format!("{at}.url"))?;
            if let Some(http) = &mut repo.http {
                x.string(&mut http.username, &format!("{at}.http.username"))?;
                x.string(http.password.expose_mut(), &format!("{at}.http.password"))?;
            }
            if let Some(ssh) = &mut repo.ssh {
                x.path_buf(
                    &mut ssh.private_key_file,
                    &format!("{at}.ssh.private_key_file"),
                )?;
                if let Some(known_hosts) = &mut ssh.known_hosts_file {
                    x.path_buf(known_hosts, &format!("{at}.ssh.known_hosts_file"))?;
                }
            }
            if let Some(signing) = &mut repo.signing {
                for (key_file, field) in signing.key_files_mut() {
                    x.path_buf(key_file, &format!("{at}.signing.{field}"))?;
                }
            }
        }
        if let Some(auth) = &mut self.auth {
            for (i, token) in auth.tokens.iter_mut().enumerate() {
                let at = format!("auth.tokens[{i}]");
                x.string(&mut token.name, &format!("{at}.name"))?;
                x.string(&mut token.sha256, &format!("{at}.sha256"))?;
                for (j, repo) in token.repositories.iter_mut().flatten().enumerate() {
                    x.string(repo, &format!("{at}.repositories[{j}]"))?;
                }
                for (j, branch) in token.branches.iter_mut().flatten().enumerate() {
                    x.string(branch, &format!("{at}.branches[{j}]"))?;
                }
            }
            for (i, issuer) in auth.oidc.iter_mut().enumerate() {
                let at = format!("auth.oidc[{i}]");
                x.string(&mut issuer.issuer, &format!("{at}.issuer"))?;
                x.string(&mut issuer.audience, &format!("{at}.audience"))?;
                if let Some(jwks) = &mut issuer.jwks_url {
                    x.string(jwks, &format!("{at}.jwks_url"))?;
                }
                if let Some(ca) = &mut issuer.ca_file {
                    x.path_buf(ca, &format!("{at}.ca_file"))?;
                }
            }
        }
        for (i, slack) in self.notify.slack.iter_mut().enumerate() {
            x.string(
                slack.webhook_url.expose_mut(),
                &format!("notify.slack[{i}].webhook_url"),
            )?;
        }
        for (i, hook) in self.notify.webhooks.iter_mut().enumerate() {
            x.string(hook.url.expose_mut(), &format!("notify.webhooks[{i}].url"))?;
            if let Some(secret) = &mut hook.secret {
                x.string(secret.expose_mut(), &format!("notify.webhooks[{i}].secret"))?;
            }
        }
        for (i, env) in self.environments.iter_mut().enumerate() {
            let at = format!("environments[{i}]");
            x.string(&mut env.name, &format!("{at}.name"))?;
            x.option(&mut env.after, &format!("{at}.after"))?;
            x.option(&mut env.repository, &format!("{at}.repository"))?;
            x.option(&mut env.branch, &format!("{at}.branch"))?;
        }
        for (i, service) in self.services.iter_mut().enumerate() {
            let at = format!("services[{i}]");
            x.string(&mut service.name, &format!("{at}.name"))?;
            x.option(&mut service.namespace, &format!("{at}.namespace"))?;
            x.option(&mut service.path, &format!("{at}.path"))?;
            for (env, target) in &mut service.environments {
                let at = format!("{at}.environments.{env}");
                x.option(&mut target.path, &format!("{at}.path"))?;
                x.option(&mut target.repository, &format!("{at}.repository"))?;
                x.option(&mut target.branch, &format!("{at}.branch"))?;
            }
        }
        for (i, rule) in self.policies.branch_restrictions.iter_mut().enumerate() {
            x.string(rule, &format!("policies.branch_restrictions[{i}]"))?;
        }
        x.option(&mut self.policies.repository, "policies.repository")?;
        x.option(&mut self.policies.branch, "policies.branch")?;
        self.triggers
            .expand_variables(&mut |value, field| x.string(value, field))?;
        self.release_notify
            .expand_variables(&mut |value, field| x.string(value, field))?;
        self.telemetry
            .expand_variables(&mut |value, field| x.string(value, field))?;
        Ok(())
    }

    fn resolve_relative_paths(&mut self, path: &Path) {
        let base = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        if let Some(tls) = &mut self.tls {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
        }
        for repo in &mut self.repositories {
            if let Some(ssh) = &mut repo.ssh {
                resolve(&mut ssh.private_key_file);
                if let Some(known_hosts) = &mut ssh.known_hosts_file {
                    resolve(known_hosts);
                }
            }
            if let Some(signing) = &mut repo.signing {
                for (key_file, _) in signing.key_files_mut() {
                    resolve(key_file);
                }
            }
        }
        if let Some(auth) = &mut self.auth {
            for issuer in &mut auth.oidc {
                if let Some(ca) = &mut issuer.ca_file {
                    resolve(ca);
                }
            }
        }
    }

    fn apply_env_overrides(&mut self, env: Env<'_>) -> Result<(), ConfigError> {
        for &(variable, field) in ENV_OVERRIDES {
            let Some(value) = env(variable) else {
                continue;
            };
            let bad = |message: String| ConfigError::Override {
                variable,
                field,
                message,
            };
            match field {
                "listen.grpc" => self.listen.grpc = parse_addr(&value).map_err(bad)?,
                "listen.http" => self.listen.http = parse_addr(&value).map_err(bad)?,
                "data_dir" => self.data_dir = PathBuf::from(value),
                "log.format" => self.log.format = value.parse().map_err(bad)?,
                "log.level" => self.log.level = value,
                "tls.cert_file" | "tls.key_file" => {
                    let tls = self.tls.get_or_insert_with(|| TlsConfig {
                        cert_file: PathBuf::new(),
                        key_file: PathBuf::new(),
                    });
                    if field == "tls.cert_file" {
                        tls.cert_file = PathBuf::from(value);
                    } else {
                        tls.key_file = PathBuf::from(value);
                    }
                }
                "commit.committer_name" => self.commit.committer_name = value,
                "commit.committer_email" => self.commit.committer_email = value,
                "commit.allow_empty" => {
                    self.commit.allow_empty = parse_bool(&value).map_err(bad)?
                }
                "deploy.strict" => self.deploy.strict = parse_bool(&value).map_err(bad)?,
                "limits.max_body_bytes" => {
                    self.limits.max_body_bytes = parse_number(&value).map_err(bad)?;
                }
                "limits.max_paths_per_request" => {
                    self.limits.max_paths_per_request = parse_number(&value).map_err(bad)?;
                }
                "limits.batch_max" => self.limits.batch_max = parse_number(&value).map_err(bad)?,
                "limits.max_waiting_streams" => {
                    self.limits.max_waiting_streams = Some(parse_number(&value).map_err(bad)?);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            message,
        };
        if let Err(message) = log_filter(&self.log.level) {
            return Err(invalid("log.level".into(), message));
        }
        if let Some(postgres) = &self.store.postgres {
            let url = postgres.url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "store.postgres.url".into(),
                    "must start with postgres:// or postgresql:// (the value is not repeated: it \
                     may hold a password)"
                        .into(),
                ));
            }
            if postgres.max_connections < 2 {
                return Err(invalid(
                    "store.postgres.max_connections".into(),
                    format!(
                        "{} is too few: one connection listens for other replicas, requests \
                         need at least one more",
                        postgres.max_connections
                    ),
                ));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(invalid(
                    "tls.cert_file".into(),
                    "missing: TLS needs both a certificate and a key file".into(),
                ));
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(invalid(
                    "tls.key_file".into(),
                    "missing: TLS needs both a certificate and a key file".into(),
                ));
            }
        }
        if self.listen.grpc == self.listen.http {
            return Err(invalid(
                "listen".into(),
                format!("grpc and http both use {}", self.listen.grpc),
            ));
        }
        let mut names = HashSet::new();
        for (i, repo) in self.repositories.iter().enumerate() {
            let at = format!("repositories[{i}]");
            if repo.name.trim().is_empty() {
                return Err(invalid(format!("{at}.name"), "must not be empty".into()));
            }
            if !names.insert(repo.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("repository name `{}` is used twice", repo.name),
                ));
            }
            if repo.url.trim().is_empty() {
                return Err(invalid(format!("{at}.url"), "must not be empty".into()));
            }
            if let Some(redacted) = url_with_password_redacted(&repo.url) {
                return Err(invalid(
                    format!("{at}.url"),
                    format!(
                        "`{redacted}` embeds a password; put it in `http.password` \
                         (from an environment variable: \"${{VAR}}\")"
                    ),
                ));
            }
            let is_http = repo.url.starts_with("http://") || repo.url.starts_with("https://");
            match (&repo.http, &repo.ssh) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        at,
                        "has both `http` and `ssh` credentials; keep the one its URL uses".into(),
                    ));
                }
                (Some(_), None) if !is_http => {
                    return Err(invalid(
                        format!("{at}.http"),
                        format!("`{}` is not an http(s) URL", repo.url),
                    ));
                }
                (None, Some(_)) if is_http => {
                    return Err(invalid(
                        format!("{at}.ssh"),
                        format!("`{}` is an http(s) URL, not an SSH one", repo.url),
                    ));
                }
                _ => {}
            }
            // A key that cannot sign fails here, at start-up, not at the first deploy. The
            // error never quotes the key.
            if let Some(signing) = &repo.signing {
                let Some((signer, field)) = signing.signer() else {
                    let message = if signing.ssh_key_file.is_some() {
                        "has both `ssh_key_file` and `openpgp_key_file`; keep the one to sign with"
                    } else {
                        "names no key: set `ssh_key_file` or `openpgp_key_file`"
                    };
                    return Err(invalid(format!("{at}.signing"), message.into()));
                };
                if let Err(e) = signer.check() {
                    return Err(invalid(format!("{at}.signing.{field}"), e.to_string()));
                }
            }
        }
        auth::validate(self.auth.as_ref(), path, &names)?;
        for (i, hook) in self.notify.webhooks.iter().enumerate() {
            if !is_http_url(hook.url.expose()) {
                return Err(invalid(
                    format!("notify.webhooks[{i}].url"),
                    "must be an http:// or https:// URL".into(),
                ));
            }
        }
        for (i, slack) in self.notify.slack.iter().enumerate() {
            if !is_http_url(slack.webhook_url.expose()) {
                return Err(invalid(
                    format!("notify.slack[{i}].webhook_url"),
                    "must be an http:// or https:// URL".into(),
                ));
            }
        }
        if self.notify.max_attempts == 0 {
            return Err(invalid(
                "notify.max_attempts".into(),
                "must be at least 1".into(),
            ));
        }
        if let Err((field, message)) = release::ReleaseModel::from_config(self) {
            return Err(invalid(field, message));
        }
        if let Err((field, message)) = self.triggers.validate(self) {
            return Err(invalid(field, message));
        }
        if let Err((field, message)) = self.release_notify.validate(self) {
            return Err(invalid(field, message));
        }
        if let Err((field, message)) = self.rollout_feedback.validate() {
            return Err(invalid(field, message));
        }
        for (field, value) in [
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            (
                "limits.max_paths_per_request",
                u64::from(self.limits.max_paths_per_request),
            ),
            ("limits.batch_max", u64::from(self.limits.batch_max)),
            (
                "limits.max_waiting_streams",
                u64::from(self.limits.max_waiting_streams()),
            ),
        ] {
            if value == 0 {
                return Err(invalid(field.into(), "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// A commented configuration for the Quick start: one repository, and either one token
    /// (given by its SHA-256) or no authentication. The result loads with [`Config::load`].
    pub fn sample(sample: &Sample<'_>) -> String {
        let auth = match sample.token_sha256 {
            Some(sha256) => format!(
                "auth:\n  tokens:\n    # sha256 is `printf %s \"$TOKEN\" | sha256sum`; the token itself is not stored.\n    - name: ci\n      sha256: \"{sha256}\"\n      repositories: [\"{name}\"]\n",
                name = yaml_escape(sample.repository_name),
            ),
            None => "# Anyone who can reach the server may deploy: keep it on a loopback address.\nauth:\n  mode: none\n".to_owned(),
        };
        format!(
            r#"# tug server configuration. `${{VAR}}` in a string is read from the environment.
listen:
  grpc: "{grpc}"
  http: "{http}"
# Relative paths are relative to this file.
data_dir: {data_dir}
log:
  format: text   # or json
  level: info
commit:
  committer_name: tug
  committer_email: tug@localhost
  allow_empty: false
repositories:
  - name: "{name}"
    url: "{url}"
    # For HTTPS remotes that need credentials:
    # http: {{ username: bot, password: "${{GIT_TOKEN}}" }}
    # For SSH remotes:
    # ssh: {{ private_key_file: /etc/tug/id_ed25519, known_hosts_file: /etc/tug/known_hosts }}
{auth}# notify:
#   slack: [{{ webhook_url: "${{SLACK_WEBHOOK_URL}}" }}]
#   webhooks: [{{ url: "https://hooks.example.com/tug", secret: "${{HOOK_SECRET}}" }}]
# Traces over OTLP/gRPC (or set OTEL_EXPORTER_OTLP_ENDPOINT); off without an endpoint:
# telemetry:
#   endpoint: "http://127.0.0.1:4317"
#   headers: {{ authorization: "Bearer ${{OTEL_TOKEN}}" }}
limits:
  max_body_bytes: 1048576
  max_paths_per_request: 256
  batch_max: 64
  # Callers waiting on a stream at once; beyond it 429 + Retry-After. Default: 3 × batch_max,
  # at least 512.
  # max_waiting_streams: 512
"#,
            grpc = default_grpc_addr(),
            http = default_http_addr(),
            data_dir = "tug-data",
            name = yaml_escape(sample.repository_name),
            url = yaml_escape(sample.repository_url),
        )
    }
}

/// What [`Config::sample`] fills in.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub repository_name: &'a str,
    pub repository_url: &'a str,
    /// The SHA-256 (hex) of a token; `None` writes `auth: {mode: none}`.
    pub token_sha256: Option<&'a str>,
}

fn yaml_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

struct Expander<'a> {
    path: &'a Path,
    /// The file's text, to point at the line of a bad reference.
    text: &'a str,
    env: Env<'a>,
}

impl Expander<'_> {
    fn string(&self, value: &mut String, field: &str) -> Result<(), ConfigError> {
        if value.contains('$') {
            let original = value.clone();
            *value = expand(value, self.env).map_err(|problem| match problem {
                ExpandProblem::Unset(variable) => ConfigError::UnsetVariable {
                    path: self.path.to_owned(),
                    line: line_of(self.text, &format!("${{{variable}}}")),
                    field: field.to_owned(),
                    variable,
                },
                ExpandProblem::Malformed(message) => ConfigError::Reference {
                    path: self.path.to_owned(),
                    line: line_of(self.text, &original),
                    field: field.to_owned(),
                    message,
                },
            })?;
        }
        Ok(())
    }

    fn option(&self, value: &mut Option<String>, field: &str) -> Result<(), ConfigError> {
        match value {
            Some(v) => self.string(v, field),
            None => Ok(()),
        }
    }

    fn path_buf(&self, value: &mut PathBuf, field: &str) -> Result<(), ConfigError> {
        // Paths from YAML are always UTF-8.
        if let Some(text) = value.to_str() {
            let mut text = text.to_owned();
            self.string(&mut text, field)?;
            *value = PathBuf::from(text);
        }
        Ok(())
    }
}

/// The 1-based line of the first occurrence of `needle` that is not an escaped `$${`, if any.
/// Values are found by their text: the parsed configuration keeps no positions, and a value
/// holding a reference is distinctive enough to find.
fn line_of(text: &str, needle: &str) -> Option<u64> {
    let mut from = 0;
    while let Some(at) = text[from..].find(needle) {
        let at = from + at;
        let escaped = needle.starts_with('$') && text[..at].ends_with('$');
        if !escaped {
            return u64::try_from(text[..at].matches('\n').count() + 1).ok();
        }
        from = at + needle.len();
    }
    None
}

enum ExpandProblem {
    Unset(String),
    Malformed(String),
}

/// Replaces `${NAME}` with the variable's value; `$${` stands for a literal `${`. A `$` not
/// followed by `{` is kept as is, so passwords with a lone `$` need no escaping.
fn expand(value: &str, env: Env<'_>) -> Result<String, ExpandProblem> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(reference) = after.strip_prefix('{') {
            let Some(end) = reference.find('}') else {
                return Err(ExpandProblem::Malformed(
                    "`${` without a closing `}` (write `$${` for a literal `${`)".into(),
                ));
            };
            let name = &reference[..end];
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            if !valid {
                return Err(ExpandProblem::Malformed(format!(
                    "`${{{name}}}` is not a valid environment variable reference"
                )));
            }
            match env(name) {
                Some(found) => out.push_str(&found),
                None => return Err(ExpandProblem::Unset(name.to_owned())),
            }
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("`{value}` is not an address like 127.0.0.1:12011"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("`{other}` is not `true` or `false`")),
    }
}

fn parse_number<T: std::str::FromStr>(value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("`{value}` is not a non-negative integer in range"))
}

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// For a `scheme://user:password@host/…` URL, the URL with the password replaced by `***`;
/// `None` when the URL carries no password.
fn url_with_password_redacted(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let (userinfo, host) = authority.rsplit_once('@')?;
    let (user, _password) = userinfo.split_once(':')?;
    Some(format!(
        "{scheme}://{user}:***@{host}{}",
        &rest[authority_end..]
    ))
}

/// URL comparison that ignores a trailing `/` or `.git`, as git hosts do.
fn normalize_url(url: &str) -> &str {
    let url = url.trim_end_matches('/');
    url.strip_suffix(".git").unwrap_or(url)
}

#[cfg(test)]
mod tests;
