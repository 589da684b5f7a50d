//! Services and where each lives in each environment.
//!
//! ```yaml
//! services:
//!   - name: api
//!     namespace: payments            # optional; {namespace} is the environment name without it
//!     path: "apps/{service}/{env}"   # where the service lives, for every environment …
//!     edit: { kind: kustomize }      # … and how its image is changed there
//!     environments:                  # per-environment overrides of path, edit, repository, branch
//!       prod: { path: "prod/{namespace}/{service}", edit: { kind: helm, key: image } }
//! ```
//!
//! Path templates know `{service}`, `{env}` and `{namespace}`; `{{` and `}}` write literal braces.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::environment::Environments;
use crate::validate::path_component_problem;

/// How a release changes the files at a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EditKind {
    /// Set the image in a `kustomization.yaml` `images:` list (as `kustomize edit set image`).
    /// `image` names the entry; without it the artifact's image repository is the name.
    Kustomize {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<String>,
    },
    /// Set the image in a Helm values file; `key` is the dotted path of the image map
    /// (`image`, `api.image`) whose `repository`/`tag` are set.
    Helm { key: String },
    /// Set the value at a yq-style path (`.spec.template.spec.containers[0].image`).
    Yq { path: String },
    /// Set matching container images in raw Kubernetes manifests; `container` narrows to one
    /// container by name.
    Manifest {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
    /// Pin the chart version the artifact's `chart` stage names, wherever the target's
    /// directory pins the chart (a kustomization's `helmCharts`, a `Chart.yaml` dependency or a
    /// Flux `HelmRelease`; exactly one file must). `name` is the chart to match; without it the
    /// chart stage's name is.
    Chart {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Copy the artifact's manifests into the target directory, as the release manager does.
    Copy,
}

impl EditKind {
    fn problem(&self) -> Option<String> {
        match self {
            Self::Kustomize { image: Some(image) } if image.trim().is_empty() => {
                Some("kustomize image name is empty".to_owned())
            }
            Self::Helm { key } if key.is_empty() || key.split('.').any(str::is_empty) => Some(
                format!("helm key '{key}' must be dot-separated non-empty names"),
            ),
            Self::Yq { path } if !path.starts_with('.') => {
                Some(format!("yq path '{path}' must start with '.'"))
            }
            Self::Manifest {
                container: Some(container),
            } if container.is_empty() => Some("manifest container name is empty".to_owned()),
            Self::Chart { name: Some(name) } if name.trim().is_empty() => {
                Some("chart name is empty".to_owned())
            }
            _ => None,
        }
    }
}

/// A per-environment override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<EditKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// One service as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit: Option<EditKind>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, TargetSpec>,
}

/// Where and how one service is released in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub environment: String,
    /// The configured repository; `None` for the default repository.
    pub repository: Option<String>,
    /// The branch; `None` for the repository's default branch.
    pub branch: Option<String>,
    /// Path inside the repository, relative, with `/` separators.
    pub path: String,
    pub edit: EditKind,
}

/// What is wrong with the services configuration, or a lookup; each names the service (and the
/// environment where one is involved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("services[{index}]: name {problem}")]
    InvalidName { index: usize, problem: String },
    #[error("service '{name}' is defined twice (services[{first}] and services[{second}])")]
    Duplicate {
        name: String,
        first: usize,
        second: usize,
    },
    #[error("service '{service}': namespace {problem}")]
    InvalidNamespace { service: String, problem: String },
    #[error("service '{service}'{}: path template '{template}' {problem}", env_suffix(.environment))]
    Template {
        service: String,
        environment: Option<String>,
        template: String,
        problem: String,
    },
    #[error(
        "service '{service}' overrides environment '{environment}', which is not a defined environment"
    )]
    UnknownEnvironment {
        service: String,
        environment: String,
    },
    #[error("service '{service}' has a path but no edit for environment '{environment}'")]
    MissingEdit {
        service: String,
        environment: String,
    },
    #[error("service '{service}'{}: {problem}", env_suffix(.environment))]
    InvalidEdit {
        service: String,
        environment: Option<String>,
        problem: String,
    },
    #[error("service '{0}' is not defined")]
    Unknown(String),
    #[error("service '{service}' has no target in environment '{environment}'")]
    NoTarget {
        service: String,
        environment: String,
    },
}

