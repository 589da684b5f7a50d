//! Checks that need no repository: names, paths and limits. A request that passes is safe to
//! store; what can only be known against the files (a missing key, an unmatched image) is found
//! when the edits are applied, before anything is committed.

use crate::model::{DeployRequest, DeploySpec, ImageSpec, PathUpdate};

/// A spec field at fault: `field` is its path in the request, e.g. `deploySpecs[0].updates[1].branch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Paths over all specs of one request.
    pub max_paths: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_paths: 256 }
    }
}

pub fn validate_request(req: &DeployRequest, limits: &Limits) -> Result<(), InvalidSpec> {
    if req.deploy_specs.is_empty() {
        return Err(invalid(
            "deploySpecs",
            "at least one deploy spec is required",
        ));
    }
    validate_specs(&req.deploy_specs, "deploySpecs", limits)?;
    Ok(())
}

pub fn validate_specs(specs: &[DeploySpec], at: &str, limits: &Limits) -> Result<(), InvalidSpec> {
    let mut paths = 0usize;
    for (si, spec) in specs.iter().enumerate() {
        let at = format!("{at}[{si}]");
        if spec.url.trim().is_empty()
            && spec
                .repository
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
        {
            return Err(invalid(
                format!("{at}.url"),
                "give the repository's url (or its configured name as `repository`)",
            ));
        }
        if spec.updates.is_empty() {
            return Err(invalid(
                format!("{at}.updates"),
                "at least one update is required",
            ));
        }
        for (ui, update) in spec.updates.iter().enumerate() {
            let at = format!("{at}.updates[{ui}]");
            check_branch_name(&update.branch).map_err(|m| invalid(format!("{at}.branch"), m))?;
            if update.paths.is_empty() {
                return Err(invalid(
                    format!("{at}.paths"),
                    "at least one path is required",
                ));
            }
            for (pi, path) in update.paths.iter().enumerate() {
                paths += 1;
                if paths > limits.max_paths {
                    return Err(invalid(
                        format!("{at}.paths[{pi}]"),
                        format!(
                            "too many paths in one request (the limit is {})",
                            limits.max_paths
                        ),
                    ));
                }
                validate_path_update(path, &format!("{at}.paths[{pi}]"))?;
            }
        }
    }
    Ok(())
}

pub fn validate_path_update(p: &PathUpdate, at: &str) -> Result<(), InvalidSpec> {
    normalize_repo_path(&p.path).map_err(|m| invalid(format!("{at}.path"), m))?;
    let mut edits = 0usize;
    if let Some(k) = &p.kustomize {
        for (i, img) in k.images.iter().enumerate() {
            image_spec(img, &format!("{at}.kustomize.images[{i}]"))?;
            edits += 1;
        }
    }
    for (i, y) in p.yq.iter().enumerate() {
        let f = format!("{at}.yq[{i}]");
        check_file_name(&y.file).map_err(|m| invalid(format!("{f}.file"), m))?;
        if y.key.trim().is_empty() {
            return Err(invalid(format!("{f}.key"), "must not be empty"));
        }
        if let Some(t) = &y.value_type {
            t.parse::<tug_edit::ValueType>().map_err(|_| {
                invalid(
                    format!("{f}.type"),
                    format!("unknown type {t:?}; expected auto, string, number, bool or null"),
                )
            })?;
        }
        edits += 1;
    }
    for (i, m) in p.images.iter().enumerate() {
        let f = format!("{at}.images[{i}]");
        if let Some(file) = &m.file {
            check_file_name(file).map_err(|m| invalid(format!("{f}.file"), m))?;
        }
        if m.container.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(invalid(
                format!("{f}.container"),
                "must not be empty: name a container, or leave it out to change every container of the image",
            ));
        }
        image_spec(&m.image_ref(), &f)?;
        edits += 1;
    }
    for (i, h) in p.helm.iter().enumerate() {
        let f = format!("{at}.helm[{i}]");
        if let Some(file) = &h.file {
            check_file_name(file).map_err(|m| invalid(format!("{f}.file"), m))?;
        }
        if h.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(invalid(
                format!("{f}.name"),
                "required: the image repository the values file holds now (it must match)",
            ));
        }
        if h.new_name.is_none() && h.new_tag.is_none() && h.digest.is_none() {
            return Err(invalid(f, "nothing to set: give newName, newTag or digest"));
        }
        edits += 1;
    }
    for (i, c) in p.chart.iter().enumerate() {
        let f = format!("{at}.chart[{i}]");
        if let Some(file) = &c.file {
            check_file_name(file).map_err(|m| invalid(format!("{f}.file"), m))?;
        }
        if c.name.trim().is_empty() {
            return Err(invalid(format!("{f}.name"), "must not be empty"));
        }
        if c.repository.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(invalid(
                format!("{f}.repository"),
                "must not be empty: name the chart's repository, or leave it out",
            ));
        }
        tug_edit::validate_chart_version(&c.version).map_err(|m| {
            invalid(
                format!("{f}.version"),
                format!("{:?} is not a chart version: {m}", c.version),
            )
        })?;
        edits += 1;
    }
    if let Some(r) = &p.redeploy {
        if let Some(file) = &r.file {
            check_file_name(file).map_err(|m| invalid(format!("{at}.redeploy.file"), m))?;
        }
        if let Some(key) = &r.annotation {
            tug_edit::validate_annotation_key(key).map_err(|m| {
                invalid(
                    format!("{at}.redeploy.annotation"),
                    format!("{key:?} is not a Kubernetes annotation key: {m}"),
                )
            })?;
        }
        edits += 1;
    }
    if edits == 0 {
        return Err(invalid(
            at,
            "no edit given: add kustomize.images, yq, images, helm, chart or redeploy",
        ));
    }
    Ok(())
}

