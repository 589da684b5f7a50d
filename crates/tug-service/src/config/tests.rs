use std::collections::HashMap;

use super::*;

const FULL: &str = r#"
listen: { grpc: "127.0.0.1:12010", http: "127.0.0.1:12011" }
data_dir: ./tug-data
log: { format: json, level: info }
tls: { cert_file: certs/tug.pem, key_file: /etc/tug/tug.key }
commit: { committer_name: tug, committer_email: tug@localhost, allow_empty: false }
repositories:
  - name: platform
    url: https://git.example.com/infra/platform.git
    http: { username: bot, password: "${TOKEN}" }
  - name: apps
    url: git@git.example.com:infra/apps.git
    ssh: { private_key_file: /etc/tug/id_ed25519, known_hosts_file: /etc/tug/known_hosts }
auth:
  tokens:
    - name: ci
      sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      repositories: ["platform"]
      branches: ["main"]
notify:
  slack: [{ webhook_url: "${SLACK_URL}" }]
  webhooks: [{ url: "https://hooks.example.com/tug", secret: "${HOOK_SECRET}" }]
limits: { max_body_bytes: 1048576, max_paths_per_request: 256, batch_max: 64 }
"#;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn full_env() -> impl Fn(&str) -> Option<String> {
    env_of(&[
        ("TOKEN", "s3cret-git"),
        (
            "SLACK_URL",
            "https://hooks.slack.example/services/T0/B0/xyz",
        ),
        ("HOOK_SECRET", "hmac-key"),
    ])
}

fn load(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    Config::from_yaml(text, Path::new("/etc/tug/server.yaml"), env)
}

#[test]
fn full_example_loads_with_variables_expanded() {
    let config = load(FULL, &full_env()).unwrap();
    assert_eq!(config.listen.http, "127.0.0.1:12011".parse().unwrap());
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.repositories.len(), 2);
    let platform = config.repository("platform").unwrap();
    assert_eq!(
        platform.http.as_ref().unwrap().password.expose(),
        "s3cret-git"
    );
    let apps = config.repository("apps").unwrap();
    assert_eq!(
        apps.ssh.as_ref().unwrap().known_hosts_file.as_deref(),
        Some(Path::new("/etc/tug/known_hosts"))
    );
    let auth = config.auth();
    assert_eq!(auth.mode(), AuthMode::Tokens);
    assert_eq!(
        auth.tokens[0].branches.as_deref(),
        Some(&["main".to_owned()][..])
    );
    assert_eq!(
        config.notify.webhooks[0].secret.as_ref().unwrap().expose(),
        "hmac-key"
    );
    assert_eq!(config.limits.batch_max, 64);
}

#[test]
fn relative_paths_are_resolved_against_the_config_directory() {
    let config = load(FULL, &full_env()).unwrap();
    assert_eq!(config.data_dir, Path::new("/etc/tug/./tug-data"));
    let tls = config.tls.unwrap();
    assert_eq!(tls.cert_file, Path::new("/etc/tug/certs/tug.pem"));
    assert_eq!(tls.key_file, Path::new("/etc/tug/tug.key"));
}

#[test]
fn minimal_config_takes_the_delivery_ports_and_defaults() {
    let config = load(
        "repositories: [{name: p, url: /srv/p.git}]\nauth: {mode: none}\n",
        &env_of(&[]),
    )
    .unwrap();
    assert_eq!(config.listen, Listen::default());
    assert_eq!(config.listen.grpc.port(), 12010);
    assert_eq!(config.listen.http.port(), 12011);
    assert_eq!(config.commit.committer_name, "tug");
    assert!(!config.commit.allow_empty);
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.auth().mode(), AuthMode::None);
}