fn env_suffix(environment: &Option<String>) -> String {
    environment
        .as_ref()
        .map(|e| format!(" in environment '{e}'"))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variable {
    Service,
    Env,
    Namespace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Variable(Variable),
}

/// A parsed path template such as `apps/{service}/{env}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    pieces: Vec<Piece>,
}

impl PathTemplate {
    /// Parses a template.
    ///
    /// # Errors
    /// A sentence saying what is wrong: an unknown variable, an unclosed brace, an absolute path or
    /// a `..` component.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(
                        "has a '}' without an opening '{' (write '}}' for a brace)".to_owned()
                    );
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("has an unclosed '{{{name}'")),
                        }
                    }
                    let variable = match name.as_str() {
                        "service" => Variable::Service,
                        "env" => Variable::Env,
                        "namespace" => Variable::Namespace,
                        other => {
                            return Err(format!(
                                "uses unknown variable '{{{other}}}'; known are {{service}}, {{env}} and {{namespace}}"
                            ));
                        }
                    };
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Variable(variable));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if source.is_empty() {
            return Err("is empty".to_owned());
        }
        if source.starts_with('/') || source.contains('\\') {
            return Err("must be a relative path with '/' separators".to_owned());
        }
        if source.split('/').any(|part| part == ".." || part == ".") {
            return Err("must not contain '.' or '..' components".to_owned());
        }
        Ok(Self {
            source: source.to_owned(),
            pieces,
        })
    }

    /// The template with variables replaced. Values are expected to be validated path components.
    #[must_use]
    pub fn render(&self, service: &str, env: &str, namespace: &str) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(text) => text.as_str(),
                Piece::Variable(Variable::Service) => service,
                Piece::Variable(Variable::Env) => env,
                Piece::Variable(Variable::Namespace) => namespace,
            })
            .collect()
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Validated services, with targets resolved for every environment that has one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Services {
    specs: Vec<ServiceSpec>,
    targets: BTreeMap<(String, String), Target>,
}

impl Services {
    /// Validates every service against the environments and resolves its targets.
    ///
    /// # Errors
    /// The first problem found, naming the service and environment at fault.
    pub fn new(specs: Vec<ServiceSpec>, environments: &Environments) -> Result<Self, ServiceError> {
        let mut targets = BTreeMap::new();
        for (index, spec) in specs.iter().enumerate() {
            if let Some(problem) = path_component_problem(&spec.name) {
                return Err(ServiceError::InvalidName { index, problem });
            }
            if let Some(first) = specs[..index].iter().position(|s| s.name == spec.name) {
                return Err(ServiceError::Duplicate {
                    name: spec.name.clone(),
                    first,
                    second: index,
                });
            }
            if let Some(problem) = spec.namespace.as_deref().and_then(path_component_problem) {
                return Err(ServiceError::InvalidNamespace {
                    service: spec.name.clone(),
                    problem,
                });
            }
            if let Some(env) = spec
                .environments
                .keys()
                .find(|e| environments.get(e).is_err())
            {
                return Err(ServiceError::UnknownEnvironment {
                    service: spec.name.clone(),
                    environment: env.clone(),
                });
            }
            let template_error = |environment: Option<&str>, template: &str, problem: String| {
                ServiceError::Template {
                    service: spec.name.clone(),
                    environment: environment.map(str::to_owned),
                    template: template.to_owned(),
                    problem,
                }
            };
            let default_template = match &spec.path {
                Some(path) => {
                    Some(PathTemplate::parse(path).map_err(|p| template_error(None, path, p))?)
                }
                None => None,
            };
            if let Some(problem) = spec.edit.as_ref().and_then(EditKind::problem) {
                return Err(ServiceError::InvalidEdit {
                    service: spec.name.clone(),
                    environment: None,
                    problem,
                });
            }
            for env in environments {
                let overrides = spec.environments.get(&env.name);
                let template = match overrides.and_then(|o| o.path.as_ref()) {
                    Some(path) => PathTemplate::parse(path)
                        .map_err(|p| template_error(Some(&env.name), path, p))?,
                    None => match &default_template {
                        Some(t) => t.clone(),
                        None => continue,
                    },
                };
                let edit = overrides
                    .and_then(|o| o.edit.clone())
                    .or_else(|| spec.edit.clone());
                let Some(edit) = edit else {
                    return Err(ServiceError::MissingEdit {
                        service: spec.name.clone(),
                        environment: env.name.clone(),
                    });
                };
                if let Some(problem) = edit.problem() {
                    return Err(ServiceError::InvalidEdit {
                        service: spec.name.clone(),
                        environment: Some(env.name.clone()),
                        problem,
                    });
                }
                let namespace = spec.namespace.as_deref().unwrap_or(&env.name);
                let target = Target {
                    service: spec.name.clone(),
                    environment: env.name.clone(),
                    repository: overrides
                        .and_then(|o| o.repository.clone())
                        .or_else(|| env.repository.clone()),
                    branch: overrides
                        .and_then(|o| o.branch.clone())
                        .or_else(|| env.branch.clone()),
                    path: template.render(&spec.name, &env.name, namespace),
                    edit,
                };
                targets.insert((spec.name.clone(), env.name.clone()), target);
            }
        }
        Ok(Self { specs, targets })
    }

