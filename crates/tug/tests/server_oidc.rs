//! CI identity tokens and grants against a real `tug server`: an OIDC issuer served by the test
//! on loopback (OpenID discovery and a JWKS endpoint, RSA and EC keys generated now with
//! `openssl`; one issuer over https with a private CA), tokens minted here the way GitHub Actions
//! and GitLab CI mint them, and every way a token can be wrong — each refused with a clear
//! message and never logged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::Uri;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tug_testkit::pki::{KeyType, certificates};
use tug_testkit::{BareRepo, Scratch, TugServer, free_port};

const OPS_TOKEN: &str = "tug_test_oidc_ops_0123456789abcdef";
const READER_TOKEN: &str = "tug_test_oidc_reader_0123456789ab";
const IMAGE: &str = "registry.example.com/acme/api";
const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
images:
  - name: registry.example.com/acme/api
    newTag: 0.0.1
";

fn tug_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tug"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signing key made by `openssl` for this run, with its public JWK.
struct Key {
    /// PKCS#1 DER for RSA, PKCS#8 DER for EC: what jsonwebtoken signs with.
    der: Vec<u8>,
    public_pem: Vec<u8>,
    alg: Algorithm,
    kid: String,
    jwk: Value,
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (Debian's `openssl` package) must be installed for the OIDC tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl Key {
    fn rsa(dir: &Path, kid: &str) -> Key {
        let file = format!("{kid}.pem");
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &file,
            ],
        );
        let modulus =
            String::from_utf8(openssl(dir, &["rsa", "-in", &file, "-noout", "-modulus"])).unwrap();
        let hex_modulus = modulus.trim().strip_prefix("Modulus=").unwrap();
        let n = URL_SAFE_NO_PAD.encode(hex::decode(hex_modulus).unwrap());
        Key {
            der: openssl(
                dir,
                &["rsa", "-in", &file, "-outform", "DER", "-traditional"],
            ),
            public_pem: openssl(dir, &["pkey", "-in", &file, "-pubout"]),
            alg: Algorithm::RS256,
            kid: kid.to_owned(),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"}),
        }
    }

    fn ec(dir: &Path, kid: &str) -> Key {
        let file = format!("{kid}.pem");
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &file,
            ],
        );
        let der = openssl(dir, &["pkey", "-in", &file, "-pubout", "-outform", "DER"]);
        // The SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
        let point = &der[der.len() - 65..];
        assert_eq!(point[0], 4);
        Key {
            der: openssl(
                dir,
                &[
                    "pkcs8", "-topk8", "-nocrypt", "-in", &file, "-outform", "DER",
                ],
            ),
            public_pem: openssl(dir, &["pkey", "-in", &file, "-pubout"]),
            alg: Algorithm::ES256,
            kid: kid.to_owned(),
            jwk: json!({
                "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(claims, Some(&self.kid))
    }

    fn sign_as(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        let key = match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_der(&self.der),
            _ => EncodingKey::from_ec_der(&self.der),
        };
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// What the test's issuer publishes, per issuer path (`/gh`, `/gl`), and how often its keys
/// were fetched.
#[derive(Default)]
struct Published {
    keys: std::collections::BTreeMap<String, Vec<Value>>,
    fetches: std::collections::BTreeMap<String, usize>,
}

type Shared = Arc<Mutex<Published>>;

async fn issuer_http(State(shared): State<(Shared, String)>, uri: Uri) -> axum::Json<Value> {
    let (published, base) = shared;
    let path = uri.path();
    let (issuer, rest) = path[1..].split_once('/').unwrap();
    let issuer_url = format!("{base}/{issuer}");
    match rest {
        ".well-known/openid-configuration" => axum::Json(json!({
            "issuer": issuer_url,
            "jwks_uri": format!("{issuer_url}/keys"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        })),
        "keys" => {
            let mut published = published.lock().unwrap();
            *published.fetches.entry(issuer.to_owned()).or_default() += 1;
            let keys = published.keys.get(issuer).cloned().unwrap_or_default();
            axum::Json(json!({ "keys": keys }))
        }
        _ => axum::Json(json!({"error": "not found"})),
    }
}

struct World {
    repo: BareRepo,
    server: TugServer,
    base: String,
    /// The issuers served over https.
    tls_base: String,
    published: Shared,
    client_dir: Scratch,
    gh: Key,
    gh_ec: Key,
    gl_old: Key,
    gl_new: Key,
    stranger: Key,
    /// The port of the issuer whose keys cannot be fetched.
    dead_port: u16,
    _keys_dir: Scratch,
    _runtime: tokio::runtime::Runtime,
}

impl World {
    fn start() -> World {
        let keys_dir = Scratch::new().unwrap();
        let gh = Key::rsa(keys_dir.path(), "gh-rsa");
        let gh_ec = Key::ec(keys_dir.path(), "gh-ec");
        let gl_old = Key::rsa(keys_dir.path(), "gl-1");
        let gl_new = Key::ec(keys_dir.path(), "gl-2");
        let stranger = Key::rsa(keys_dir.path(), "gh-rsa-stranger");

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let published = Shared::default();
        {
            let mut p = published.lock().unwrap();
            p.keys
                .insert("gh".into(), vec![gh.jwk.clone(), gh_ec.jwk.clone()]);
            p.keys.insert("gl".into(), vec![gl_old.jwk.clone()]);
            p.keys.insert("private".into(), vec![gh.jwk.clone()]);
            p.keys.insert("untrusted".into(), vec![gh.jwk.clone()]);
        }
        let app = Router::new()
            .fallback(issuer_http)
            .with_state((published.clone(), base.clone()));
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });

        // The same issuer over https, with a certificate from a private CA.
        let pki = certificates(keys_dir.path(), KeyType::EcP256).unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        tls_listener.set_nonblocking(true).unwrap();
        let tls_base = format!("https://{}", tls_listener.local_addr().unwrap());
        let tls_config = runtime
            .block_on(axum_server::tls_rustls::RustlsConfig::from_pem_file(
                &pki.cert, &pki.key,
            ))
            .unwrap();
        let tls_app = Router::new()
            .fallback(issuer_http)
            .with_state((published.clone(), tls_base.clone()));
        runtime.spawn(async move {
            axum_server::from_tcp_rustls(tls_listener, tls_config)
                .unwrap()
                .serve(tls_app.into_make_service())
                .await
                .unwrap();
        });

        let repo = BareRepo::with_files(&[
            ("apps/api/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
            ("apps/api/prod/kustomization.yaml", KUSTOMIZATION.as_bytes()),
            ("apps/web/dev/kustomization.yaml", KUSTOMIZATION.as_bytes()),
        ])
        .unwrap();
        let sha = |token: &str| hex::encode(Sha256::digest(token.as_bytes()));
        // Nothing listens on this port: the third issuer's keys cannot be fetched.
        let dead = free_port().unwrap();
        let config = format!(
            r#"repositories:
  - name: platform
    url: "{url}"
auth:
  tokens:
    - name: ops
      sha256: "{ops}"
      grant: {{ verbs: ["*"] }}
    - name: reader
      sha256: "{reader}"
      grant: {{ verbs: [read] }}
  oidc:
    - issuer: "{base}/gh"
      audience: tug
      rules:
        - claims: {{ repository: "acme/api", ref: "refs/heads/main" }}
          grant:
            verbs: [deploy, artifact.push, release, read]
            services: [api]
            environments: [dev]
            repositories: [platform]
            paths: ["apps/api/**"]
    - issuer: "{base}/gl"
      audience: "https://tug.example.com"
      jwks_min_refresh_seconds: 0
      rules:
        - claims: {{ project_path: "acme/*", ref_type: branch }}
          grant: {{ verbs: [deploy], branches: [main] }}
    - issuer: "{tls_base}/private"
      audience: tug
      ca_file: "{ca}"
      rules:
        - claims: {{ sub: "*" }}
          grant: {{ verbs: [deploy] }}
    - issuer: "{tls_base}/untrusted"
      audience: tug
      rules:
        - claims: {{ sub: "*" }}
          grant: {{ verbs: [deploy] }}
    - issuer: "http://127.0.0.1:{dead}/down"
      audience: tug
      jwks_url: "http://127.0.0.1:{dead}/down/keys"
      rules:
        - claims: {{ sub: "*" }}
          grant: {{ verbs: [deploy] }}
environments:
  - {{ name: dev, repository: platform, branch: main }}
  - {{ name: prod, after: dev }}
services:
  - name: api
    path: "apps/{{service}}/{{env}}"
    edit: {{ kind: kustomize }}
"#,
            url = repo.file_url(),
            ops = sha(OPS_TOKEN),
            reader = sha(READER_TOKEN),
            ca = pki.ca.display(),
        );
        let server = TugServer::start(tug_binary(), &config).unwrap();
        World {
            repo,
            server,
            base,
            tls_base,
            published,
            client_dir: Scratch::new().unwrap(),
            gh,
            gh_ec,
            gl_old,
            gl_new,
            stranger,
            dead_port: dead,
            _keys_dir: keys_dir,
            _runtime: runtime,
        }
    }

    /// The claims GitHub Actions puts in a job's id token, for `acme/api` on `main`.
    fn github_claims(&self) -> Value {
        let now = now();
        json!({
            "iss": format!("{}/gh", self.base),
            "aud": "tug",
            "sub": "repo:acme/api:ref:refs/heads/main",
            "repository": "acme/api",
            "repository_owner": "acme",
            "ref": "refs/heads/main",
            "ref_type": "branch",
            "workflow": "deploy",
            "run_id": "4242",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    /// The claims of a GitLab CI `id_tokens` entry with `aud: https://tug.example.com`.
    fn gitlab_claims(&self) -> Value {
        let now = now();
        json!({
            "iss": format!("{}/gl", self.base),
            "aud": "https://tug.example.com",
            "sub": "project_path:acme/web:ref_type:branch:ref:main",
            "project_path": "acme/web",
            "ref": "main",
            "ref_type": "branch",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        })
    }

    fn deploy_body(&self, path: &str, tag: &str) -> String {
        json!({
            "commitSpec": {"CommitMessage": format!("{path} {tag}")},
            "deploySpecs": [{
                "url": self.repo.file_url(),
                "updates": [{
                    "branch": "main",
                    "paths": [{
                        "path": path,
                        "kustomize": {"images": [{"name": IMAGE, "newTag": tag}]}
                    }]
                }]
            }]
        })
        .to_string()
    }

    /// `POST /api/v1/deploy` with `token`: the status and the last NDJSON line.
    fn deploy(&self, token: &str, path: &str, tag: &str) -> (u16, Value) {
        let (status, lines) = self
            .server
            .post_deploy(self.deploy_body(path, tag).as_bytes(), Some(token), None)
            .unwrap();
        (status, lines.last().cloned().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let response = self
            .server
            .request(
                "POST",
                path,
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &auth),
                ],
                body.to_string().as_bytes(),
            )
            .unwrap();
        (response.status, response.json().unwrap_or(Value::Null))
    }

    fn tug(&self, token: &str, args: &[&str]) -> Output {
        let url = self.server.http_url();
        TugServer::clean_command(
            tug_binary(),
            self.client_dir.path(),
            &[("TUG_SERVER", url.as_str()), ("TUG_TOKEN", token)],
        )
        .args(args)
        .current_dir(self.client_dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
    }

    fn fetches(&self, issuer: &str) -> usize {
        let published = self.published.lock().unwrap();
        published.fetches.get(issuer).copied().unwrap_or(0)
    }
}

fn message(body: &Value) -> String {
    body["message"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn identity_tokens_deploy_within_their_grants_and_every_bad_token_is_refused() {
    let world = World::start();
    let mut tokens_seen = Vec::new();

    // A GitHub Actions job deploys with its id token through the CLI: the commit names the
    // identity, the audit record the issuer, subject and rule.
    let good = world.gh.sign(&world.github_claims());
    tokens_seen.push(good.clone());
    let out = world.tug(
        &good,
        &[
            "deploy",
            "--repository",
            "platform",
            "--branch",
            "main",
            "--path",
            "apps/api/dev",
            "--image",
            &format!("{IMAGE}:1.0.0"),
        ],
    );
    assert!(
        out.status.success(),
        "tug deploy with an id token: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        world.server.logs()
    );
    let landed = world
        .repo
        .read_file("main", "apps/api/dev/kustomization.yaml")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8(landed).unwrap().contains("newTag: 1.0.0"));
    let head = world.repo.log("main").unwrap();
    assert!(
        head[0]
            .message
            .contains("Tug-Actor: repo:acme/api:ref:refs/heads/main"),
        "{}",
        head[0].message
    );
    let (status, audit) = world
        .server
        .get_json("/api/v1/audit?action=deploy", Some(OPS_TOKEN))
        .unwrap();
    assert_eq!(status, 200, "{audit}");
    let record = &audit["records"][0];
    assert_eq!(record["actor"], "repo:acme/api:ref:refs/heads/main");
    assert_eq!(record["result"], "accepted");
    assert_eq!(
        record["actorDetail"],
        json!({"issuer": format!("{}/gh", world.base),
               "subject": "repo:acme/api:ref:refs/heads/main", "rules": ["rules[0]"]})
    );

    // ES256 from the same issuer works as well.
    let ec = world.gh_ec.sign(&world.github_claims());
    tokens_seen.push(ec.clone());
    let (status, last) = world.deploy(&ec, "apps/api/dev", "1.0.1");
    assert_eq!(status, 200, "{last}");
    assert_eq!(last["result"]["status"], "succeeded", "{last}");
    let github_job = last["result"]["jobId"].as_str().unwrap().to_owned();

    // Outside the grant: another path, another environment, a verb it does not hold.
    let (status, body) = world.deploy(&good, "apps/web/dev", "1.0.2");
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        message(&body),
        "identity `repo:acme/api:ref:refs/heads/main` has no grant for `deploy` on repository \
         `platform`, branch `main`, paths `apps/web/dev`"
    );
    assert_eq!(body["details"]["missingGrant"]["verb"], "deploy");
    let (status, body) = world.post(
        "/api/v1/releases",
        &good,
        &json!({"service": "api", "environments": ["prod"], "intent": "promote"}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        message(&body).contains("no grant for `promote` on service `api`, environment `prod`"),
        "{body}"
    );
    let (status, body) = world.post(
        "/api/v1/policies/api/auto-release",
        &good,
        &json!({"branch": "main", "env": "dev"}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("`policy.write`"), "{body}");

    // A static token in the same grant model: read only.
    let (status, body) = world.deploy(READER_TOKEN, "apps/api/dev", "1.0.3");
    assert_eq!(status, 403, "{body}");
    assert!(
        message(&body).starts_with("token `reader` has no grant for `deploy`"),
        "{body}"
    );
    let (status, _) = world
        .server
        .get_json("/api/v1/jobs", Some(READER_TOKEN))
        .unwrap();
    assert_eq!(status, 200);

    // GitLab: a glob on a claim, another audience, and keys rotated at the issuer.
    let gitlab = world.gl_old.sign(&world.gitlab_claims());
    tokens_seen.push(gitlab.clone());
    let (status, last) = world.deploy(&gitlab, "apps/web/dev", "2.0.0");
    assert_eq!(status, 200, "{last}");
    // A deploy-only identity follows its own job, and nobody else's.
    let own = last["result"]["jobId"].as_str().unwrap();
    let (status, job) = world
        .server
        .get_json(&format!("/api/v1/jobs/{own}"), Some(&gitlab))
        .unwrap();
    assert_eq!(status, 200, "{job}");
    let (status, body) = world
        .server
        .get_json(&format!("/api/v1/jobs/{github_job}"), Some(&gitlab))
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("no grant for `read`"), "{body}");
    let (status, _) = world
        .server
        .get_json("/api/v1/jobs", Some(&gitlab))
        .unwrap();
    assert_eq!(status, 403);
    world
        .published
        .lock()
        .unwrap()
        .keys
        .insert("gl".into(), vec![world.gl_new.jwk.clone()]);
    let rotated = world.gl_new.sign(&world.gitlab_claims());
    tokens_seen.push(rotated.clone());
    let (status, last) = world.deploy(&rotated, "apps/web/dev", "2.0.1");
    assert_eq!(
        status, 200,
        "a key published after a rotation is fetched: {last}"
    );
    let (status, body) = world.deploy(&gitlab, "apps/web/dev", "2.0.2");
    assert_eq!(status, 401, "a withdrawn key is refused: {body}");
    assert!(message(&body).contains("does not publish"), "{body}");

    // An issuer over https with a private CA (`ca_file`) is trusted; without it, it is not.
    let private = world.gh.sign(&json!({
        "iss": format!("{}/private", world.tls_base), "aud": "tug", "sub": "private-ci",
        "exp": now() + 300,
    }));
    tokens_seen.push(private.clone());
    let (status, last) = world.deploy(&private, "apps/api/dev", "1.0.5");
    assert_eq!(status, 200, "{last}");
    let untrusted = world.gh.sign(&json!({
        "iss": format!("{}/untrusted", world.tls_base), "aud": "tug", "sub": "ci",
        "exp": now() + 300,
    }));
    tokens_seen.push(untrusted.clone());
    let (status, body) = world.deploy(&untrusted, "apps/api/dev", "9.9.8");
    assert_eq!(status, 503, "{body}");
    assert!(
        message(&body).contains("cannot fetch") && message(&body).contains("certificate"),
        "{body}"
    );

    // Every way a token can be wrong.
    let claims = world.github_claims();
    let with = |patch: Value| {
        let mut claims = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let t = now();
    let forged_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"gh-rsa"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let hmac_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("gh-rsa".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(&world.gh.public_pem),
        )
        .unwrap()
    };
    let tampered = {
        let signed = world.gh.sign(&claims);
        let parts: Vec<&str> = signed.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(
            with(json!({"repository": "acme/api", "ref": "refs/heads/main", "sub": "admin"}))
                .to_string(),
        );
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let fetches_before = world.fetches("gh");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "expired",
            world.gh.sign(&with(
                json!({"exp": t - 600, "iat": t - 900, "nbf": t - 900}),
            )),
            401,
            "has expired",
        ),
        (
            "not yet valid",
            world.gh.sign(&with(json!({"nbf": t + 600}))),
            401,
            "is not valid yet",
        ),
        (
            "wrong audience",
            world.gh.sign(&with(json!({"aud": "someone-else"}))),
            401,
            "issued for another audience; this server accepts audience `tug`",
        ),
        (
            "wrong issuer",
            world
                .gh
                .sign(&with(json!({"iss": "https://token.evil.example"}))),
            401,
            "issued by `https://token.evil.example`, which is not a configured issuer",
        ),
        (
            "unknown kid",
            world.gh.sign_as(&claims, Some("gh-unknown")),
            401,
            "names key `gh-unknown`, which issuer",
        ),
        ("alg none", forged_none, 401, "signed with `none`"),
        (
            "HMAC with the public key",
            hmac_with_public_key,
            401,
            "signed with `HS256`",
        ),
        (
            "tampered payload",
            tampered,
            401,
            "signature does not verify",
        ),
        (
            "another key under a known kid",
            world.stranger.sign_as(&claims, Some("gh-rsa")),
            401,
            "signature does not verify",
        ),
        (
            "another repository",
            world.gh.sign(&with(json!({
                "repository": "acme/other", "sub": "repo:acme/other:ref:refs/heads/main"
            }))),
            403,
            "no rule of auth.oidc[0]",
        ),
        (
            "issuer unreachable",
            world.gh.sign(&with(json!({
                "iss": format!("http://127.0.0.1:{}/down", world.dead_port)
            }))),
            503,
            "cannot fetch",
        ),
    ];
    for (what, token, want_status, want_message) in &cases {
        tokens_seen.push(token.clone());
        let (status, body) = world.deploy(token, "apps/api/dev", "9.9.9");
        assert_eq!(status, *want_status, "{what}: {body}");
        assert!(
            message(&body).contains(want_message),
            "{what}: {:?} does not contain {want_message:?}",
            message(&body)
        );
        assert!(
            !message(&body).contains(token.as_str()),
            "{what}: the answer repeats the token"
        );
    }
    // Within the allowed clock skew (60 s) a just-expired token still passes.
    let (status, last) = world.deploy(
        &world.gh.sign(&with(json!({"exp": t - 20}))),
        "apps/api/dev",
        "1.0.4",
    );
    assert_eq!(status, 200, "{last}");
    // Unknown key ids do not make tug fetch the keys again within jwks_min_refresh_seconds.
    assert_eq!(
        world.fetches("gh"),
        fetches_before,
        "keys fetched again for an unknown kid within the refresh limit"
    );

    // Nothing of a token reaches the log; no bad token changed the branch.
    let logs = world.server.logs();
    for token in &tokens_seen {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            signature.is_empty() || !logs.contains(signature),
            "a token reached the log"
        );
    }
    let tags = String::from_utf8(
        world
            .repo
            .read_file("main", "apps/api/dev/kustomization.yaml")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert!(tags.contains("newTag: 1.0.4"), "{tags}");
    assert!(
        !world
            .repo
            .log("main")
            .unwrap()
            .iter()
            .any(|c| c.message.contains("9.9.9"))
    );
}
