//! What a release changes in the repository: an image edit at the service's target, or a chart
//! version bump for `chart` targets (as a `tug_spec::PathUpdate`, so the writer applies it with
//! the same engine as deploys), or, for services released by copying, the artifact's rendered
//! manifests written whole.

use std::collections::BTreeMap;

use tug_release::{ChartReference, EditKind, ImageReference, Target};
use tug_spec::{
    ChartUpdate, HelmImageUpdate, ImageSpec, KustomizeUpdate, ManifestImageUpdate, PathUpdate,
    RedeployUpdate, YqUpdate,
};

use tug_deploy::WholeFile;

/// The edit of an image-edit target. `redeploy` adds the pod-template annotation bump, for a
/// release whose image reference alone would not roll the pods.
pub(super) fn image_update(
    target: &Target,
    image: &ImageReference,
    redeploy: bool,
) -> Result<PathUpdate, String> {
    let mut update = PathUpdate {
        path: target.path.clone(),
        ..PathUpdate::default()
    };
    let mut redeploy_file = None;
    match &target.edit {
        EditKind::Kustomize { image: name } => {
            let entry = name.clone().unwrap_or_else(|| image.image.clone());
            update.kustomize = Some(KustomizeUpdate {
                images: vec![ImageSpec {
                    new_name: (entry != image.image).then(|| image.image.clone()),
                    name: entry,
                    new_tag: Some(image.tag.clone()),
                    digest: image.digest.clone(),
                }],
            });
        }
        EditKind::Helm { key } => {
            // The values file holds the artifact's image repository (as `repository`, or
            // `registry` + `repository`); the edit sets its tag and digest.
            update.helm = vec![HelmImageUpdate {
                file: None,
                key: Some(format!(".{key}")),
                name: Some(image.image.clone()),
                new_name: None,
                new_tag: Some(image.tag.clone()),
                digest: image.digest.clone(),
            }];
            redeploy_file = Some("values.yaml".to_owned());
        }
        EditKind::Yq { path } => {
            // The target path names the file; the edit engine wants its directory and name.
            let (dir, file) = target
                .path
                .rsplit_once('/')
                .unwrap_or(("", target.path.as_str()));
            update.path = dir.to_owned();
            let mut value = format!("{}:{}", image.image, image.tag);
            if let Some(digest) = &image.digest {
                value.push('@');
                value.push_str(digest);
            }
            update.yq = vec![YqUpdate {
                file: file.to_owned(),
                key: path.clone(),
                value: value.as_str().into(),
                value_type: Some("string".to_owned()),
            }];
            redeploy_file = Some(file.to_owned());
        }
        EditKind::Manifest { container } => {
            update.images = vec![ManifestImageUpdate {
                file: None,
                name: image.image.clone(),
                container: container.clone(),
                new_name: None,
                new_tag: Some(image.tag.clone()),
                digest: image.digest.clone(),
            }];
        }
        EditKind::Copy => {
            return Err(format!(
                "service '{}' is released by copying manifests in environment '{}', not by an image edit",
                target.service, target.environment
            ));
        }
        EditKind::Chart { .. } => {
            return Err(format!(
                "service '{}' is released by a chart version in environment '{}', not by an image edit",
                target.service, target.environment
            ));
        }
    }
    if redeploy {
        update.redeploy = Some(RedeployUpdate {
            file: redeploy_file,
            workload: None,
            annotation: None,
        });
    }
    Ok(update)
}

/// The edit of a `chart` target: pin the artifact's chart version in the one file of the
/// target's directory that pins the chart (named by the target, else by the artifact).
pub(super) fn chart_update(target: &Target, chart: &ChartReference) -> Result<PathUpdate, String> {
    let EditKind::Chart { name } = &target.edit else {
        return Err(format!(
            "service '{}' is not released by a chart version in environment '{}'",
            target.service, target.environment
        ));
    };
    Ok(PathUpdate {
        path: target.path.clone(),
        chart: vec![ChartUpdate {
            file: None,
            name: name.clone().unwrap_or_else(|| chart.name.clone()),
            repository: None,
            version: chart.version.clone(),
        }],
        ..PathUpdate::default()
    })
}