#[test]
fn waiting_streams_follow_the_batch_size_unless_set() {
    let limits = |text: &str, env: &[(&str, &str)]| {
        let text =
            format!("repositories: [{{name: p, url: /srv/p.git}}]\nauth: {{mode: none}}\n{text}");
        load(&text, &env_of(env))
            .unwrap()
            .limits
            .max_waiting_streams()
    };
    // Three batches of callers, never fewer than 512.
    assert_eq!(limits("", &[]), 512);
    assert_eq!(limits("limits: {batch_max: 256}\n", &[]), 768);
    assert_eq!(limits("", &[("TUG_LIMITS_BATCH_MAX", "300")]), 900);
    // Set, it is taken as it is, whatever the batch size.
    assert_eq!(
        limits("limits: {batch_max: 256, max_waiting_streams: 100}\n", &[]),
        100
    );
    assert_eq!(
        limits(
            "limits: {batch_max: 256}\n",
            &[("TUG_LIMITS_MAX_WAITING_STREAMS", "3000")]
        ),
        3000
    );
    let zero = load(
        "repositories: [{name: p, url: /srv/p.git}]\nauth: {mode: none}\nlimits: {max_waiting_streams: 0}\n",
        &env_of(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(zero.contains("limits.max_waiting_streams"), "{zero}");
}

#[test]
fn secrets_never_print() {
    let config = load(FULL, &full_env()).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret-git"), "{debug}");
    assert!(!debug.contains("hmac-key"), "{debug}");
    assert!(!debug.contains("xyz"), "{debug}");
    assert!(debug.contains("***"));
    assert_eq!(Secret::new("x").to_string(), "***");
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let text =
        "auth: {mode: none}\nrepositories:\n  - name: p\n    url: /srv/p.git\n    branch: main\n";
    let error = load(text, &env_of(&[])).unwrap_err();
    let ConfigError::Parse { line, .. } = &error else {
        panic!("expected a parse error, got {error:?}");
    };
    assert_eq!(*line, Some(5));
    let message = error.to_string();
    assert!(message.starts_with("/etc/tug/server.yaml:5:"), "{message}");
    assert_eq!(
        message,
        "/etc/tug/server.yaml:5:5: unknown field `branch`, expected one of name, url, http, ssh, signing"
    );
}

#[test]
fn wrong_type_names_the_line() {
    let text = "auth: {mode: none}\nlimits:\n  batch_max: lots\n";
    let error = load(text, &env_of(&[])).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("/etc/tug/server.yaml:3:14: batch_max: "),
        "{message}"
    );
    assert!(!message.contains("at line"), "{message}");
}

#[test]
fn wrong_type_in_a_flow_mapping_names_the_key() {
    let text = "auth: {mode: none}\nlimits: { max_body_bytes: 10, batch_max: [1] }\n";
    let error = load(text, &env_of(&[])).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(": batch_max: "), "{message}");
}

#[test]
fn unset_variable_names_variable_and_field() {
    let env = env_of(&[("SLACK_URL", "https://x.example/h"), ("HOOK_SECRET", "k")]);
    let error = load(FULL, &env).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, ConfigError::UnsetVariable { variable, field, .. }
            if variable == "TOKEN" && field == "repositories[0].http.password"),
        "{message}"
    );
    assert!(
        message.starts_with("/etc/tug/server.yaml:10: "),
        "{message}"
    );
}

#[test]
fn release_sections_expand_variables_too() {
    let text = r#"
auth: {mode: none}
repositories:
  - name: p
    url: https://git.example.com/p.git
environments:
  - name: dev
    branch: "${DEV_BRANCH}"
services:
  - name: api
    path: "apps/{service}/{env}"
    edit: { kind: kustomize }
    environments:
      dev: { path: "${API_DEV_PATH}" }
policies:
  branch_restrictions: ["dev=${DEV_BRANCHES}"]
"#;
    let env = env_of(&[
        ("DEV_BRANCH", "deploy"),
        ("API_DEV_PATH", "teams/api/dev"),
        ("DEV_BRANCHES", "^(main|release/.*)$"),
    ]);
    let config = load(text, &env).unwrap();
    assert_eq!(config.environments[0].branch.as_deref(), Some("deploy"));
    assert_eq!(
        config.services[0].environments["dev"].path.as_deref(),
        Some("teams/api/dev")
    );
    assert_eq!(
        config.policies.branch_restrictions,
        vec!["dev=^(main|release/.*)$".to_owned()]
    );
    let error = load(text, &env_of(&[("DEV_BRANCH", "deploy")])).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("/etc/tug/server.yaml:14: services[0].environments.dev.path: "),
        "{message}"
    );
}