/// Builds and checks an image spec from the kustomize-style fields.
pub fn image_spec(img: &ImageSpec, at: &str) -> Result<tug_edit::ImageSpec, InvalidSpec> {
    if img.name.trim().is_empty() {
        return Err(invalid(format!("{at}.name"), "must not be empty"));
    }
    if img.new_name.is_none() && img.new_tag.is_none() && img.digest.is_none() {
        return Err(invalid(
            at,
            "nothing to set: give newName, newTag or digest",
        ));
    }
    let mut s = img.name.clone();
    if let Some(n) = &img.new_name {
        s.push('=');
        s.push_str(n);
    }
    if let Some(t) = &img.new_tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &img.digest {
        s.push('@');
        s.push_str(d);
    }
    tug_edit::ImageSpec::parse(&s).map_err(|e| invalid(at, e.to_string()))
}

/// Normalises a directory inside the repository: `./apps//x/` → `apps/x`, the root → `""`.
/// Absolute paths and `..` are refused: a request can only touch its own repository.
pub fn normalize_repo_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(format!(
            "{path:?} is absolute; paths are relative to the repository root"
        ));
    }
    if path.contains('\0') {
        return Err("contains a NUL byte".to_owned());
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "{path:?} leaves the repository (`..` is not allowed)"
                ));
            }
            p if p.contains('\\') => {
                return Err(format!(
                    "{path:?} contains a backslash; use `/` between directories"
                ));
            }
            ".git" => return Err(format!("{path:?} points into .git")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// A file name relative to a spec path; it may have subdirectories but may not leave the repository.
pub fn check_file_name(file: &str) -> Result<(), String> {
    if normalize_repo_path(file)?.is_empty() {
        return Err("must name a file".to_owned());
    }
    Ok(())
}

/// Joins a spec path and a file name into one repository path.
pub fn join_repo_path(dir: &str, file: &str) -> Result<String, String> {
    let dir = normalize_repo_path(dir)?;
    let file = normalize_repo_path(file)?;
    Ok(if dir.is_empty() {
        file
    } else if file.is_empty() {
        dir
    } else {
        format!("{dir}/{file}")
    })
}

/// The rules of `git check-ref-format --branch`, so a bad name fails before anything is queued.
pub fn check_branch_name(branch: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{branch:?} is not a valid branch name: {why}"));
    if branch.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if branch.starts_with('-') {
        return bad("starts with `-`");
    }
    if branch.starts_with("refs/") {
        return bad("give the branch name without `refs/heads/`");
    }
    if branch.ends_with('/') || branch.ends_with('.') || branch.ends_with(".lock") {
        return bad("ends with `/`, `.` or `.lock`");
    }
    if branch.contains("..") || branch.contains("//") || branch.contains("@{") || branch == "@" {
        return bad("contains `..`, `//` or `@{`");
    }
    if let Some(c) = branch
        .chars()
        .find(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return bad(&format!("contains {c:?}"));
    }
    if branch.split('/').any(|c| c.starts_with('.')) {
        return bad("a component starts with `.`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A redeploy annotation that is not a Kubernetes qualified name (`<<` would be written as a
    /// YAML merge key) is refused before any file is read, naming the field.
    #[test]
    fn redeploy_annotation_must_be_a_qualified_name() {
        let update = |annotation: &str| {
            crate::from_json::<PathUpdate>(
                "spec.json",
                &format!(r#"{{"path": "apps/web", "redeploy": {{"annotation": {annotation:?}}}}}"#),
            )
            .unwrap()
        };
        let err = validate_path_update(&update("<<"), "specs[0].updates[0].paths[0]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "specs[0].updates[0].paths[0].redeploy.annotation: \"<<\" is not a Kubernetes annotation key: the name does not start and end with a letter or digit"
        );
        validate_path_update(&update("tug.dev/redeployed-at"), "x").unwrap();
    }

    /// A chart edit is checked before any file is read, each problem naming its field; a
    /// version must be a string, since YAML would read `1.10` as the number 1.1.
    #[test]
    fn chart_edits_are_validated_naming_the_field() {
        let check = |chart: &str| {
            let update = crate::from_json::<PathUpdate>(
                "spec.json",
                &format!(r#"{{"path": "apps/web", "chart": [{chart}]}}"#),
            )
            .map_err(|e| e.to_string())?;
            validate_path_update(&update, "p").map_err(|e| e.to_string())
        };
        check(r#"{"name": "podinfo", "version": "6.6.0"}"#).unwrap();
        check(r#"{"name": "podinfo", "version": ">=6.6.0 <7", "repository": "oci://r", "file": "hr.yaml"}"#)
            .unwrap();
        assert_eq!(
            check(r#"{"name": " ", "version": "1"}"#).unwrap_err(),
            "p.chart[0].name: must not be empty"
        );
        assert_eq!(
            check(r#"{"name": "podinfo", "version": ""}"#).unwrap_err(),
            "p.chart[0].version: \"\" is not a chart version: the version is empty"
        );
        assert_eq!(
            check(r#"{"name": "podinfo", "version": "1\n2"}"#).unwrap_err(),
            "p.chart[0].version: \"1\\n2\" is not a chart version: it holds a line break or another control character"
        );
        assert_eq!(
            check(r#"{"name": "podinfo", "version": "1", "repository": ""}"#).unwrap_err(),
            "p.chart[0].repository: must not be empty: name the chart's repository, or leave it out"
        );
        assert_eq!(
            check(r#"{"name": "podinfo", "version": "1", "file": "../x.yaml"}"#).unwrap_err(),
            "p.chart[0].file: \"../x.yaml\" leaves the repository (`..` is not allowed)"
        );
        let number = check(r#"{"name": "podinfo", "version": 1.10}"#).unwrap_err();
        assert!(number.contains("chart[0].version"), "{number}");
        assert!(
            check(r#"{"name": "podinfo"}"#)
                .unwrap_err()
                .contains("version")
        );
    }

    /// `kustomize.images` entries take kustomize's `*` ("keep the current value") in newName,
    /// newTag and digest, as `kustomize edit set image` does; not as the name to match.
    #[test]
    fn image_fields_accept_the_keep_placeholder() {
        let img = |name: &str, new_name: Option<&str>, tag: Option<&str>, digest: Option<&str>| {
            ImageSpec {
                name: name.to_owned(),
                new_name: new_name.map(str::to_owned),
                new_tag: tag.map(str::to_owned),
                digest: digest.map(str::to_owned),
            }
        };
        let spec = image_spec(&img("app", Some("*"), Some("1.2"), None), "x").unwrap();
        assert_eq!(spec.to_string(), "app=*:1.2");
        let spec = image_spec(&img("app", None, Some("*"), Some("*")), "x").unwrap();
        assert_eq!(spec.to_string(), "app:*@*");
        let err = image_spec(&img("*", None, Some("1"), None), "x").unwrap_err();
        assert!(err.to_string().contains("invalid image name"), "{err}");
    }

    #[test]
    fn paths_are_normalised_and_confined() {
        assert_eq!(normalize_repo_path("./apps//x/").unwrap(), "apps/x");
        assert_eq!(normalize_repo_path("").unwrap(), "");
        assert_eq!(normalize_repo_path(".").unwrap(), "");
        assert!(
            normalize_repo_path("/etc")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            normalize_repo_path("apps/../../x")
                .unwrap_err()
                .contains("leaves the repository")
        );
        assert!(normalize_repo_path("apps/..").is_err());
        assert!(normalize_repo_path(".git/config").is_err());
        assert_eq!(
            join_repo_path("apps/a", "values.yaml").unwrap(),
            "apps/a/values.yaml"
        );
        assert_eq!(join_repo_path("", "values.yaml").unwrap(), "values.yaml");
    }

    #[test]
    fn branch_names_follow_git() {
        for ok in ["main", "release/1.2", "feature/x-y_z", "v1.2.3"] {
            assert!(check_branch_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "a..b",
            "a b",
            "a:b",
            "x.lock",
            "a/",
            "refs/heads/main",
            "a//b",
            ".x",
            "a/.b",
            "a@{1}",
        ] {
            assert!(check_branch_name(bad).is_err(), "{bad}");
        }
    }
}
