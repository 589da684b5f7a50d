//! Bearer-token authorisation of deploy requests.
//!
//! The configuration holds only the SHA-256 of each token: a leaked configuration file grants
//! nothing. A presented token is hashed and compared with every configured hash in constant time,
//! so response timing reveals neither which token matched nor how much of one did.
//!
//! Scopes: a token lists the repositories (configured names, `*` for all) and optionally the
//! branches it may write to. A branch pattern is an exact name or a glob where `*` matches within
//! one path segment (`release/*` matches `release/1.2` but not `release/1.2/hotfix`), `**` matches
//! across segments and `?` matches one character other than `/`.

use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, AuthMode, TokenConfig};

/// Who a request runs as, recorded as the job's `requested_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name, or `anonymous` without authentication.
    pub name: String,
    pub anonymous: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that matches no configured token. Maps to HTTP 401 /
    /// gRPC `UNAUTHENTICATED`.
    #[error(
        "{reason}: pass a token as `Authorization: Bearer <token>` (HTTP header or gRPC metadata)"
    )]
    Unauthenticated { reason: &'static str },
    /// A valid token outside its scope. Maps to HTTP 403 / gRPC `PERMISSION_DENIED`.
    #[error("token `{token}` may not write to {what}")]
    Forbidden { token: String, what: String },
}

impl AuthError {
    pub fn http_status(&self) -> u16 {
        match self {
            AuthError::Unauthenticated { .. } => 401,
            AuthError::Forbidden { .. } => 403,
        }
    }
}

struct Token {
    name: String,
    sha256: [u8; 32],
    /// `None` means every repository.
    repositories: Option<Vec<String>>,
    /// `None` means every branch.
    branches: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("auth.tokens[{index}].sha256: must be 64 hex digits")]
pub struct InvalidTokenHash {
    pub index: usize,
}

/// Checks presented tokens against the configured ones.
pub struct Authorizer {
    mode: AuthMode,
    tokens: Vec<Token>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Authorizer")
            .field("mode", &self.mode)
            .field("tokens", &names)
            .finish()
    }
}

impl Authorizer {
    pub fn new(config: &AuthConfig) -> Result<Authorizer, InvalidTokenHash> {
        let tokens = config
            .tokens
            .iter()
            .enumerate()
            .map(|(index, token)| Token::from_config(token).ok_or(InvalidTokenHash { index }))
            .collect::<Result<_, _>>()?;
        Ok(Authorizer {
            mode: config.mode(),
            tokens,
        })
    }

    /// True when every request is accepted without a token; the server warns about it at start-up.
    pub fn is_open(&self) -> bool {
        self.mode == AuthMode::None
    }

    /// Who presents `token`, without checking a scope (reading jobs needs only a valid token).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        self.find(token).map(|token| match token {
            Some(token) => Principal {
                name: token.name.clone(),
                anonymous: false,
            },
            None => anonymous(),
        })
    }

    /// Whether `token` may write to `branch` of the repository configured as `repository`.
    pub fn authorize(
        &self,
        token: Option<&str>,
        repository: &str,
        branch: &str,
    ) -> Result<Principal, AuthError> {
        let Some(found) = self.find(token)? else {
            return Ok(anonymous());
        };
        let repository_allowed = found
            .repositories
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == repository));
        if !repository_allowed {
            return Err(AuthError::Forbidden {
                token: found.name.clone(),
                what: format!("repository `{repository}`"),
            });
        }
        let branch_allowed = found.branches.as_ref().is_none_or(|patterns| {
            patterns
                .iter()
                .any(|pattern| branch_matches(pattern, branch))
        });
        if !branch_allowed {
            return Err(AuthError::Forbidden {
                token: found.name.clone(),
                what: format!("branch `{branch}` of repository `{repository}`"),
            });
        }
        Ok(Principal {
            name: found.name.clone(),
            anonymous: false,
        })
    }

    /// `Ok(None)` without authentication; the matching token otherwise.
    fn find(&self, token: Option<&str>) -> Result<Option<&Token>, AuthError> {
        if self.mode == AuthMode::None {
            return Ok(None);
        }
        let Some(presented) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(AuthError::Unauthenticated {
                reason: "this request carries no token",
            });
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every configured hash is compared, so the time taken does not depend on which matched.
        let mut found = None;
        for candidate in &self.tokens {
            if constant_time_eq(&candidate.sha256, &digest) {
                found = Some(candidate);
            }
        }
        found.map(Some).ok_or(AuthError::Unauthenticated {
            reason: "the token is not valid",
        })
    }
}