#[test]
fn dollar_dollar_brace_is_a_literal_and_lone_dollars_stay() {
    let env = env_of(&[("USER_NAME", "bot")]);
    let text = r#"
auth: {mode: none}
repositories:
  - name: p
    url: https://git.example.com/p.git
    http: { username: "${USER_NAME}", password: "pa$$word-$${NOT_A_VAR}-$5" }
"#;
    let config = load(text, &env).unwrap();
    let http = config.repositories[0].http.as_ref().unwrap();
    assert_eq!(http.username, "bot");
    assert_eq!(http.password.expose(), "pa$$word-${NOT_A_VAR}-$5");
}

#[test]
fn malformed_reference_is_reported() {
    let text = "auth: {mode: none}\ndata_dir: \"${DATA\"\n";
    let error = load(text, &env_of(&[])).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Reference { field, line: Some(2), .. } if field == "data_dir"),
        "{error}"
    );
}

#[test]
fn environment_overrides_scalars() {
    let mut pairs = vec![
        ("TUG_LISTEN_HTTP", "0.0.0.0:8080"),
        ("TUG_LISTEN_GRPC", "0.0.0.0:8081"),
        ("TUG_DATA_DIR", "relative/data"),
        ("TUG_LOG_FORMAT", "text"),
        ("TUG_LOG_LEVEL", "debug"),
        ("TUG_COMMIT_ALLOW_EMPTY", "true"),
        ("TUG_COMMIT_COMMITTER_NAME", "release-bot"),
        ("TUG_LIMITS_BATCH_MAX", "8"),
    ];
    pairs.extend([
        ("TOKEN", "t"),
        ("SLACK_URL", "https://x.example/h"),
        ("HOOK_SECRET", "k"),
    ]);
    let config = load(FULL, &env_of(&pairs)).unwrap();
    assert_eq!(config.listen.http, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(config.listen.grpc, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(config.data_dir, Path::new("relative/data"));
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "debug");
    assert!(config.commit.allow_empty);
    assert_eq!(config.commit.committer_name, "release-bot");
    assert_eq!(config.limits.batch_max, 8);
}

#[test]
fn bad_override_names_the_variable() {
    let env = env_of(&[("TUG_LIMITS_BATCH_MAX", "many")]);
    let error = load("auth: {mode: none}\n", &env).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("TUG_LIMITS_BATCH_MAX"), "{message}");
    assert!(message.contains("limits.batch_max"), "{message}");
}

#[test]
fn every_documented_override_is_applied() {
    // Each variable must change something, or the table documents a setting that is ignored.
    let base = load("auth: {mode: none}\n", &env_of(&[])).unwrap();
    let values = [
        ("TUG_LISTEN_GRPC", "127.0.0.1:1"),
        ("TUG_LISTEN_HTTP", "127.0.0.1:2"),
        ("TUG_DATA_DIR", "/d"),
        ("TUG_LOG_FORMAT", "json"),
        ("TUG_LOG_LEVEL", "warn"),
        ("TUG_TLS_CERT_FILE", "/c"),
        ("TUG_TLS_KEY_FILE", "/k"),
        ("TUG_COMMIT_COMMITTER_NAME", "n"),
        ("TUG_COMMIT_COMMITTER_EMAIL", "e@x"),
        ("TUG_COMMIT_ALLOW_EMPTY", "true"),
        ("TUG_DEPLOY_STRICT", "true"),
        ("TUG_LIMITS_MAX_BODY_BYTES", "7"),
        ("TUG_LIMITS_MAX_PATHS_PER_REQUEST", "7"),
        ("TUG_LIMITS_BATCH_MAX", "7"),
        ("TUG_LIMITS_MAX_WAITING_STREAMS", "7"),
    ];
    assert_eq!(values.len(), ENV_OVERRIDES.len());
    for (variable, value) in values {
        let mut config = base.clone();
        config
            .apply_env_overrides(&env_of(&[(variable, value)]))
            .unwrap();
        assert_ne!(config, base, "{variable} changed nothing");
    }
}

#[test]
fn tls_needs_both_files() {
    let env = env_of(&[("TUG_TLS_CERT_FILE", "/etc/tug/cert.pem")]);
    let error = load("auth: {mode: none}\n", &env).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "tls.key_file"),
        "{error}"
    );
}

