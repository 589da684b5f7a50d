//! Who calls, and what they may do.
//!
//! Two kinds of credential: static bearer tokens and OIDC identity tokens issued by CI
//! platforms ([`oidc`]). Both end as a [`Principal`] holding [`Grant`]s; every operation asks
//! [`Principal::check`] once, in the service core, whatever transport it came by.
//!
//! The configuration holds only the SHA-256 of each static token: a leaked configuration file
//! grants nothing. A presented token is hashed and compared with every configured hash in
//! constant time, so response timing reveals neither which token matched nor how much of one
//! did.
//!
//! Branch patterns (in grants and OIDC claim rules) are exact names or globs where `*` matches
//! within one path segment (`release/*` matches `release/1.2` but not `release/1.2/hotfix`),
//! `**` matches across segments and `?` matches one character other than `/`.

pub mod grant;
pub mod oidc;

use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, AuthMode, TokenConfig};

pub use grant::{Grant, Target, Verb};

/// Who a request runs as, recorded as the job's `requested_by`, the commit's `Tug-Actor` and
/// the audit record's actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name, the identity token's subject, or `anonymous` without
    /// authentication.
    pub name: String,
    pub anonymous: bool,
    /// For identity tokens: issuer, subject and the rules that matched (the audit's
    /// `actor_detail`).
    pub detail: Option<serde_json::Value>,
    grants: Vec<Grant>,
}

impl Principal {
    /// Whether this caller may do `verb` on `target`; a 403 names the missing grant.
    pub fn check(&self, verb: Verb, target: &Target) -> Result<(), AuthError> {
        if self.grants.iter().any(|g| g.allows(verb, target)) {
            return Ok(());
        }
        let who = match &self.detail {
            Some(_) => format!("identity `{}`", self.name),
            None => format!("token `{}`", self.name),
        };
        Err(AuthError::Forbidden {
            actor: self.name.clone(),
            message: format!("{who} has no grant for {}", target.describe(verb)),
            missing: Some(target.to_json(verb)),
        })
    }

    /// [`Principal::check`] as a yes or no.
    pub fn may(&self, verb: Verb, target: &Target) -> bool {
        self.check(verb, target).is_ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that is not valid. Maps to HTTP 401 / gRPC `UNAUTHENTICATED`.
    #[error("{reason}")]
    Unauthenticated { reason: String },
    /// A valid credential without the grant asked for. Maps to HTTP 403 / gRPC
    /// `PERMISSION_DENIED`; `missing` is the grant that would have allowed the call.
    #[error("{message}")]
    Forbidden {
        actor: String,
        message: String,
        missing: Option<serde_json::Value>,
    },
    /// An identity issuer's keys could not be fetched: not the caller's fault, worth a retry.
    /// Maps to HTTP 503 / gRPC `UNAVAILABLE`.
    #[error("{reason}")]
    Unavailable { reason: String },
}

impl AuthError {
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Unauthenticated { .. } => 401,
            AuthError::Forbidden { .. } => 403,
            AuthError::Unavailable { .. } => 503,
        }
    }
}

const HOW_TO_PASS: &str =
    "pass a token as `Authorization: Bearer <token>` (HTTP header or gRPC metadata)";

struct Token {
    name: String,
    sha256: [u8; 32],
    grant: Grant,
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidAuthConfig {
    #[error("auth.tokens[{index}].sha256: must be 64 hex digits")]
    TokenHash { index: usize },
    #[error(transparent)]
    Issuer(#[from] oidc::IssuerConfigError),
}

/// Checks presented tokens against the configured ones.
pub struct Authorizer {
    mode: AuthMode,
    tokens: Vec<Token>,
    issuers: Vec<oidc::Issuer>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        let issuers: Vec<&str> = self.issuers.iter().map(oidc::Issuer::issuer).collect();
        f.debug_struct("Authorizer")
            .field("mode", &self.mode)
            .field("tokens", &names)
            .field("issuers", &issuers)
            .finish()
    }
}

impl Authorizer {
    pub fn new(config: &AuthConfig) -> Result<Authorizer, InvalidAuthConfig> {
        let tokens = config
            .tokens
            .iter()
            .enumerate()
            .map(|(index, token)| {
                Token::from_config(token).ok_or(InvalidAuthConfig::TokenHash { index })
            })
            .collect::<Result<_, _>>()?;
        let issuers = config
            .oidc
            .iter()
            .enumerate()
            .map(|(index, issuer)| oidc::Issuer::new(index, issuer))
            .collect::<Result<_, _>>()?;
        Ok(Authorizer {
            mode: config.mode(),
            tokens,
            issuers,
        })
    }

    /// True when every request is accepted without a token; the server warns about it at start-up.
    pub fn is_open(&self) -> bool {
        self.mode == AuthMode::None
    }

