//! The release configuration, validated once: environments in promotion order, each placed on a
//! configured repository branch, services with a target per environment, the server's branch
//! restrictions and where policies files live.

use std::collections::BTreeMap;

use tug_release::{EditKind, Environments, GlobalBranchRestrictions, Services, Target};

use super::Config;

/// Where services are released by copying when their configuration names no path.
pub const COPY_RELEASE_PATH: &str = "{env}/releases/{namespace}/{service}";
/// Branch of an environment whose configuration names none.
pub const DEFAULT_BRANCH: &str = "main";

/// A branch of a configured repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Place {
    pub repository: String,
    pub branch: String,
}

#[derive(Debug, Clone)]
pub struct ReleaseModel {
    pub environments: Environments,
    pub services: Services,
    pub global: GlobalBranchRestrictions,
    /// Where each environment's releases are committed (and its history read from).
    pub places: BTreeMap<String, Place>,
    /// Where `policies/<service>.json` files live.
    pub policies: Option<Place>,
}

/// An error naming the configuration field at fault, and what is wrong.
pub type FieldError = (String, String);

impl ReleaseModel {
    /// Validates the release sections of `config`.
    ///
    /// # Errors
    /// The field at fault (`environments[1].repository`, `services`, …) and the problem.
    pub fn from_config(config: &Config) -> Result<Self, FieldError> {
        let only_repository = match config.repositories.as_slice() {
            [only] => Some(only.name.clone()),
            _ => None,
        };
        let mut configured = config.environments.clone();
        for (i, env) in configured.iter_mut().enumerate() {
            match &env.repository {
                Some(name) if config.repository(name).is_none() => {
                    return Err((
                        format!("environments[{i}].repository"),
                        format!("`{name}` is not a configured repository name"),
                    ));
                }
                Some(_) => {}
                None => match &only_repository {
                    Some(name) => env.repository = Some(name.clone()),
                    None => {
                        return Err((
                            format!("environments[{i}].repository"),
                            "missing: with several repositories configured, each environment names its repository".to_owned(),
                        ));
                    }
                },
            }
            if env.branch.is_none() {
                env.branch = Some(DEFAULT_BRANCH.to_owned());
            }
            if let Some(branch) = &env.branch
                && let Err(e) = tug_spec::check_branch_name(branch)
            {
                return Err((format!("environments[{i}].branch"), e.to_string()));
            }
        }
        let environments = Environments::new(configured)
            .map_err(|e| ("environments".to_owned(), e.to_string()))?;
        let mut specs = config.services.clone();
        for spec in &mut specs {
            if spec.path.is_none() && matches!(spec.edit, Some(EditKind::Copy)) {
                spec.path = Some(COPY_RELEASE_PATH.to_owned());
            }
        }
        let services = Services::new(specs, &environments)
            .map_err(|e| ("services".to_owned(), e.to_string()))?;
        let mut places = BTreeMap::new();
        for env in &environments {
            let place = Place {
                repository: env.repository.clone().unwrap_or_default(),
                branch: env
                    .branch
                    .clone()
                    .unwrap_or_else(|| DEFAULT_BRANCH.to_owned()),
            };
            places.insert(env.name.clone(), place);
        }
        for spec in services.iter() {
            for env in &environments {
                let Ok(target) = services.target_for(&spec.name, &env.name) else {
                    continue;
                };
                if let Some(place) = target_place(&target, &places)
                    && config.repository(&place.repository).is_none()
                {
                    return Err((
                        "services".to_owned(),
                        format!(
                            "service '{}' in environment '{}': `{}` is not a configured repository name",
                            spec.name, env.name, place.repository
                        ),
                    ));
                }
                if target_place(&target, &places).as_ref() != places.get(&env.name) {
                    return Err((
                        "services".to_owned(),
                        format!(
                            "service '{}' overrides the repository or branch of environment '{}'; tug reads an environment's release history from one branch, so set it on the environment instead",
                            spec.name, env.name
                        ),
                    ));
                }
            }
        }
        let global = GlobalBranchRestrictions::parse(&config.policies.branch_restrictions)
            .map_err(|e| ("policies.branch_restrictions".to_owned(), e.to_string()))?;
        if let Some(r) = global
            .iter()
            .find(|r| environments.get(&r.environment).is_err())
        {
            return Err((
                "policies.branch_restrictions".to_owned(),
                format!(
                    "restriction '{}={}' names environment '{}', which is not defined",
                    r.environment, r.branch_regex, r.environment
                ),
            ));
        }
        let policies = match &config.policies.repository {
            Some(name) => {
                if config.repository(name).is_none() {
                    return Err((
                        "policies.repository".to_owned(),
                        format!("`{name}` is not a configured repository name"),
                    ));
                }
                Some(Place {
                    repository: name.clone(),
                    branch: config
                        .policies
                        .branch
                        .clone()
                        .unwrap_or_else(|| DEFAULT_BRANCH.to_owned()),
                })
            }
            None => environments.iter().next().map(|first| {
                let mut place = places.get(&first.name).cloned().unwrap_or(Place {
                    repository: String::new(),
                    branch: DEFAULT_BRANCH.to_owned(),
                });
                if let Some(branch) = &config.policies.branch {
                    place.branch.clone_from(branch);
                }
                place
            }),
        };
        Ok(Self {
            environments,
            services,
            global,
            places,
            policies,
        })
    }

