//! What the in-process server tests share: a configuration on free ports around one
//! repository, `platform`, and one token, `ci`, allowed everywhere.
#![allow(dead_code)]

use std::path::Path;

use tug_server::Config;
use tug_testkit::free_port;

pub(crate) const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - deployment.yaml\nimages:\n  - name: registry.example.com/api\n    newTag: 0.0.1\n";
pub(crate) const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: registry.example.com/api\n";

/// `dev → staging → prod` on `platform`'s `main`, the service `api` (kustomize) and prod
/// restricted to `main` server-wide.
pub(crate) const THREE_ENVIRONMENTS: &str = r#"
environments:
  - { name: dev, repository: platform, branch: main }
  - { name: staging, after: dev }
  - { name: prod, after: staging }
services:
  - name: api
    path: "apps/{service}/{env}"
    edit: { kind: kustomize }
policies:
  branch_restrictions: ["prod=^main$"]
"#;

/// The configuration: listeners on free ports, `data_dir`, the repository at `url`, a token
/// whose hash is that of `token`, then `rest` (environments, services, triggers…), with `${VAR}`
/// taken from `env`.
pub(crate) fn config_with_env(
    data_dir: &Path,
    url: &str,
    token: &str,
    rest: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Config {
    let yaml = format!(
        r#"
listen: {{ grpc: "127.0.0.1:{grpc}", http: "127.0.0.1:{http}" }}
data_dir: "{data_dir}"
repositories:
  - name: platform
    url: "{url}"
auth:
  tokens:
    - name: ci
      sha256: "{sha}"
      repositories: ["*"]
{rest}"#,
        grpc = free_port().unwrap(),
        http = free_port().unwrap(),
        data_dir = data_dir.display(),
        sha = tug_server::auth::token_sha256_hex(token),
    );
    Config::from_yaml(&yaml, &data_dir.join("server.yaml"), env).unwrap()
}

/// [`config_with_env`] without environment variables.
pub(crate) fn config(data_dir: &Path, url: &str, token: &str, rest: &str) -> Config {
    config_with_env(data_dir, url, token, rest, &|_| None)
}
