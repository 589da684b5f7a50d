//! `auth:` — who may call tug and what each caller may do.
//!
//! Two kinds of credential map to the same grants: static bearer tokens (configured by their
//! SHA-256) and OIDC identity tokens that CI platforms issue to a job (GitHub Actions, GitLab CI,
//! any issuer with OpenID discovery or a JWKS URL), whose claims select grants through rules.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Bearer tokens from `auth.tokens` and identity tokens from `auth.oidc`.
    Tokens,
    /// No authentication: every caller may deploy anywhere. Meant for a loopback-only server.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Defaults to `tokens`.
    #[serde(default)]
    pub mode: Option<AuthMode>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Issuers of identity tokens (OIDC) whose tokens are accepted.
    #[serde(default)]
    pub oidc: Vec<OidcIssuerConfig>,
}

impl AuthConfig {
    pub fn mode(&self) -> AuthMode {
        self.mode.unwrap_or(AuthMode::Tokens)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs, audit and 403 messages as the requester.
    pub name: String,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`); the token itself is never
    /// stored.
    pub sha256: String,
    /// The older form of a grant: every verb on these repositories (`*` for all). Give either
    /// this (with `branches`) or `grant`.
    #[serde(default)]
    pub repositories: Option<Vec<String>>,
    /// With `repositories`: the branches the token may write to, exact names or globs
    /// (`release/*`); absent means all.
    #[serde(default)]
    pub branches: Option<Vec<String>>,
    /// What the token may do.
    #[serde(default)]
    pub grant: Option<GrantConfig>,
}

impl TokenConfig {
    /// The token's grant, whichever way it is written.
    pub fn effective_grant(&self) -> GrantConfig {
        match &self.grant {
            Some(grant) => grant.clone(),
            None => GrantConfig {
                verbs: vec![VerbName::All],
                services: None,
                environments: None,
                repositories: self
                    .repositories
                    .clone()
                    .filter(|names| !names.iter().any(|name| name == "*")),
                branches: self.branches.clone(),
                paths: None,
            },
        }
    }
}

/// What a credential may do: verbs × services × environments × repositories × branches × paths.
/// A list that is absent (or holds `*`) allows every value. A grant limits only what a call
/// names: a release names its service, environment, repository and branch; a direct deploy
/// names repositories, branches and paths, so `services` and `environments` do not limit it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub verbs: Vec<VerbName>,
    #[serde(default)]
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    /// Configured repository names.
    #[serde(default)]
    pub repositories: Option<Vec<String>>,
    /// Exact names or globs (`release/*`, `**`).
    #[serde(default)]
    pub branches: Option<Vec<String>>,
    /// Files a direct deploy may change, globs relative to the repository root
    /// (`apps/api/**`).
    #[serde(default)]
    pub paths: Option<Vec<String>>,
}

/// A verb of the grant model, as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum VerbName {
    #[serde(rename = "*")]
    All,
    #[serde(rename = "deploy")]
    Deploy,
    #[serde(rename = "artifact.push")]
    ArtifactPush,
    #[serde(rename = "release")]
    Release,
    #[serde(rename = "promote")]
    Promote,
    #[serde(rename = "rollback")]
    Rollback,
    #[serde(rename = "unpin")]
    Unpin,
    #[serde(rename = "policy.write")]
    PolicyWrite,
    #[serde(rename = "reindex")]
    Reindex,
    /// Rollout feedback from Argo CD or Flux notifications.
    #[serde(rename = "rollout.report")]
    RolloutReport,
    #[serde(rename = "read")]
    Read,
}

/// One issuer of identity tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The `iss` claim, exactly: `https://token.actions.githubusercontent.com`,
    /// `https://gitlab.example.com`. Must be https, except on loopback.
    pub issuer: String,
    /// The `aud` claim tug requires (GitHub: the `audience` asked for in the workflow;
    /// GitLab: `id_tokens.<name>.aud`).
    pub audience: String,
    /// Where the signing keys are; found by OpenID discovery
    /// (`<issuer>/.well-known/openid-configuration`) when absent.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM certificates to trust for this issuer (a private CA), in addition to the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Signature algorithms accepted; defaults to RS256 and ES256. HMAC and `none` are never
    /// accepted.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Clock difference tolerated on `exp`, `nbf` and `iat`, in seconds (at most 300).
    #[serde(default = "default_clock_skew_seconds")]
    pub clock_skew_seconds: u64,
    /// A token signed by a key tug does not know makes it fetch the keys again, at most once
    /// per this many seconds.
    #[serde(default = "default_jwks_min_refresh_seconds")]
    pub jwks_min_refresh_seconds: u64,
    /// Claims → grants. Every rule whose claims all match adds its grant; a token no rule
    /// matches is refused.
    pub rules: Vec<OidcRuleConfig>,
}

fn default_clock_skew_seconds() -> u64 {
    60
}

fn default_jwks_min_refresh_seconds() -> u64 {
    30
}

/// The most clock skew a configuration may tolerate.
pub const MAX_CLOCK_SKEW_SECONDS: u64 = 300;

/// The algorithms an issuer may list; HMAC (`HS*`) and `none` are absent on purpose.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The algorithms accepted when an issuer lists none.
pub const DEFAULT_ALGORITHMS: &[&str] = &["RS256", "ES256"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRuleConfig {
    /// Claim name → an exact value or a glob (`refs/heads/*`), or a list of them (any
    /// matches). All listed claims must match.
    pub claims: BTreeMap<String, ClaimPattern>,
    pub grant: GrantConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ClaimPattern {
    One(String),
    Any(Vec<String>),
}

impl ClaimPattern {
    pub fn patterns(&self) -> &[String] {
        match self {
            ClaimPattern::One(one) => std::slice::from_ref(one),
            ClaimPattern::Any(any) => any,
        }
    }
}

/// Whether `url` is `http://` to a loopback host, the one case plain http is accepted for.
pub fn is_loopback_http(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    if parsed.scheme() != "http" {
        return false;
    }
    match parsed.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Checks `url` is https, or http to loopback; `Err` says why not.
pub fn check_issuer_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_http(url) => Ok(()),
        "http" => Err(format!(
            "`{url}` is plain http: identity keys must come over https (http only for loopback)"
        )),
        other => Err(format!("`{url}`: scheme `{other}` is not https")),
    }
}

/// Validates `auth` (called by [`super::Config::validate`]).
pub(super) fn validate(
    auth: Option<&AuthConfig>,
    path: &Path,
    repositories: &HashSet<&str>,
) -> Result<(), ConfigError> {
    let invalid = |field: String, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        field,
        message,
    };
    let Some(auth) = auth else {
        return Err(invalid(
            "auth".into(),
            "missing: configure `auth: {tokens: [...]}`, or `auth: {mode: none}` to accept \
             unauthenticated requests"
                .into(),
        ));
    };
    match auth.mode() {
        AuthMode::None => {
            if !auth.tokens.is_empty() {
                return Err(invalid(
                    "auth.tokens".into(),
                    "tokens are ignored with `mode: none`; remove them or the mode".into(),
                ));
            }
            if !auth.oidc.is_empty() {
                return Err(invalid(
                    "auth.oidc".into(),
                    "identity issuers are ignored with `mode: none`; remove them or the mode"
                        .into(),
                ));
            }
            return Ok(());
        }
        AuthMode::Tokens => {
            if auth.tokens.is_empty() && auth.oidc.is_empty() {
                return Err(invalid(
                    "auth.tokens".into(),
                    "no token configured: add one (or an `oidc` issuer), or set \
                     `auth: {mode: none}` to accept unauthenticated requests"
                        .into(),
                ));
            }
        }
    }
    let mut names = HashSet::new();
    for (i, token) in auth.tokens.iter().enumerate() {
        let at = format!("auth.tokens[{i}]");
        if token.name.trim().is_empty() {
            return Err(invalid(format!("{at}.name"), "must not be empty".into()));
        }
        if !names.insert(token.name.as_str()) {
            return Err(invalid(
                format!("{at}.name"),
                format!("token name `{}` is used twice", token.name),
            ));
        }
        if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                format!("{at}.sha256"),
                "must be 64 hex digits, the SHA-256 of the token \
                 (`printf %s \"$TOKEN\" | sha256sum`)"
                    .into(),
            ));
        }
        match (&token.repositories, &token.grant) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{at}.grant"),
                    "give either `grant` or `repositories`/`branches`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    format!("{at}.grant"),
                    "missing: say what the token may do with `grant: {verbs: [...], ...}` \
                     (or the older `repositories: [...]`)"
                        .into(),
                ));
            }
            (None, Some(grant)) => {
                if token.branches.is_some() {
                    return Err(invalid(
                        format!("{at}.branches"),
                        "goes with `repositories`; with `grant`, write `grant.branches`".into(),
                    ));
                }
                validate_grant(grant, &format!("{at}.grant"), repositories)
                    .map_err(|(f, m)| invalid(f, m))?;
            }
            (Some(list), None) => {
                if list.is_empty() {
                    return Err(invalid(
                        format!("{at}.repositories"),
                        "lists no repository; name some, or `*` for all".into(),
                    ));
                }
                check_repositories(list, &format!("{at}.repositories"), repositories)
                    .map_err(|(f, m)| invalid(f, m))?;
                if let Some(branches) = &token.branches
                    && branches.is_empty()
                {
                    return Err(invalid(
                        format!("{at}.branches"),
                        "is empty, so the token could write nowhere; remove the field to \
                         allow every branch"
                            .into(),
                    ));
                }
            }
        }
    }
    let mut issuers = HashSet::new();
    for (i, issuer) in auth.oidc.iter().enumerate() {
        let at = format!("auth.oidc[{i}]");
        check_issuer_url(&issuer.issuer).map_err(|m| invalid(format!("{at}.issuer"), m))?;
        if !issuers.insert(issuer.issuer.as_str()) {
            return Err(invalid(
                format!("{at}.issuer"),
                format!("issuer `{}` is configured twice", issuer.issuer),
            ));
        }
        if issuer.audience.trim().is_empty() {
            return Err(invalid(
                format!("{at}.audience"),
                "must not be empty: tokens minted for another audience must not be accepted".into(),
            ));
        }
        if let Some(jwks) = &issuer.jwks_url {
            check_issuer_url(jwks).map_err(|m| invalid(format!("{at}.jwks_url"), m))?;
        }
        if let Some(ca) = &issuer.ca_file
            && let Err(e) = std::fs::read(ca)
        {
            return Err(invalid(
                format!("{at}.ca_file"),
                format!("cannot read {}: {e}", ca.display()),
            ));
        }
        if let Some(algorithms) = &issuer.algorithms {
            if algorithms.is_empty() {
                return Err(invalid(
                    format!("{at}.algorithms"),
                    "is empty; remove it for the default (RS256, ES256)".into(),
                ));
            }
            for (j, alg) in algorithms.iter().enumerate() {
                if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                    return Err(invalid(
                        format!("{at}.algorithms[{j}]"),
                        format!(
                            "`{alg}` is not accepted; choose from {} (HMAC and `none` never are)",
                            SUPPORTED_ALGORITHMS.join(", ")
                        ),
                    ));
                }
            }
        }
        if issuer.clock_skew_seconds > MAX_CLOCK_SKEW_SECONDS {
            return Err(invalid(
                format!("{at}.clock_skew_seconds"),
                format!("must be at most {MAX_CLOCK_SKEW_SECONDS}"),
            ));
        }
        if issuer.rules.is_empty() {
            return Err(invalid(
                format!("{at}.rules"),
                "lists no rule, so no token of this issuer could do anything".into(),
            ));
        }
        for (j, rule) in issuer.rules.iter().enumerate() {
            let rule_at = format!("{at}.rules[{j}]");
            if rule.claims.is_empty() {
                return Err(invalid(
                    format!("{rule_at}.claims"),
                    "names no claim, so every token of the issuer (any repository, any \
                     project) would match; name at least one"
                        .into(),
                ));
            }
            for (claim, pattern) in &rule.claims {
                if pattern.patterns().is_empty() {
                    return Err(invalid(
                        format!("{rule_at}.claims.{claim}"),
                        "is an empty list".into(),
                    ));
                }
            }
            validate_grant(&rule.grant, &format!("{rule_at}.grant"), repositories)
                .map_err(|(f, m)| invalid(f, m))?;
        }
    }
    Ok(())
}

fn validate_grant(
    grant: &GrantConfig,
    at: &str,
    repositories: &HashSet<&str>,
) -> Result<(), (String, String)> {
    if grant.verbs.is_empty() {
        return Err((
            format!("{at}.verbs"),
            "lists no verb; name some (deploy, artifact.push, release, promote, rollback, \
             unpin, policy.write, reindex, rollout.report, read) or `*`"
                .into(),
        ));
    }
    for (field, list) in [
        ("services", &grant.services),
        ("environments", &grant.environments),
        ("repositories", &grant.repositories),
        ("branches", &grant.branches),
        ("paths", &grant.paths),
    ] {
        if let Some(list) = list
            && list.is_empty()
        {
            return Err((
                format!("{at}.{field}"),
                format!("is empty, so the grant allows nothing; remove it to allow every {field}"),
            ));
        }
    }
    if let Some(list) = &grant.repositories {
        check_repositories(list, &format!("{at}.repositories"), repositories)?;
    }
    Ok(())
}

fn check_repositories(
    list: &[String],
    at: &str,
    repositories: &HashSet<&str>,
) -> Result<(), (String, String)> {
    for (j, repo) in list.iter().enumerate() {
        if repo != "*" && !repositories.contains(repo.as_str()) {
            return Err((
                format!("{at}[{j}]"),
                format!("`{repo}` is not a configured repository name"),
            ));
        }
    }
    Ok(())
}