/// Whether a manifest is a Flux `Kustomization` (which belongs under `clusters/`).
fn is_flux_kustomization(content: &str) -> bool {
    let mut api = false;
    let mut kind = false;
    for line in content.lines() {
        let line = line.trim_end();
        if let Some(value) = line.strip_prefix("apiVersion:") {
            api |= value
                .trim()
                .trim_matches(['"', '\''])
                .starts_with("kustomize.toolkit.fluxcd.io/");
        }
        if let Some(value) = line.strip_prefix("kind:") {
            kind |= value.trim().trim_matches(['"', '\'']) == "Kustomization";
        }
    }
    api && kind
}

/// The files a copy release writes, and the directory they own.
#[derive(Debug)]
pub(super) struct CopyRelease {
    pub files: Vec<WholeFile>,
    pub replace_dirs: Vec<String>,
}

/// The bundle's `<env>/` manifests under the target directory with `artifact.json`, and a Flux
/// `Kustomization` among them at `clusters/<env>/<namespace>/<service>.yaml`.
pub(super) fn copy_release(
    target: &Target,
    namespace: &str,
    artifact_id: &str,
    artifact_json: &str,
    bundle: &BTreeMap<String, String>,
) -> Result<CopyRelease, String> {
    let prefix = format!("{}/", target.environment);
    let dir = target.path.trim_end_matches('/').to_owned();
    let file = |path: String, content: &str| WholeFile {
        path,
        content: content.as_bytes().to_vec(),
    };
    let mut files = vec![file(format!("{dir}/artifact.json"), artifact_json)];
    let mut flux = None;
    for (name, content) in bundle {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if is_flux_kustomization(content) {
            if flux.is_some() {
                return Err(format!(
                    "the bundle of artifact '{artifact_id}' has more than one Flux Kustomization for environment '{}'",
                    target.environment
                ));
            }
            flux = Some(file(
                format!(
                    "clusters/{}/{namespace}/{}.yaml",
                    target.environment, target.service
                ),
                content,
            ));
        } else {
            files.push(file(format!("{dir}/{rest}"), content));
        }
    }
    if files.len() == 1 && flux.is_none() {
        return Err(format!(
            "the bundle of artifact '{artifact_id}' has no manifests for environment '{}' (files named '{prefix}…'); upload it with POST /api/v1/artifacts/{artifact_id}/bundle",
            target.environment
        ));
    }
    files.extend(flux);
    Ok(CopyRelease {
        files,
        replace_dirs: vec![dir],
    })
}