    /// Whether any release configuration exists (the release API answers only then).
    pub fn is_configured(&self) -> bool {
        !self.environments.is_empty()
    }

    /// The distinct branches holding environments.
    pub fn branches(&self) -> Vec<Place> {
        let mut places: Vec<Place> = self.places.values().cloned().collect();
        places.sort();
        places.dedup();
        places
    }

    /// The environments placed on `place`.
    pub fn environments_on(&self, place: &Place) -> Vec<&str> {
        self.places
            .iter()
            .filter(|(_, p)| *p == place)
            .map(|(env, _)| env.as_str())
            .collect()
    }
}

fn target_place(target: &Target, places: &BTreeMap<String, Place>) -> Option<Place> {
    let env_place = places.get(&target.environment)?;
    Some(Place {
        repository: target
            .repository
            .clone()
            .unwrap_or_else(|| env_place.repository.clone()),
        branch: target
            .branch
            .clone()
            .unwrap_or_else(|| env_place.branch.clone()),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const BASE: &str = r#"
repositories:
  - { name: platform, url: "https://git.example.com/platform.git" }
  - { name: apps, url: "https://git.example.com/apps.git" }
auth: { mode: none }
"#;

    fn load(release: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(
            &format!("{BASE}{release}"),
            Path::new("/etc/tug/server.yaml"),
            &|_| None,
        )
    }

    fn error(release: &str) -> String {
        load(release).unwrap_err().to_string()
    }

    #[test]
    fn reads_environments_services_and_policies() {
        let config = load(
            r#"
environments:
  - { name: dev, repository: platform }
  - { name: prod, after: dev, repository: apps, branch: live }
services:
  - name: api
    namespace: payments
    path: "apps/{service}/{env}"
    edit: { kind: kustomize }
    environments:
      prod: { edit: { kind: helm, key: image } }
  - { name: web, edit: { kind: copy } }
policies:
  branch_restrictions: ["prod=^main$"]
"#,
        )
        .unwrap();
        let model = super::ReleaseModel::from_config(&config).unwrap();
        assert_eq!(model.places["dev"].branch, "main");
        assert_eq!(model.places["prod"].repository, "apps");
        assert_eq!(model.policies.as_ref().unwrap().repository, "platform");
        let web = model.services.target_for("web", "prod").unwrap();
        assert_eq!(web.path, "prod/releases/prod/web");
        let api = model.services.target_for("api", "prod").unwrap();
        assert_eq!(
            api.edit,
            tug_release::EditKind::Helm {
                key: "image".to_owned()
            }
        );
        assert_eq!(model.branches().len(), 2);
    }

    #[test]
    fn errors_name_the_field_at_fault() {
        for (release, expected) in [
            (
                "environments: [{ name: dev, repository: nope }]",
                "environments[0].repository: `nope` is not a configured repository name",
            ),
            (
                "environments: [{ name: dev }]",
                "environments[0].repository: missing",
            ),
            (
                "environments: [{ name: dev, repository: platform }]\nservices: [{ name: api, path: x, edit: { kind: sed } }]",
                "sed",
            ),
            (
                "environments: [{ name: dev, repository: platform }]\nservices: [{ name: api, path: x, edit: { kind: kustomize, imag: x } }]",
                "imag",
            ),
            (
                "environments: [{ name: dev, repository: platform }]\npolicies: { branch_restrictions: [\"prod=^main$\"] }",
                "policies.branch_restrictions: restriction 'prod=^main$' names environment 'prod'",
            ),
            (
                "environments: [{ name: dev, repository: platform }]\npolicies: { branch_restrictions: [\"dev=(\"] }",
                "policies.branch_restrictions: global branch restriction 'dev=('",
            ),
            (
                "environments: [{ name: dev, repository: platform }, { name: qa, after: test, repository: platform }]",
                "environments: environment 'qa' comes after 'test'",
            ),
        ] {
            let err = error(release);
            assert!(err.contains(expected), "{release}\n{err}");
        }
    }
}