impl Token {
    fn from_config(config: &TokenConfig) -> Option<Token> {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&config.sha256, &mut sha256).ok()?;
        let repositories = if config.repositories.iter().any(|name| name == "*") {
            None
        } else {
            Some(config.repositories.clone())
        };
        Some(Token {
            name: config.name.clone(),
            sha256,
            repositories,
            branches: config.branches.clone(),
        })
    }
}

fn anonymous() -> Principal {
    Principal {
        name: "anonymous".to_owned(),
        anonymous: true,
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

    fn token(
        name: &str,
        secret: &str,
        repositories: &[&str],
        branches: Option<&[&str]>,
    ) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            sha256: token_sha256_hex(secret),
            repositories: repositories.iter().map(|r| (*r).into()).collect(),
            branches: branches.map(|b| b.iter().map(|b| (*b).into()).collect()),
        }
    }

    fn authorizer(tokens: Vec<TokenConfig>) -> Authorizer {
        Authorizer::new(&AuthConfig { mode: None, tokens }).unwrap()
    }

    #[test]
    fn known_hash_of_test() {
        // `printf %s test | sha256sum`
        assert_eq!(
            token_sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn valid_token_in_scope_is_its_named_principal() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["platform"], Some(&["main"]))]);
        let principal = auth.authorize(Some("tok-ci"), "platform", "main").unwrap();
        assert_eq!(
            principal,
            Principal {
                name: "ci".into(),
                anonymous: false
            }
        );
    }

    #[test]
    fn missing_token_is_unauthenticated_and_says_how_to_pass_one() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["*"], None)]);
        for presented in [None, Some(""), Some("  ")] {
            let error = auth.authorize(presented, "platform", "main").unwrap_err();
            assert_eq!(error.http_status(), 401);
            assert!(
                error.to_string().contains("Authorization: Bearer"),
                "{error}"
            );
        }
    }

    #[test]
    fn wrong_token_is_unauthenticated_without_echoing_it() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["*"], None)]);
        let error = auth
            .authorize(Some("tok-guess"), "platform", "main")
            .unwrap_err();
        assert_eq!(error.http_status(), 401);
        assert!(!error.to_string().contains("tok-guess"));
    }

    #[test]
    fn other_repository_is_forbidden_naming_token_and_repository() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["platform"], None)]);
        let error = auth.authorize(Some("tok-ci"), "apps", "main").unwrap_err();
        assert_eq!(error.http_status(), 403);
        assert_eq!(
            error.to_string(),
            "token `ci` may not write to repository `apps`"
        );
    }

    #[test]
    fn other_branch_is_forbidden_naming_branch_and_repository() {
        let auth = authorizer(vec![token(
            "ci",
            "tok-ci",
            &["platform"],
            Some(&["main", "release/*"]),
        )]);
        assert!(
            auth.authorize(Some("tok-ci"), "platform", "release/1.2")
                .is_ok()
        );
        let error = auth
            .authorize(Some("tok-ci"), "platform", "dev")
            .unwrap_err();
        assert_eq!(error.http_status(), 403);
        assert_eq!(
            error.to_string(),
            "token `ci` may not write to branch `dev` of repository `platform`"
        );
    }

    #[test]
    fn each_token_gets_its_own_scope() {
        let auth = authorizer(vec![
            token("ci", "tok-ci", &["platform"], None),
            token("ops", "tok-ops", &["*"], None),
        ]);
        assert_eq!(
            auth.authorize(Some("tok-ops"), "apps", "main")
                .unwrap()
                .name,
            "ops"
        );
        assert!(auth.authorize(Some("tok-ci"), "apps", "main").is_err());
    }

    #[test]
    fn authenticate_ignores_scope() {
        let auth = authorizer(vec![token("ci", "tok-ci", &["platform"], Some(&["main"]))]);
        assert_eq!(auth.authenticate(Some("tok-ci")).unwrap().name, "ci");
        assert_eq!(
            auth.authenticate(Some("nope")).unwrap_err().http_status(),
            401
        );
    }

    #[test]
    fn mode_none_admits_anonymous() {
        let auth = Authorizer::new(&AuthConfig {
            mode: Some(AuthMode::None),
            tokens: vec![],
        })
        .unwrap();
        assert!(auth.is_open());
        let principal = auth.authorize(None, "any", "thing").unwrap();
        assert!(principal.anonymous);
        assert_eq!(principal.name, "anonymous");
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
