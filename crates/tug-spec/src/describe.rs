//! How each edit of a path update describes itself in a commit (`Tug-Change` trailers and the
//! generated title): from the request alone, never from the files, so the same request always
//! describes itself the same way. Each edit kind's wording lives next to its model here.

use crate::model::{
    ChartUpdate, HelmImageUpdate, ImageSpec, ManifestImageUpdate, PathUpdate, RedeployUpdate,
    YqUpdate,
};
use crate::validate::{join_repo_path, normalize_repo_path};

/// Where the edits of one path update apply, for descriptions.
struct Location<'a> {
    path: &'a str,
    dir: String,
}

impl Location<'_> {
    /// A file of the path, as a repository path.
    fn file(&self, file: &str) -> String {
        join_repo_path(self.path, file).unwrap_or_else(|_| format!("{}/{file}", self.dir))
    }

    /// A file when the edit names one, else the directory.
    fn file_or_dir(&self, file: Option<&str>) -> String {
        file.map_or_else(|| self.dir.clone(), |f| self.file(f))
    }
}

impl PathUpdate {
    /// One line per edit, in the order they are applied: `set image app:1.2 in apps/web`.
    pub fn describe(&self) -> Vec<String> {
        let at = Location {
            path: &self.path,
            dir: normalize_repo_path(&self.path)
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| ".".to_owned()),
        };
        let mut out = Vec::new();
        if let Some(k) = &self.kustomize {
            out.extend(k.images.iter().map(|i| describe_image(i, &at)));
        }
        out.extend(self.yq.iter().map(|y| y.describe(&at)));
        out.extend(self.images.iter().map(|m| m.describe(&at)));
        out.extend(self.helm.iter().map(|h| h.describe(&at)));
        out.extend(self.chart.iter().map(|c| c.describe(&at)));
        out.extend(self.redeploy.iter().map(|r| r.describe(&at)));
        out
    }
}

/// A kustomize `images` entry (the edit engine's `ImageSpec`, so a free function).
fn describe_image(image: &ImageSpec, at: &Location<'_>) -> String {
    format!(
        "set image {} in {}",
        image_text(
            &image.name,
            image.new_name.as_deref(),
            image.new_tag.as_deref(),
            image.digest.as_deref()
        ),
        at.dir
    )
}

impl YqUpdate {
    fn describe(&self, at: &Location<'_>) -> String {
        format!(
            "set {}={} in {}",
            self.key,
            self.value.text,
            at.file(&self.file)
        )
    }
}

impl ManifestImageUpdate {
    fn describe(&self, at: &Location<'_>) -> String {
        format!(
            "set container image {} in {}",
            image_text(
                &self.name,
                self.new_name.as_deref(),
                self.new_tag.as_deref(),
                self.digest.as_deref()
            ),
            at.file_or_dir(self.file.as_deref())
        )
    }
}

impl HelmImageUpdate {
    fn describe(&self, at: &Location<'_>) -> String {
        format!(
            "set helm image {} {} in {}",
            self.key.as_deref().unwrap_or(".image"),
            image_text(
                self.name.as_deref().unwrap_or(""),
                self.new_name.as_deref(),
                self.new_tag.as_deref(),
                self.digest.as_deref()
            ),
            at.file(self.file.as_deref().unwrap_or("values.yaml"))
        )
    }
}

impl ChartUpdate {
    fn describe(&self, at: &Location<'_>) -> String {
        let from = self
            .repository
            .as_deref()
            .map(|r| format!(" from {r}"))
            .unwrap_or_default();
        format!(
            "set chart {}{from} version {} in {}",
            self.name,
            self.version,
            at.file_or_dir(self.file.as_deref())
        )
    }
}

impl RedeployUpdate {
    fn describe(&self, at: &Location<'_>) -> String {
        let target = at.file_or_dir(self.file.as_deref());
        match &self.workload {
            Some(w) => format!("redeploy {w} in {target}"),
            None => format!("redeploy in {target}"),
        }
    }
}

/// `NAME[=NEWNAME][:TAG][@DIGEST]`, as `kustomize edit set image` spells it.
fn image_text(
    name: &str,
    new_name: Option<&str>,
    tag: Option<&str>,
    digest: Option<&str>,
) -> String {
    let mut s = name.to_owned();
    if let Some(n) = new_name {
        s.push('=');
        s.push_str(n);
    }
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(d);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edit_kind_describes_itself_in_one_line() {
        let update: PathUpdate = crate::from_json(
            "spec.json",
            r#"{"path": "./apps/web/",
                "kustomize": {"images": [{"name": "web", "newTag": "1.2"}]},
                "yq": [{"file": "values.yaml", "key": ".replicas", "value": 3}],
                "images": [{"name": "web", "digest": "sha256:00"}],
                "helm": [{"name": "web", "newTag": "1.2"}],
                "chart": [{"name": "podinfo", "version": "6.6.0"},
                          {"file": "Chart.yaml", "name": "redis", "repository": "oci://r", "version": "19"}],
                "redeploy": {"workload": "web"}}"#,
        )
        .unwrap();
        assert_eq!(
            update.describe(),
            [
                "set image web:1.2 in apps/web",
                "set .replicas=3 in apps/web/values.yaml",
                "set container image web@sha256:00 in apps/web",
                "set helm image .image web:1.2 in apps/web/values.yaml",
                "set chart podinfo version 6.6.0 in apps/web",
                "set chart redis from oci://r version 19 in apps/web/Chart.yaml",
                "redeploy web in apps/web",
            ]
        );
    }
}