/// Checks an uploaded bundle's file names: `<env>/<relative path>` of a defined environment.
pub(super) fn check_bundle(
    bundle: &BTreeMap<String, String>,
    is_environment: impl Fn(&str) -> bool,
) -> Result<(), (String, String)> {
    for name in bundle.keys() {
        let field = format!("files.{name}");
        let Some((env, rest)) = name.split_once('/') else {
            return Err((field, format!("'{name}' must be '<environment>/<file>'")));
        };
        if !is_environment(env) {
            return Err((field, format!("environment '{env}' is not defined")));
        }
        if tug_git::split_path(rest).is_err() || rest.ends_with('/') {
            return Err((
                field,
                format!("'{rest}' is not a relative file path without '.' or '..' components"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(edit: EditKind, path: &str) -> Target {
        Target {
            service: "api".to_owned(),
            environment: "dev".to_owned(),
            repository: Some("platform".to_owned()),
            branch: Some("main".to_owned()),
            path: path.to_owned(),
            edit,
        }
    }

    fn image(digest: Option<&str>) -> ImageReference {
        ImageReference {
            image: "registry.example.com/api".to_owned(),
            tag: "1.2.3".to_owned(),
            digest: digest.map(str::to_owned),
        }
    }

    #[test]
    fn kustomize_entry_is_the_image_unless_configured() {
        let update = image_update(
            &target(EditKind::Kustomize { image: None }, "apps/api/dev"),
            &image(Some("sha256:abc")),
            false,
        )
        .unwrap();
        let entry = &update.kustomize.unwrap().images[0];
        assert_eq!(entry.name, "registry.example.com/api");
        assert_eq!(entry.new_name, None);
        assert_eq!(entry.new_tag.as_deref(), Some("1.2.3"));
        assert_eq!(entry.digest.as_deref(), Some("sha256:abc"));
        assert!(update.redeploy.is_none());

        let named = image_update(
            &target(
                EditKind::Kustomize {
                    image: Some("api".to_owned()),
                },
                "apps/api/dev",
            ),
            &image(None),
            true,
        )
        .unwrap();
        let entry = &named.kustomize.unwrap().images[0];
        assert_eq!(entry.name, "api");
        assert_eq!(entry.new_name.as_deref(), Some("registry.example.com/api"));
        assert!(named.redeploy.is_some());
    }

    #[test]
    fn a_chart_target_pins_the_artifact_chart_version_under_the_configured_name() {
        let chart = ChartReference {
            name: "api".to_owned(),
            version: "1.10".to_owned(),
        };
        let update = chart_update(
            &target(EditKind::Chart { name: None }, "apps/api/dev"),
            &chart,
        )
        .unwrap();
        assert_eq!(update.path, "apps/api/dev");
        assert_eq!(update.chart[0].name, "api");
        assert_eq!(update.chart[0].version, "1.10");
        assert!(update.redeploy.is_none() && update.kustomize.is_none());
        let named = chart_update(
            &target(
                EditKind::Chart {
                    name: Some("api-chart".to_owned()),
                },
                "apps/api/dev",
            ),
            &chart,
        )
        .unwrap();
        assert_eq!(named.chart[0].name, "api-chart");
        let image_target = target(EditKind::Kustomize { image: None }, "apps/api/dev");
        assert!(chart_update(&image_target, &chart).is_err());
        assert!(
            image_update(
                &target(EditKind::Chart { name: None }, "x"),
                &image(None),
                false
            )
            .is_err()
        );
    }

    #[test]
    fn yq_target_path_names_the_file() {
        let update = image_update(
            &target(
                EditKind::Yq {
                    path: ".spec.image".to_owned(),
                },
                "apps/api/dev/release.yaml",
            ),
            &image(None),
            true,
        )
        .unwrap();
        assert_eq!(update.path, "apps/api/dev");
        assert_eq!(update.yq[0].file, "release.yaml");
        assert_eq!(update.yq[0].value.text, "registry.example.com/api:1.2.3");
        assert_eq!(
            update.redeploy.unwrap().file.as_deref(),
            Some("release.yaml")
        );
    }

    #[test]
    fn copy_places_manifests_artifact_and_flux_kustomization() {
        let bundle: BTreeMap<String, String> = [
            ("dev/deployment.yaml", "kind: Deployment\n"),
            (
                "dev/flux.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n",
            ),
            ("prod/deployment.yaml", "kind: Deployment\n"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let release = copy_release(
            &target(EditKind::Copy, "dev/releases/dev/api"),
            "dev",
            "a-1",
            "{}\n",
            &bundle,
        )
        .unwrap();
        let paths: Vec<&str> = release.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "dev/releases/dev/api/artifact.json",
                "dev/releases/dev/api/deployment.yaml",
                "clusters/dev/dev/api.yaml",
            ]
        );
        assert_eq!(release.replace_dirs, ["dev/releases/dev/api"]);
        let empty = copy_release(
            &target(EditKind::Copy, "staging/releases/staging/api"),
            "staging",
            "a-1",
            "{}\n",
            &BTreeMap::new(),
        );
        assert!(empty.unwrap_err().contains("no manifests for environment"));
    }

    #[test]
    fn bundle_names_must_be_environment_files() {
        let known = |env: &str| env == "dev";
        let bundle = |name: &str| BTreeMap::from([(name.to_owned(), String::new())]);
        assert!(check_bundle(&bundle("dev/a.yaml"), known).is_ok());
        assert!(
            check_bundle(&bundle("qa/a.yaml"), known)
                .unwrap_err()
                .1
                .contains("'qa'")
        );
        assert!(check_bundle(&bundle("dev/../a.yaml"), known).is_err());
        assert!(check_bundle(&bundle("a.yaml"), known).is_err());
    }
}
