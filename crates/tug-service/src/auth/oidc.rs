//! Identity tokens (OIDC id tokens) that CI platforms issue to a running job.
//!
//! Verification is jsonwebtoken's; what is tug's: choosing the issuer by the token's `iss`
//! (exactly as configured), the algorithm allow-list (never `none`, never HMAC: a public key
//! used as an HMAC secret would let anyone sign), fetching the issuer's keys over https (OpenID
//! discovery or a configured JWKS URL) and fetching them again when a token names a key tug
//! does not know — at most once per `jwks_min_refresh_seconds`, so tokens with made-up key ids
//! cannot make tug hammer the issuer — and mapping claims to grants through rules.
//!
//! Messages name the issuer, the key id, the algorithm or the claim at fault, never the token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::OidcIssuerConfig;
use crate::config::auth::{DEFAULT_ALGORITHMS, check_issuer_url, is_loopback_http};

use super::grant::Grant;
use super::{AuthError, branch_matches};

/// Keys older than this are fetched again before use, so a key the issuer withdrew stops
/// being accepted within the hour even if no token ever names an unknown key.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Time limit of one discovery or JWKS request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Who an identity token says the caller is, and what the matching rules grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    /// Indexes of the rules that matched (`auth.oidc[i].rules[j]`).
    pub rules: Vec<usize>,
    pub grants: Vec<Grant>,
}

struct Rule {
    claims: Vec<(String, Vec<String>)>,
    grant: Grant,
}

struct Keys {
    set: JwkSet,
    fetched_at: Instant,
}

/// One configured issuer with its key cache.
pub struct Issuer {
    index: usize,
    issuer: String,
    audience: String,
    jwks_url: Option<String>,
    algorithms: Vec<Algorithm>,
    clock_skew: u64,
    min_refresh: Duration,
    rules: Vec<Rule>,
    client: reqwest::Client,
    /// Held across a fetch, so concurrent requests with a new key id fetch once.
    keys: tokio::sync::Mutex<Option<Keys>>,
}

/// A problem with an issuer's configuration found at start-up.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct IssuerConfigError {
    pub field: String,
    pub message: String,
}