#[test]
fn missing_auth_is_an_error_that_says_how_to_fix_it() {
    let error = load("repositories: [{name: p, url: /srv/p.git}]\n", &env_of(&[])).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "auth"),
        "{message}"
    );
    assert!(message.contains("mode: none"), "{message}");
}

#[test]
fn empty_token_list_is_an_error() {
    let error = load("auth: {tokens: []}\n", &env_of(&[])).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "auth.tokens"),
        "{error}"
    );
}

#[test]
fn tokens_with_mode_none_is_an_error() {
    let text = r#"
repositories: [{name: p, url: /srv/p.git}]
auth:
  mode: none
  tokens: [{name: ci, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", repositories: [p]}]
"#;
    let error = load(text, &env_of(&[])).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "auth.tokens"),
        "{error}"
    );
}

#[test]
fn token_scope_must_name_configured_repositories() {
    let text = r#"
repositories: [{name: p, url: /srv/p.git}]
auth:
  tokens: [{name: ci, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", repositories: [p, q]}]
"#;
    let error = load(text, &env_of(&[])).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "auth.tokens[0].repositories[1]"),
        "{message}"
    );
    assert!(message.contains("`q`"), "{message}");
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The field a configuration with `auth` (YAML under `auth:`) is refused for.
fn auth_error(auth: &str) -> (String, String) {
    let text = format!(
        "repositories: [{{name: p, url: /srv/p.git}}]\nauth:\n{}",
        auth.replace("SHA", SHA)
    );
    match load(&text, &env_of(&[])) {
        Err(ConfigError::Invalid { field, message, .. }) => (field, message),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn grants_and_identity_issuers_load() {
    let text = format!(
        r#"
repositories: [{{name: p, url: /srv/p.git}}]
auth:
  tokens:
    - {{ name: ops, sha256: "{SHA}", grant: {{ verbs: ["*"] }} }}
  oidc:
    - issuer: https://token.actions.githubusercontent.com
      audience: tug
      rules:
        - claims: {{ repository: "acme/api", ref: ["refs/heads/main", "refs/tags/*"] }}
          grant: {{ verbs: [artifact.push, deploy], services: [api], environments: [dev], repositories: [p], paths: ["apps/api/**"] }}
"#
    );
    let config = load(&text, &env_of(&[])).unwrap();
    let auth = config.auth();
    assert_eq!(auth.tokens[0].effective_grant().verbs, [VerbName::All]);
    assert_eq!(auth.oidc[0].clock_skew_seconds, 60);
    assert_eq!(auth.oidc[0].rules[0].claims["ref"].patterns().len(), 2);
    assert_eq!(
        auth.oidc[0].rules[0].grant.verbs,
        [VerbName::ArtifactPush, VerbName::Deploy]
    );
}

#[test]
fn bad_grants_and_issuers_are_refused_naming_the_field() {
    let cases = [
        (
            "  tokens: [{name: ci, sha256: SHA}]\n",
            "auth.tokens[0].grant",
            "missing",
        ),
        (
            "  tokens: [{name: ci, sha256: SHA, repositories: [p], grant: {verbs: [read]}}]\n",
            "auth.tokens[0].grant",
            "not both",
        ),
        (
            "  tokens: [{name: ci, sha256: SHA, grant: {verbs: []}}]\n",
            "auth.tokens[0].grant.verbs",
            "lists no verb",
        ),
        (
            "  tokens: [{name: ci, sha256: SHA, grant: {verbs: [deploy], repositories: [q]}}]\n",
            "auth.tokens[0].grant.repositories[0]",
            "`q`",
        ),
        (
            "  oidc: [{issuer: 'http://issuer.example.com', audience: tug, rules: [{claims: {sub: x}, grant: {verbs: [read]}}]}]\n",
            "auth.oidc[0].issuer",
            "plain http",
        ),
        (
            "  oidc: [{issuer: 'https://i.example.com', audience: tug, algorithms: [HS256], rules: [{claims: {sub: x}, grant: {verbs: [read]}}]}]\n",
            "auth.oidc[0].algorithms[0]",
            "HMAC and `none` never are",
        ),
        (
            "  oidc: [{issuer: 'https://i.example.com', audience: '', rules: [{claims: {sub: x}, grant: {verbs: [read]}}]}]\n",
            "auth.oidc[0].audience",
            "must not be empty",
        ),
        (
            "  oidc: [{issuer: 'https://i.example.com', audience: tug, rules: [{claims: {}, grant: {verbs: [read]}}]}]\n",
            "auth.oidc[0].rules[0].claims",
            "every token of the issuer",
        ),
        (
            "  oidc: [{issuer: 'https://i.example.com', audience: tug, clock_skew_seconds: 3600, rules: [{claims: {sub: x}, grant: {verbs: [read]}}]}]\n",
            "auth.oidc[0].clock_skew_seconds",
            "at most 300",
        ),
        (
            "  oidc: [{issuer: 'https://i.example.com', audience: tug, rules: []}]\n",
            "auth.oidc[0].rules",
            "no rule",
        ),
    ];
    for (auth, want_field, want_message) in cases {
        let (field, message) = auth_error(auth);
        assert_eq!(field, want_field, "{auth}: {message}");
        assert!(message.contains(want_message), "{auth}: {message}");
    }
    // A verb that does not exist is refused by name.
    let text = format!(
        "repositories: [{{name: p, url: /srv/p.git}}]\nauth:\n  tokens: [{{name: ci, sha256: {SHA}, grant: {{verbs: [deploi]}}}}]\n"
    );
    let message = load(&text, &env_of(&[])).unwrap_err().to_string();
    assert!(message.contains("deploi"), "{message}");
}

#[test]
fn token_hash_must_be_hex_sha256() {
    let text = "repositories: [{name: p, url: /srv/p.git}]\nauth:\n  tokens: [{name: ci, sha256: plaintext-token, repositories: ['*']}]\n";
    let error = load(text, &env_of(&[])).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "auth.tokens[0].sha256"),
        "{message}"
    );
    assert!(!message.contains("plaintext-token"), "{message}");
}

#[test]
fn duplicate_repository_names_are_rejected() {
    let text = "auth: {mode: none}\nrepositories:\n  - {name: p, url: /srv/a.git}\n  - {name: p, url: /srv/b.git}\n";
    let error = load(text, &env_of(&[])).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "repositories[1].name"),
        "{message}"
    );
}