    /// Who presents `token`, with their grants. Operations then [`Principal::check`] what
    /// they are about to do.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(anonymous());
        }
        let Some(presented) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(AuthError::Unauthenticated {
                reason: format!("this request carries no token: {HOW_TO_PASS}"),
            });
        };
        if let Some(found) = self.find_static(presented) {
            return Ok(Principal {
                name: found.name.clone(),
                anonymous: false,
                detail: None,
                grants: vec![found.grant.clone()],
            });
        }
        let not_valid = || AuthError::Unauthenticated {
            reason: format!("the token is not valid: {HOW_TO_PASS}"),
        };
        if self.issuers.is_empty() {
            return Err(not_valid());
        }
        let Some(header) = oidc::peek(presented) else {
            return Err(not_valid());
        };
        let Some(claimed) = header.iss.as_deref() else {
            return Err(AuthError::Unauthenticated {
                reason: "the identity token has no `iss` claim".to_owned(),
            });
        };
        let Some(issuer) = self.issuers.iter().find(|i| i.issuer() == claimed) else {
            let known: Vec<&str> = self.issuers.iter().map(oidc::Issuer::issuer).collect();
            return Err(AuthError::Unauthenticated {
                reason: format!(
                    "the identity token was issued by `{claimed}`, which is not a configured \
                     issuer (configured: {})",
                    known.join(", ")
                ),
            });
        };
        let identity = issuer.verify(presented, &header).await?;
        Ok(Principal {
            name: identity.subject.clone(),
            anonymous: false,
            detail: Some(oidc::detail(&identity)),
            grants: identity.grants,
        })
    }

    fn find_static(&self, presented: &str) -> Option<&Token> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every configured hash is compared, so the time taken does not depend on which matched.
        let mut found = None;
        for candidate in &self.tokens {
            if constant_time_eq(&candidate.sha256, &digest) {
                found = Some(candidate);
            }
        }
        found
    }
}

impl Token {
    fn from_config(config: &TokenConfig) -> Option<Token> {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&config.sha256, &mut sha256).ok()?;
        Some(Token {
            name: config.name.clone(),
            sha256,
            grant: Grant::from_config(&config.effective_grant()),
        })
    }
}