impl Issuer {
    pub fn new(index: usize, config: &OidcIssuerConfig) -> Result<Issuer, IssuerConfigError> {
        let at = format!("auth.oidc[{index}]");
        let algorithms = config
            .algorithms
            .clone()
            .unwrap_or_else(|| DEFAULT_ALGORITHMS.iter().map(|&a| a.to_owned()).collect())
            .iter()
            .map(|name| {
                name.parse::<Algorithm>().map_err(|_| IssuerConfigError {
                    field: format!("{at}.algorithms"),
                    message: format!("`{name}` is not an algorithm"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!is_loopback_http(&config.issuer));
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file).map_err(|e| IssuerConfigError {
                field: format!("{at}.ca_file"),
                message: format!("cannot read {}: {e}", ca_file.display()),
            })?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| IssuerConfigError {
                    field: format!("{at}.ca_file"),
                    message: format!("{} holds no PEM certificate: {e}", ca_file.display()),
                })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let client = builder.build().map_err(|e| IssuerConfigError {
            field: at.clone(),
            message: format!("cannot build an HTTP client: {e}"),
        })?;
        let rules = config
            .rules
            .iter()
            .map(|rule| Rule {
                claims: rule
                    .claims
                    .iter()
                    .map(|(claim, pattern)| (claim.clone(), pattern.patterns().to_vec()))
                    .collect(),
                grant: Grant::from_config(&rule.grant),
            })
            .collect();
        Ok(Issuer {
            index,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            jwks_url: config.jwks_url.clone(),
            algorithms,
            clock_skew: config.clock_skew_seconds,
            min_refresh: Duration::from_secs(config.jwks_min_refresh_seconds),
            rules,
            client,
            keys: tokio::sync::Mutex::new(None),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies `token` (whose unverified header is `header`) and maps its claims to grants.
    pub(super) async fn verify(
        &self,
        token: &str,
        header: &UnverifiedHeader,
    ) -> Result<Identity, AuthError> {
        let alg = header
            .alg
            .parse::<Algorithm>()
            .ok()
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| {
                let allowed: Vec<String> =
                    self.algorithms.iter().map(|a| format!("{a:?}")).collect();
                unauthenticated(format!(
                    "the identity token is signed with `{}`, which issuer {} is not trusted \
                     for (accepted: {})",
                    header.alg,
                    self.issuer,
                    allowed.join(", ")
                ))
            })?;
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(key_alg) = jwk.common.key_algorithm
            && format!("{key_alg:?}") != format!("{alg:?}")
        {
            return Err(unauthenticated(format!(
                "the identity token is signed with `{alg:?}` but key `{}` of issuer {} is for \
                 `{key_alg:?}`",
                header.kid.as_deref().unwrap_or("(none)"),
                self.issuer
            )));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| {
            unauthenticated(format!(
                "key `{}` of issuer {} cannot be used: {e}",
                header.kid.as_deref().unwrap_or("(none)"),
                self.issuer
            ))
        })?;
        let mut validation = Validation::new(alg);
        validation.leeway = self.clock_skew;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| self.rejection(&e))?;
        let claims = data.claims;
        if let Some(iat) = claims.get("iat").and_then(Value::as_u64) {
            let now = jsonwebtoken::get_current_timestamp();
            if iat > now + self.clock_skew {
                return Err(unauthenticated(format!(
                    "the identity token of issuer {} claims to be issued in the future \
                     (iat {iat}, now {now}); check the clocks",
                    self.issuer
                )));
            }
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("(no subject)")
            .to_owned();
        let mut rules = Vec::new();
        let mut grants = Vec::new();
        for (j, rule) in self.rules.iter().enumerate() {
            if rule
                .claims
                .iter()
                .all(|(name, patterns)| claim_matches(claims.get(name), patterns))
            {
                rules.push(j);
                grants.push(rule.grant.clone());
            }
        }
        if rules.is_empty() {
            return Err(AuthError::Forbidden {
                actor: subject.clone(),
                message: format!(
                    "no rule of auth.oidc[{}] (issuer {}) matches identity `{subject}` ({})",
                    self.index,
                    self.issuer,
                    self.claims_looked_at(&claims)
                ),
                missing: None,
            });
        }
        Ok(Identity {
            issuer: self.issuer.clone(),
            subject,
            rules,
            grants,
        })
    }

    /// `repository=acme/other, ref=refs/heads/main`: the claims the rules look at, as the token
    /// has them, so a 403 says what to put in a rule.
    fn claims_looked_at(&self, claims: &Map<String, Value>) -> String {
        let names: std::collections::BTreeSet<&str> = self
            .rules
            .iter()
            .flat_map(|r| r.claims.iter().map(|(n, _)| n.as_str()))
            .collect();
        let parts: Vec<String> = names
            .into_iter()
            .map(|name| match claims.get(name) {
                Some(Value::String(s)) => format!("{name}={s}"),
                Some(other) => format!("{name}={other}"),
                None => format!("{name} absent"),
            })
            .collect();
        parts.join(", ")
    }

    fn rejection(&self, e: &jsonwebtoken::errors::Error) -> AuthError {
        use jsonwebtoken::errors::ErrorKind as K;
        let issuer = &self.issuer;
        let message = match e.kind() {
            K::ExpiredSignature => format!("the identity token of issuer {issuer} has expired"),
            K::ImmatureSignature => {
                format!("the identity token of issuer {issuer} is not valid yet (nbf)")
            }
            K::InvalidAudience => format!(
                "the identity token of issuer {issuer} was issued for another audience; this \
                 server accepts audience `{}`",
                self.audience
            ),
            K::InvalidIssuer => format!("the identity token's issuer is not {issuer}"),
            K::InvalidSignature => {
                format!("the identity token's signature does not verify with issuer {issuer}'s key")
            }
            K::InvalidAlgorithm => {
                format!("the identity token's algorithm does not fit the key of issuer {issuer}")
            }
            K::MissingRequiredClaim(claim) => {
                format!("the identity token of issuer {issuer} has no `{claim}` claim")
            }
            K::InvalidClaimFormat(claim) => {
                format!("the identity token of issuer {issuer} has a malformed `{claim}` claim")
            }
            _ => format!("the identity token of issuer {issuer} is malformed"),
        };
        unauthenticated(message)
    }

    /// The key `kid` names, fetching the issuer's keys when they are unknown, old, or do not
    /// hold it (the last at most once per `min_refresh`).
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, AuthError> {
        let mut cached = self.keys.lock().await;
        let stale = cached
            .as_ref()
            .is_none_or(|k| k.fetched_at.elapsed() >= KEYS_MAX_AGE);
        if stale {
            *cached = Some(self.fetch_keys().await?);
        }
        if let Some(jwk) = cached.as_ref().and_then(|k| find(&k.set, kid)) {
            return Ok(jwk);
        }
        let may_refresh = cached
            .as_ref()
            .is_none_or(|k| k.fetched_at.elapsed() >= self.min_refresh);
        if !stale && may_refresh {
            *cached = Some(self.fetch_keys().await?);
            if let Some(jwk) = cached.as_ref().and_then(|k| find(&k.set, kid)) {
                return Ok(jwk);
            }
        }
        Err(unauthenticated(match kid {
            Some(kid) => format!(
                "the identity token names key `{kid}`, which issuer {} does not publish",
                self.issuer
            ),
            None => format!(
                "the identity token names no key (`kid`) and issuer {} publishes several",
                self.issuer
            ),
        }))
    }

    async fn fetch_keys(&self) -> Result<Keys, AuthError> {
        let jwks_url = match &self.jwks_url {
            Some(url) => url.clone(),
            None => self.discover().await?,
        };
        let set: JwkSet = self.get_json(&jwks_url, "keys").await.and_then(|v| {
            serde_json::from_value(v).map_err(|e| {
                unavailable(format!(
                    "the keys of issuer {} at {jwks_url} are not a JWK set: {e}",
                    self.issuer
                ))
            })
        })?;
        tracing::info!(issuer = %self.issuer, keys = set.keys.len(), "fetched identity keys");
        Ok(Keys {
            set,
            fetched_at: Instant::now(),
        })
    }

    /// The `jwks_uri` of the issuer's OpenID configuration.
    async fn discover(&self) -> Result<String, AuthError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let document = self.get_json(&url, "OpenID configuration").await?;
        let declared = document.get("issuer").and_then(Value::as_str);
        if declared != Some(self.issuer.as_str()) {
            return Err(unavailable(format!(
                "the OpenID configuration at {url} declares issuer {declared:?}, not {}",
                self.issuer
            )));
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                unavailable(format!("the OpenID configuration at {url} has no jwks_uri"))
            })?;
        check_issuer_url(jwks_uri)
            .map_err(|m| unavailable(format!("the OpenID configuration at {url}: jwks_uri {m}")))?;
        Ok(jwks_uri.to_owned())
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, AuthError> {
        let fail = |reason: String| {
            unavailable(format!(
                "cannot fetch the {what} of issuer {} from {url}: {reason}",
                self.issuer
            ))
        };
        let response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fail(without_url(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        response
            .json::<Value>()
            .await
            .map_err(|e| fail(without_url(&e)))
    }
}

/// reqwest's error in words, without the URL it repeats (the caller's message has it).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() {
        "the answer is not JSON"
    } else {
        "request failed"
    };
    let mut innermost = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        innermost = Some(s.to_string());
        source = s.source();
    }
    match innermost {
        Some(detail) => format!("{kind}: {detail}"),
        None => kind.to_owned(),
    }
}

/// The verification key for `kid`; without a `kid`, the only key of the set. Symmetric keys
/// are never used: an issuer's keys are public.
fn find(set: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    let usable = |jwk: &&Jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_));
    match kid {
        Some(kid) => set
            .keys
            .iter()
            .filter(usable)
            .find(|jwk| jwk.common.key_id.as_deref() == Some(kid))
            .cloned(),
        None => {
            let mut keys = set.keys.iter().filter(usable);
            match (keys.next(), keys.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            }
        }
    }
}