#[test]
fn url_with_password_is_rejected_without_echoing_it() {
    let text = "auth: {mode: none}\nrepositories:\n  - {name: p, url: \"https://bot:hunter2@git.example.com/p.git\"}\n";
    let error = load(text, &env_of(&[])).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "repositories[0].url"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert!(
        message.contains("https://bot:***@git.example.com/p.git"),
        "{message}"
    );
}

#[test]
fn url_with_only_a_user_is_accepted() {
    let text = "auth: {mode: none}\nrepositories:\n  - {name: p, url: \"ssh://git@git.example.com/p.git\"}\n  - {name: q, url: \"git@git.example.com:q.git\"}\n";
    load(text, &env_of(&[])).unwrap();
}

#[test]
fn credentials_must_match_the_url_transport() {
    let text = "auth: {mode: none}\nrepositories:\n  - {name: p, url: \"git@git.example.com:p.git\", http: {username: u, password: p}}\n";
    let error = load(text, &env_of(&[])).unwrap_err();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "repositories[0].http"),
        "{error}"
    );
}

#[test]
fn repositories_are_found_by_url_ignoring_dot_git() {
    let config = load(FULL, &full_env()).unwrap();
    assert_eq!(
        config
            .repository_by_url("https://git.example.com/infra/platform")
            .map(|r| r.name.as_str()),
        Some("platform")
    );
    assert!(
        config
            .repository_by_url("https://git.example.com/other")
            .is_none()
    );
}

