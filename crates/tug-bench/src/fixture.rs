//! Benchmark fixtures: pristine bare manifest repositories made by `bench/make-fixture.sh`
//! (`apps/<service>/<env>/kustomization.yaml` with the service's image first in `images:`), and the
//! image bumps a benchmark sends to them.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tug_testkit::run_git;

/// The branch every fixture keeps its manifests on.
pub(crate) const BRANCH: &str = "main";
const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];
// Consecutive requests land on services far apart, as CI of unrelated services would.
const SERVICE_STRIDE: usize = 37;

/// A pristine fixture; benchmarks push to copies of it, never to it.
#[derive(Debug, Clone)]
pub(crate) struct Fixture {
    pub name: String,
    pub path: PathBuf,
    /// Service directories (`apps/<service>/<env>/` holding a kustomization).
    pub service_dirs: usize,
    pub services: Vec<String>,
    pub commits: usize,
    pub files: usize,
}

/// One deploy request: set the tag of the service's own image in one overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageBump {
    /// The overlay directory, e.g. `apps/svc-0037/staging`.
    pub dir: String,
    /// Its kustomization file.
    pub file: String,
    /// The image name as the kustomization lists it.
    pub image: String,
}

impl Fixture {
    /// Reads a fixture's shape from git: `DIR/NAME.git`.
    pub(crate) fn load(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(format!("{name}.git"));
        if !path.join("HEAD").is_file() {
            bail!(
                "fixture {} is missing; make it with bench/make-fixture.sh {name} {}",
                path.display(),
                path.display()
            );
        }
        let git_dir = path_str(&path)?;
        let commits = String::from_utf8_lossy(&run_git(
            None,
            &["--git-dir", git_dir, "rev-list", "--count", BRANCH],
        )?)
        .trim()
        .parse::<usize>()
        .with_context(|| format!("count commits of {BRANCH} in {}", path.display()))?;
        let listing = run_git(
            None,
            &["--git-dir", git_dir, "ls-tree", "-r", "--name-only", BRANCH],
        )?;
        let listing = String::from_utf8_lossy(&listing);
        let mut files = 0;
        let mut service_dirs = 0;
        let mut services = Vec::new();
        for file in listing.lines() {
            files += 1;
            let parts: Vec<&str> = file.split('/').collect();
            if let ["apps", service, _env, "kustomization.yaml"] = parts.as_slice() {
                service_dirs += 1;
                if services.last().is_none_or(|last: &String| last != service) {
                    services.push((*service).to_owned());
                }
            }
        }
        if services.is_empty() {
            bail!(
                "fixture {} has no apps/<service>/<env>/kustomization.yaml on {BRANCH}",
                path.display()
            );
        }
        Ok(Self {
            name: name.to_owned(),
            path,
            service_dirs,
            services,
            commits,
            files,
        })
    }

    /// The image bumps of the numbered requests, each on a different service/environment, read
    /// from the fixture (outside any timing).
    pub(crate) fn image_bumps(&self, requests: RangeInclusive<usize>) -> Result<Vec<ImageBump>> {
        let git_dir = path_str(&self.path)?;
        requests
            .map(|i| {
                let (service, env) = pick(&self.services, i);
                let dir = format!("apps/{service}/{env}");
                let file = format!("{dir}/kustomization.yaml");
                let text = run_git(
                    None,
                    &["--git-dir", git_dir, "show", &format!("{BRANCH}:{file}")],
                )
                .with_context(|| format!("read {file} from {}", self.path.display()))?;
                let image =
                    service_image(&String::from_utf8_lossy(&text), service).with_context(|| {
                        format!(
                            "{file} in {} lists no image of {service}",
                            self.path.display()
                        )
                    })?;
                Ok(ImageBump { dir, file, image })
            })
            .collect()
    }

    /// A kustomization of the fixture, for edit-engine runs.
    pub(crate) fn kustomization(&self) -> Result<(ImageBump, Vec<u8>)> {
        let bump = self
            .image_bumps(1..=1)?
            .pop()
            .context("no image bump for request 1")?;
        let bytes = run_git(
            None,
            &[
                "--git-dir",
                path_str(&self.path)?,
                "show",
                &format!("{BRANCH}:{}", bump.file),
            ],
        )?;
        Ok((bump, bytes))
    }

    /// Copies the pristine repository to `dest` (replacing it), so each scenario starts from the
    /// same state with no objects left by an earlier one.
    pub(crate) fn copy_to(&self, dest: &Path) -> Result<()> {
        if dest.exists() {
            std::fs::remove_dir_all(dest).with_context(|| format!("remove {}", dest.display()))?;
        }
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.path)
            .arg(dest)
            .status()
            .context("run cp")?;
        if !status.success() {
            bail!(
                "cp -a {} {} failed: {status}",
                self.path.display(),
                dest.display()
            );
        }
        // Anonymous pushes over smart HTTP need this on the served copy.
        run_git(
            None,
            &[
                "--git-dir",
                path_str(dest)?,
                "config",
                "http.receivepack",
                "true",
            ],
        )?;
        Ok(())
    }
}

/// Service and environment of request `i` (1-based).
fn pick(services: &[String], i: usize) -> (&str, &'static str) {
    let service = &services[(i * SERVICE_STRIDE) % services.len()];
    (service, ENVIRONMENTS[i % ENVIRONMENTS.len()])
}

/// The `- name:` of the `images:` entry that is the service's own (`…/<service>`).
fn service_image(kustomization: &str, service: &str) -> Option<String> {
    kustomization.lines().find_map(|line| {
        let name = line.trim_start().strip_prefix("- name:")?.trim();
        let suffix = format!("/{service}");
        name.ends_with(&suffix).then(|| name.to_owned())
    })
}

pub(crate) fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_spread_over_services_and_environments() {
        let services: Vec<String> = (0..50).map(|i| format!("svc-{i:04}")).collect();
        assert_eq!(pick(&services, 1), ("svc-0037", "staging"));
        assert_eq!(pick(&services, 2), ("svc-0024", "prod"));
        assert_eq!(pick(&services, 3), ("svc-0011", "dev"));
        let distinct: std::collections::HashSet<_> = (1..=30).map(|i| pick(&services, i)).collect();
        assert_eq!(distinct.len(), 30);
    }

    #[test]
    fn the_service_image_is_found_among_sidecars() {
        let k = "images:\n  # sidecar\n  - name: registry.example.com/platform/envoy-sidecar\n    newTag: \"1\"\n  - name: registry.example.com/search/svc-0007\n    newTag: \"1.2.3\"\n";
        assert_eq!(
            service_image(k, "svc-0007").as_deref(),
            Some("registry.example.com/search/svc-0007")
        );
        assert_eq!(service_image(k, "svc-0008"), None);
    }
}