/// A claim matches when it is a string (or number or boolean, compared as written) matching
/// one of the patterns, or an array with such an element.
fn claim_matches(value: Option<&Value>, patterns: &[String]) -> bool {
    let one = |text: &str| patterns.iter().any(|p| branch_matches(p, text));
    match value {
        Some(Value::String(s)) => one(s),
        Some(Value::Number(n)) => one(&n.to_string()),
        Some(Value::Bool(b)) => one(if *b { "true" } else { "false" }),
        Some(Value::Array(items)) => items.iter().any(|item| match item {
            Value::String(s) => one(s),
            _ => false,
        }),
        _ => false,
    }
}

/// The parts of a JWT read before verification: which issuer to ask and which key to use.
#[derive(Debug)]
pub(super) struct UnverifiedHeader {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: Option<String>,
}

/// Reads a JWT's header and `iss` without verifying anything; `None` when `token` is not
/// shaped like a JWT (three base64url parts with JSON objects in the first two).
pub(super) fn peek(token: &str) -> Option<UnverifiedHeader> {
    let mut parts = token.split('.');
    let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |part: &str| -> Option<Map<String, Value>> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    };
    let header = decode(header)?;
    let payload = decode(payload)?;
    Some(UnverifiedHeader {
        alg: header.get("alg").and_then(Value::as_str)?.to_owned(),
        kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
        iss: payload
            .get("iss")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn unauthenticated(reason: String) -> AuthError {
    AuthError::Unauthenticated { reason }
}

fn unavailable(reason: String) -> AuthError {
    AuthError::Unavailable { reason }
}

/// The issuer-facing description of a matched identity, for the audit trail.
pub fn detail(identity: &Identity) -> Value {
    let rules: Vec<String> = identity
        .rules
        .iter()
        .map(|r| format!("rules[{r}]"))
        .collect();
    let mut map = BTreeMap::new();
    map.insert("issuer", Value::String(identity.issuer.clone()));
    map.insert("subject", Value::String(identity.subject.clone()));
    map.insert("rules", Value::from(rules));
    serde_json::to_value(map).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn peek_reads_alg_kid_and_issuer_or_declines() {
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"none","kid":"k1"}"#),
            b64(r#"{"iss":"https://issuer.example"}"#)
        );
        let peeked = peek(&token).unwrap();
        assert_eq!(peeked.alg, "none");
        assert_eq!(peeked.kid.as_deref(), Some("k1"));
        assert_eq!(peeked.iss.as_deref(), Some("https://issuer.example"));
        for not_a_jwt in ["tok-ci", "a.b.c", "a.b", &format!("{token}.extra")] {
            assert!(peek(not_a_jwt).is_none(), "{not_a_jwt}");
        }
    }

    #[test]
    fn claims_match_strings_numbers_and_arrays() {
        let patterns = vec!["refs/heads/*".to_owned()];
        assert!(claim_matches(
            Some(&Value::String("refs/heads/main".into())),
            &patterns
        ));
        assert!(!claim_matches(
            Some(&Value::String("refs/tags/v1".into())),
            &patterns
        ));
        assert!(!claim_matches(None, &patterns));
        assert!(claim_matches(
            Some(&serde_json::json!(["x", "refs/heads/dev"])),
            &patterns
        ));
        assert!(claim_matches(Some(&serde_json::json!(42)), &["42".into()]));
        assert!(claim_matches(
            Some(&serde_json::json!(true)),
            &["true".into()]
        ));
    }
}