#[test]
fn sample_configurations_load() {
    let with_token = Config::sample(&Sample {
        repository_name: "platform",
        repository_url: "https://git.example.com/infra/platform.git",
        token_sha256: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    });
    let config = load(&with_token, &env_of(&[])).unwrap();
    assert_eq!(
        config.auth().tokens[0].repositories,
        Some(vec!["platform".to_owned()])
    );

    let open = Config::sample(&Sample {
        repository_name: "local",
        repository_url: "/srv/git/local.git",
        token_sha256: None,
    });
    let config = load(&open, &env_of(&[])).unwrap();
    assert_eq!(config.auth().mode(), AuthMode::None);
    assert_eq!(config.repositories[0].url, "/srv/git/local.git");
}

#[test]
fn load_reads_a_real_file_and_reports_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tug.yaml");
    std::fs::write(&path, "auth: {mode: none}\ndata_dir: data\n").unwrap();
    let config = Config::load(&path, &env_of(&[])).unwrap();
    assert_eq!(config.data_dir, dir.path().join("data"));

    let missing = dir.path().join("absent.yaml");
    let error = Config::load(&missing, &env_of(&[])).unwrap_err();
    assert!(error.to_string().contains("absent.yaml"), "{error}");
}

#[test]
fn rollout_feedback_names_default_and_must_name_the_service() {
    let config = load("auth: {mode: none}\n", &env_of(&[])).unwrap();
    assert_eq!(
        config.rollout_feedback.names,
        ["{service}-{env}", "{env}-{service}"]
    );
    let config = load(
        "auth: {mode: none}\nrollout_feedback: {names: [\"{env}.{service}\"]}\n",
        &env_of(&[]),
    )
    .unwrap();
    assert_eq!(config.rollout_feedback.names, ["{env}.{service}"]);
    let error = load(
        "auth: {mode: none}\nrollout_feedback: {names: [\"{app}-{env}\"]}\n",
        &env_of(&[]),
    )
    .unwrap_err();
    assert!(
        matches!(&error, ConfigError::Invalid { field, .. } if field == "rollout_feedback.names[0]"),
        "{error}"
    );
}

#[test]
fn telemetry_is_off_without_an_endpoint_and_reads_its_headers_from_secrets() {
    let base = "auth: { mode: none }\n";
    let path = Path::new("/etc/tug/tug.yaml");
    let off = Config::from_yaml(base, path, &env_of(&[])).unwrap();
    assert_eq!(off.trace_export, None);

    let yaml = format!(
        "{base}telemetry:\n  endpoint: \"http://collector:4317\"\n  headers: {{ authorization: \"Bearer ${{OTEL_TOKEN}}\" }}\n"
    );
    let config = Config::from_yaml(&yaml, path, &env_of(&[("OTEL_TOKEN", "otel-s3cret")])).unwrap();
    let export = config.trace_export.clone().unwrap();
    assert_eq!(export.endpoint, "http://collector:4317");
    assert_eq!(export.service_name, "tug");
    assert_eq!(export.headers[0].0, "authorization");
    assert_eq!(export.headers[0].1.expose(), "Bearer otel-s3cret");
    assert!(!format!("{config:?}").contains("otel-s3cret"));

    let from_env = Config::from_yaml(
        base,
        path,
        &env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")]),
    )
    .unwrap();
    assert_eq!(
        from_env.trace_export.unwrap().endpoint,
        "https://collector:4317"
    );

    let bad = format!("{base}telemetry: {{ endpoint: \"collector:4317\" }}\n");
    let error = Config::from_yaml(&bad, path, &env_of(&[])).unwrap_err();
    assert!(error.to_string().contains("telemetry.endpoint"), "{error}");
}

#[test]
fn github_deployments_name_configured_environments_and_http_urls() {
    let base = r#"
auth: { mode: none }
repositories: [{ name: platform, url: "https://git.example.com/p.git" }]
environments: [{ name: dev, repository: platform, branch: main }]
release_notify:
  github:
    token: "${GH}"
    deployments:
      environments:
"#;
    let path = Path::new("/etc/tug/tug.yaml");
    let env = env_of(&[("GH", "ghp"), ("DEV_URL", "https://dev.example.com")]);
    let ok =
        format!("{base}        dev: {{ url: \"${{DEV_URL}}\", log_url: \"https://argo/dev\" }}\n");
    let config = Config::from_yaml(&ok, path, &env).unwrap();
    let github = config.release_notify.github.unwrap();
    let dev = &github.deployments.unwrap().environments["dev"];
    assert_eq!(dev.url.as_deref(), Some("https://dev.example.com"));

    let unknown = format!("{base}        prod: {{ url: \"https://prod.example.com\" }}\n");
    let error = Config::from_yaml(&unknown, path, &env)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("release_notify.github.deployments.environments.prod"),
        "{error}"
    );
    let not_http = format!("{base}        dev: {{ log_url: \"argo/dev\" }}\n");
    let error = Config::from_yaml(&not_http, path, &env)
        .unwrap_err()
        .to_string();
    assert!(error.contains("log_url"), "{error}");
}