    /// The service's configuration.
    ///
    /// # Errors
    /// [`ServiceError::Unknown`] naming the service.
    pub fn get(&self, service: &str) -> Result<&ServiceSpec, ServiceError> {
        self.specs
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| ServiceError::Unknown(service.to_owned()))
    }

    /// All configured services, in configured order.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceSpec> {
        self.specs.iter()
    }

    /// Where and how `service` is released in `env`.
    ///
    /// # Errors
    /// [`ServiceError::Unknown`] for an unknown service; [`ServiceError::NoTarget`] when the
    /// service has no path for that environment (or the environment is unknown).
    pub fn target_for(&self, service: &str, env: &str) -> Result<Target, ServiceError> {
        self.get(service)?;
        self.targets
            .get(&(service.to_owned(), env.to_owned()))
            .cloned()
            .ok_or_else(|| ServiceError::NoTarget {
                service: service.to_owned(),
                environment: env.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Environment;

    fn environments() -> Environments {
        let mut dev = Environment::new("dev");
        dev.repository = Some("platform".to_owned());
        Environments::new(vec![
            dev,
            Environment::after("staging", "dev"),
            Environment::after("prod", "staging"),
        ])
        .unwrap()
    }

    fn service(json: &str) -> ServiceSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn resolves_default_and_overridden_targets() {
        let services = Services::new(
            vec![service(
                r#"{"name": "api", "namespace": "payments", "path": "apps/{service}/{env}",
                    "edit": {"kind": "kustomize"},
                    "environments": {"prod": {"path": "prod/{namespace}/{service}",
                                              "edit": {"kind": "helm", "key": "api.image"},
                                              "branch": "release"}}}"#,
            )],
            &environments(),
        )
        .unwrap();
        let dev = services.target_for("api", "dev").unwrap();
        assert_eq!(dev.path, "apps/api/dev");
        assert_eq!(dev.edit, EditKind::Kustomize { image: None });
        assert_eq!(dev.repository.as_deref(), Some("platform"));
        let prod = services.target_for("api", "prod").unwrap();
        assert_eq!(prod.path, "prod/payments/api");
        assert_eq!(
            prod.edit,
            EditKind::Helm {
                key: "api.image".to_owned()
            }
        );
        assert_eq!(prod.branch.as_deref(), Some("release"));
        assert_eq!(prod.repository, None);
    }

    #[test]
    fn namespace_defaults_to_environment_and_braces_escape() {
        let services = Services::new(
            vec![service(r#"{"name": "web", "path": "{{x}}/{namespace}/{service}.yaml", "edit": {"kind": "yq", "path": ".image"}}"#)],
            &environments(),
        )
        .unwrap();
        assert_eq!(
            services.target_for("web", "staging").unwrap().path,
            "{x}/staging/web.yaml"
        );
    }

    #[test]
    fn edit_kinds_read_from_configuration() {
        for (json, expected) in [
            (
                r#"{"kind": "kustomize", "image": "quay.io/acme/api"}"#,
                EditKind::Kustomize {
                    image: Some("quay.io/acme/api".to_owned()),
                },
            ),
            (
                r#"{"kind": "helm", "key": "image"}"#,
                EditKind::Helm {
                    key: "image".to_owned(),
                },
            ),
            (
                r#"{"kind": "yq", "path": ".spec.image"}"#,
                EditKind::Yq {
                    path: ".spec.image".to_owned(),
                },
            ),
            (
                r#"{"kind": "manifest", "container": "app"}"#,
                EditKind::Manifest {
                    container: Some("app".to_owned()),
                },
            ),
            (r#"{"kind": "copy"}"#, EditKind::Copy),
            (r#"{"kind": "chart"}"#, EditKind::Chart { name: None }),
            (
                r#"{"kind": "chart", "name": "podinfo"}"#,
                EditKind::Chart {
                    name: Some("podinfo".to_owned()),
                },
            ),
        ] {
            assert_eq!(
                serde_json::from_str::<EditKind>(json).unwrap(),
                expected,
                "{json}"
            );
        }
        let err =
            serde_json::from_str::<EditKind>(r#"{"kind": "helm", "key": "image", "tag": "x"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `tag`"), "{err}");
    }

    #[test]
    fn errors_name_service_and_environment() {
        let cases = [
            (
                r#"{"name": "api", "path": "apps/{svc}", "edit": {"kind": "copy"}}"#,
                "service 'api': path template 'apps/{svc}' uses unknown variable '{svc}'; known are {service}, {env} and {namespace}",
            ),
            (
                r#"{"name": "api", "edit": {"kind": "copy"}, "environments": {"prod": {"path": "/abs/{env"}}}"#,
                "service 'api' in environment 'prod': path template '/abs/{env' has an unclosed '{env'",
            ),
            (
                r#"{"name": "api", "path": "../{service}", "edit": {"kind": "copy"}}"#,
                "service 'api': path template '../{service}' must not contain '.' or '..' components",
            ),
            (
                r#"{"name": "api", "path": "a", "edit": {"kind": "copy"}, "environments": {"qa": {}}}"#,
                "service 'api' overrides environment 'qa', which is not a defined environment",
            ),
            (
                r#"{"name": "api", "path": "a/{env}"}"#,
                "service 'api' has a path but no edit for environment 'dev'",
            ),
            (
                r#"{"name": "api", "path": "a", "edit": {"kind": "yq", "path": "spec"}}"#,
                "service 'api': yq path 'spec' must start with '.'",
            ),
            (
                r#"{"name": "api", "namespace": "a/b", "path": "a", "edit": {"kind": "copy"}}"#,
                "service 'api': namespace 'a/b' contains '/'",
            ),
        ];
        for (json, expected) in cases {
            let err = Services::new(vec![service(json)], &environments())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(expected), "{err}\nexpected {expected}");
        }
    }

    #[test]
    fn lookups_name_what_is_missing() {
        let services = Services::new(
            vec![service(r#"{"name": "api", "edit": {"kind": "copy"}, "environments": {"dev": {"path": "dev/api"}}}"#)],
            &environments(),
        )
        .unwrap();
        assert_eq!(services.target_for("api", "dev").unwrap().path, "dev/api");
        assert_eq!(
            services.target_for("api", "prod").unwrap_err().to_string(),
            "service 'api' has no target in environment 'prod'"
        );
        assert_eq!(
            services.target_for("web", "dev").unwrap_err().to_string(),
            "service 'web' is not defined"
        );
    }
}