fn anonymous() -> Principal {
    Principal {
        name: "anonymous".to_owned(),
        anonymous: true,
        detail: None,
        grants: vec![Grant::all()],
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` header value (scheme
/// case-insensitive).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The hex SHA-256 of a token, as `auth.tokens[].sha256` expects it.
pub fn token_sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// Matches a branch name against an exact name or a glob (see the module documentation).
pub fn branch_matches(pattern: &str, branch: &str) -> bool {
    glob_match(pattern.as_bytes(), branch.as_bytes())
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        [b'*', rest @ ..] => {
            let segment_end = text.iter().position(|&c| c == b'/').unwrap_or(text.len());
            (0..=segment_end).any(|skip| glob_match(rest, &text[skip..]))
        }
        [b'?', rest @ ..] => match text {
            [c, text_rest @ ..] if *c != b'/' => glob_match(rest, text_rest),
            _ => false,
        },
        [p, rest @ ..] => match text {
            [c, text_rest @ ..] if c == p => glob_match(rest, text_rest),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GrantConfig, VerbName};

    fn token(
        name: &str,
        secret: &str,
        repositories: &[&str],
        branches: Option<&[&str]>,
    ) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            sha256: token_sha256_hex(secret),
            repositories: Some(repositories.iter().map(|r| (*r).into()).collect()),
            branches: branches.map(|b| b.iter().map(|b| (*b).into()).collect()),
            grant: None,
        }
    }

    fn authorizer(tokens: Vec<TokenConfig>) -> Authorizer {
        Authorizer::new(&AuthConfig {
            mode: None,
            tokens,
            oidc: Vec::new(),
        })
        .unwrap()
    }

    fn write(repository: &str, branch: &str) -> Target {
        Target::new().branch(repository, branch)
    }

    async fn authorize(
        auth: &Authorizer,
        presented: Option<&str>,
        repository: &str,
        branch: &str,
    ) -> Result<Principal, AuthError> {
        let principal = auth.authenticate(presented).await?;
        principal.check(Verb::Deploy, &write(repository, branch))?;
        Ok(principal)
    }

    #[test]
    fn known_hash_of_test() {
        // `printf %s test | sha256sum`
        assert_eq!(
            token_sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[tokio::test]
    async fn valid_token_in_scope_is_its_named_principal() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["platform"], Some(&["main"]))]);
        let principal = authorize(&auth, Some("tok-ci"), "platform", "main")
            .await
            .unwrap();
        assert_eq!(principal.name, "ci");
        assert!(!principal.anonymous);
        assert_eq!(principal.detail, None);
    }

    #[tokio::test]
    async fn missing_token_is_unauthenticated_and_says_how_to_pass_one() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["*"], None)]);
        for presented in [None, Some(""), Some("  ")] {
            let error = auth.authenticate(presented).await.unwrap_err();
            assert_eq!(error.http_status(), 401);
            assert!(
                error.to_string().contains("Authorization: Bearer"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn wrong_token_is_unauthenticated_without_echoing_it() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["*"], None)]);
        let error = auth.authenticate(Some("tok-guess")).await.unwrap_err();
        assert_eq!(error.http_status(), 401);
        assert!(!error.to_string().contains("tok-guess"));
    }

    #[tokio::test]
    async fn other_repository_is_forbidden_naming_token_and_missing_grant() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["platform"], None)]);
        let error = authorize(&auth, Some("tok-ci"), "apps", "main")
            .await
            .unwrap_err();
        assert_eq!(error.http_status(), 403);
        assert_eq!(
            error.to_string(),
            "token `ci` has no grant for `deploy` on repository `apps`, branch `main`"
        );
    }

    #[tokio::test]
    async fn other_branch_is_forbidden() {
        let auth = authorizer(vec![token(
            "ci",
            "tok-ci",
            &["platform"],
            Some(&["main", "release/*"]),
        )]);
        assert!(
            authorize(&auth, Some("tok-ci"), "platform", "release/1.2")
                .await
                .is_ok()
        );
        let error = authorize(&auth, Some("tok-ci"), "platform", "dev")
            .await
            .unwrap_err();
        assert_eq!(error.http_status(), 403);
        assert!(error.to_string().contains("branch `dev`"), "{error}");
    }

    #[tokio::test]
    async fn the_older_token_form_grants_every_verb_in_its_scope() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["platform"], None)]);
        let principal = auth.authenticate(Some("tok-ci")).await.unwrap();
        for verb in [Verb::Release, Verb::PolicyWrite, Verb::Read, Verb::Unpin] {
            let target = Target::new()
                .service("api")
                .environment("prod")
                .branch("platform", "main");
            assert!(principal.may(verb, &target), "{verb}");
        }
        // Reading a job names no repository: any valid token may.
        assert!(principal.may(Verb::Read, &Target::new()));
    }

    #[tokio::test]
    async fn a_grant_limits_verbs_services_and_environments() {
        let mut config = token("ci", "tok-ci", &[], None);
        config.repositories = None;
        config.grant = Some(GrantConfig {
            verbs: vec![VerbName::ArtifactPush, VerbName::Release],
            services: Some(vec!["api".into()]),
            environments: Some(vec!["dev".into()]),
            repositories: None,
            branches: None,
            paths: None,
        });
        let auth = authorizer(vec![config]);
        let principal = auth.authenticate(Some("tok-ci")).await.unwrap();
        let dev = Target::new().service("api").environment("dev");
        assert!(principal.may(Verb::Release, &dev));
        let error = principal
            .check(Verb::Release, &dev.clone().environment("prod"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "token `ci` has no grant for `release` on service `api`, environment `prod`"
        );
        assert!(!principal.may(Verb::Rollback, &dev));
        assert!(!principal.may(Verb::PolicyWrite, &Target::new().service("api")));
    }

    #[tokio::test]
    async fn each_token_gets_its_own_scope() {
        let auth = authorizer(vec![
            token("ci", "tok-ci", &["platform"], None),
            token("ops", "tok-ops", &["*"], None),
        ]);
        assert_eq!(
            authorize(&auth, Some("tok-ops"), "apps", "main")
                .await
                .unwrap()
                .name,
            "ops"
        );
        assert!(
            authorize(&auth, Some("tok-ci"), "apps", "main")
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn mode_none_admits_anonymous_everywhere() {
        let auth = Authorizer::new(&AuthConfig {
            mode: Some(AuthMode::None),
            tokens: vec![],
            oidc: vec![],
        })
        .unwrap();
        assert!(auth.is_open());
        let principal = authorize(&auth, None, "any", "thing").await.unwrap();
        assert!(principal.anonymous);
        assert_eq!(principal.name, "anonymous");
        assert!(principal.may(Verb::PolicyWrite, &Target::new().service("x")));
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }

    #[test]
    fn branch_globs() {
        assert!(branch_matches("main", "main"));
        assert!(!branch_matches("main", "main2"));
        assert!(branch_matches("release/*", "release/1.2"));
        assert!(!branch_matches("release/*", "release/1.2/hotfix"));
        assert!(branch_matches("release/**", "release/1.2/hotfix"));
        assert!(branch_matches("env-?", "env-a"));
        assert!(!branch_matches("env-?", "env-ab"));
        assert!(!branch_matches("env-?", "env-/"));
        assert!(branch_matches("*", "feature"));
        assert!(!branch_matches("*", "feature/x"));
    }

    #[test]
    fn debug_lists_token_names_not_hashes() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["*"], None)]);
        let debug = format!("{auth:?}");
        assert!(debug.contains("ci"));
        assert!(!debug.contains(&token_sha256_hex("tok-ci")));
    }
}