#[test]
fn a_postgres_store_takes_its_url_from_the_environment_and_never_prints_it() {
    let text = "auth: { mode: none }\nstore:\n  postgres:\n    url: \"${DATABASE_URL}\"\n";
    let env = env_of(&[("DATABASE_URL", "postgres://tug:pw-7731@db:5432/tug")]);
    let config = load(text, &env).unwrap();
    let postgres = config.store.postgres.clone().unwrap();
    assert_eq!(postgres.url.expose(), "postgres://tug:pw-7731@db:5432/tug");
    assert_eq!(postgres.max_connections, 16);
    assert!(!format!("{config:?}").contains("pw-7731"));

    // Absent: SQLite under data_dir.
    let config = load("auth: { mode: none }\n", &env).unwrap();
    assert!(config.store.postgres.is_none());

    let unset = load(text, &env_of(&[])).unwrap_err().to_string();
    assert!(unset.contains("store.postgres.url"), "{unset}");
    assert!(unset.contains("DATABASE_URL"), "{unset}");

    let mysql = env_of(&[("DATABASE_URL", "mysql://tug:pw-7731@db/tug")]);
    let wrong = load(text, &mysql).unwrap_err().to_string();
    assert!(wrong.contains("store.postgres.url"), "{wrong}");
    assert!(wrong.contains("postgres://"), "{wrong}");
    assert!(!wrong.contains("pw-7731"), "{wrong}");

    let one = format!("{text}    max_connections: 1\n");
    let few = load(&one, &env).unwrap_err().to_string();
    assert!(few.contains("store.postgres.max_connections"), "{few}");

    let typo = "auth: { mode: none }\nstore:\n  postgress: {}\n";
    let unknown = load(typo, &env).unwrap_err().to_string();
    assert!(unknown.contains("postgress"), "{unknown}");
}

fn ssh_keygen(args: &[&str], key: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(args)
        .arg("-f")
        .arg(key)
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn signing_config(key_file: &str) -> String {
    format!(
        "auth: {{mode: none}}\nrepositories:\n  - name: p\n    url: /srv/p.git\n    \
         signing: {{ ssh_key_file: \"{key_file}\" }}\n"
    )
}

#[test]
fn a_signing_key_is_expanded_and_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing");
    ssh_keygen(&["-q", "-t", "ed25519", "-N", ""], &key);
    let env = env_of(&[("KEYS", &dir.path().to_string_lossy())]);
    let config = load(&signing_config("${KEYS}/signing"), &env).unwrap();
    let signing = config.repositories[0].signing.as_ref().unwrap();
    assert_eq!(signing.ssh_key_file.as_deref(), Some(&*key));
    assert_eq!(signing.openpgp_key_file, None);

    let refused = |key_file: &Path| {
        let error = load(&signing_config(&key_file.to_string_lossy()), &env_of(&[])).unwrap_err();
        let ConfigError::Invalid { field, .. } = &error else {
            panic!("expected an invalid field, got {error:?}");
        };
        assert_eq!(field, "repositories[0].signing.ssh_key_file");
        error.to_string()
    };
    let message = refused(&dir.path().join("missing"));
    assert!(message.contains("missing"), "{message}");
    let message = refused(&key.with_extension("pub"));
    assert!(message.contains("not an SSH private key"), "{message}");
    let protected = dir.path().join("protected");
    ssh_keygen(&["-q", "-t", "ed25519", "-N", "passphrase"], &protected);
    let message = refused(&protected);
    let secret = std::fs::read_to_string(&protected).unwrap();
    for line in secret.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!message.contains(line), "{message}");
    }
}

fn openpgp_signing_config(key_file: &str) -> String {
    format!(
        "auth: {{mode: none}}\nrepositories:\n  - name: p\n    url: /srv/p.git\n    \
         signing: {{ openpgp_key_file: \"{key_file}\" }}\n"
    )
}

/// An OpenPGP secret key made by the real gpg, in a home that is gone (agent included) when the
/// returned value is dropped.
fn gpg_key(dir: &Path, name: &str, passphrase: &str) -> (tug_testkit::GpgHome, std::path::PathBuf) {
    let home = tug_testkit::GpgHome::new().unwrap();
    let fingerprint = home
        .generate_key("Tug Test <tug@example.com>", "ed25519", "sign", passphrase)
        .unwrap();
    let file = dir.join(name);
    home.export_secret_key(&fingerprint, passphrase, &file)
        .unwrap();
    (home, file)
}

#[test]
fn an_openpgp_signing_key_is_expanded_and_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_home, key) = gpg_key(dir.path(), "signing.asc", "");
    let env = env_of(&[("KEYS", &dir.path().to_string_lossy())]);
    let config = load(&openpgp_signing_config("${KEYS}/signing.asc"), &env).unwrap();
    let signing = config.repositories[0].signing.as_ref().unwrap();
    assert_eq!(signing.openpgp_key_file.as_deref(), Some(&*key));
    assert_eq!(signing.ssh_key_file, None);
    let (signer, field) = signing.signer().unwrap();
    assert_eq!(field, "openpgp_key_file");
    assert_eq!(signer.key_file(), key);

    let refused = |key_file: &Path| {
        let text = openpgp_signing_config(&key_file.to_string_lossy());
        let error = load(&text, &env_of(&[])).unwrap_err();
        let ConfigError::Invalid { field, .. } = &error else {
            panic!("expected an invalid field, got {error:?}");
        };
        assert_eq!(field, "repositories[0].signing.openpgp_key_file");
        error.to_string()
    };
    let message = refused(&dir.path().join("missing.asc"));
    assert!(message.contains("missing.asc"), "{message}");
    let ssh_key = dir.path().join("ssh");
    ssh_keygen(&["-q", "-t", "ed25519", "-N", ""], &ssh_key);
    let message = refused(&ssh_key);
    assert!(
        message.contains("not an ASCII-armoured OpenPGP secret key"),
        "{message}"
    );
    let (_protected_home, protected) = gpg_key(dir.path(), "protected.asc", "passphrase");
    let message = refused(&protected);
    assert!(message.contains("protected by a passphrase"), "{message}");
    let secret = std::fs::read_to_string(&protected).unwrap();
    for line in secret
        .lines()
        .filter(|l| l.len() > 16 && !l.starts_with("-----"))
    {
        assert!(!message.contains(line), "{message}");
    }
}

#[test]
fn signing_takes_exactly_one_key() {
    let refused = |signing: &str| {
        let text = format!(
            "auth: {{mode: none}}\nrepositories:\n  - name: p\n    url: /srv/p.git\n    \
             signing: {signing}\n"
        );
        let error = load(&text, &env_of(&[])).unwrap_err();
        let ConfigError::Invalid { field, .. } = &error else {
            panic!("expected an invalid field, got {error:?}");
        };
        assert_eq!(field, "repositories[0].signing");
        error.to_string()
    };
    let both = refused(
        "{ ssh_key_file: /etc/tug/signing_ed25519, openpgp_key_file: /etc/tug/signing.asc }",
    );
    assert!(
        both.contains("has both `ssh_key_file` and `openpgp_key_file`"),
        "{both}"
    );
    let neither = refused("{}");
    assert!(
        neither.contains("names no key: set `ssh_key_file` or `openpgp_key_file`"),
        "{neither}"
    );

    let text = "auth: {mode: none}\nrepositories:\n  - name: p\n    url: /srv/p.git\n    \
                signing: { gpg_key_file: /etc/tug/signing.asc }\n";
    let message = load(text, &env_of(&[])).unwrap_err().to_string();
    assert!(
        message.contains(
            "5:16: unknown field `gpg_key_file`, expected one of ssh_key_file, openpgp_key_file"
        ),
        "{message}"
    );
}
