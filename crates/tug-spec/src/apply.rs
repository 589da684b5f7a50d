//! Turning a branch update into file contents. The same function serves `tug apply --dir` (files on
//! disk), `tug apply --push` and the server (files in a git tree): only [`Files`] differs.

use std::collections::BTreeMap;

use tug_edit::{Edit, ValueType};

use crate::model::PathUpdate;
use crate::validate::{image_spec, join_repo_path, normalize_repo_path};

/// Read access to the files of one revision of a repository. Paths are repository-relative and
/// `/`-separated. Implementations refuse symbolic links and anything outside the repository.
pub trait Files {
    /// `Ok(None)` when there is no such file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError>;
    /// Names of the regular files directly in `dir` (`""` is the root); `Ok(None)` when the
    /// directory does not exist.
    fn list(&self, dir: &str) -> Result<Option<Vec<String>>, FilesError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: is a symbolic link; tug does not edit through links")]
    Symlink { path: String },
    #[error("{path}: leads outside the repository")]
    Escapes { path: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

/// Per-request values that a pure edit cannot make up itself.
#[derive(Debug, Clone)]
pub struct Context {
    /// Written into the redeploy annotation (a timestamp or the request id).
    pub redeploy_value: String,
    /// Refuse an edit that would only add (a new kustomize `images:` entry, a new key at a yq
    /// path, new Helm image keys) instead of reporting it in [`Applied::created`].
    pub strict: bool,
}

/// Default annotation bumped by a redeploy.
pub const REDEPLOY_ANNOTATION: &str = tug_edit::DEFAULT_REDEPLOY_ANNOTATION;

/// New content for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub content: Vec<u8>,
}

/// What a set of path updates did: the files whose bytes changed (in first-touched order) and one
/// human line per edit.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub changes: Vec<FileChange>,
    pub summaries: Vec<String>,
    /// What edits added where they changed nothing that existed (`tug_edit::Outcome::created`),
    /// one line each, prefixed with the spec field and the file.
    pub created: Vec<String>,
}

impl Applied {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// An edit that could not be made. Names the spec field, and the file (with line and column when
/// the edit engine knows them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ApplyError {
    pub field: String,
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ApplyError {
    ApplyError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Files as the edits see them: the revision's bytes, overlaid with what earlier edits wrote, so
/// several edits of one request compose on the same file.
struct Overlay<'a> {
    base: &'a dyn Files,
    original: BTreeMap<String, Option<Vec<u8>>>,
    current: BTreeMap<String, Vec<u8>>,
    order: Vec<String>,
    strict: bool,
    created: Vec<String>,
}

impl<'a> Overlay<'a> {
    fn new(base: &'a dyn Files) -> Self {
        Overlay {
            base,
            original: BTreeMap::new(),
            current: BTreeMap::new(),
            order: Vec::new(),
            strict: false,
            created: Vec::new(),
        }
    }

    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
        if let Some(c) = self.current.get(path) {
            return Ok(Some(c.clone()));
        }
        self.base.read(path)
    }

    fn write(&mut self, path: &str, content: Vec<u8>) -> Result<(), FilesError> {
        if !self.original.contains_key(path) {
            let before = self.base.read(path)?;
            self.original.insert(path.to_owned(), before);
            self.order.push(path.to_owned());
        }
        self.current.insert(path.to_owned(), content);
        Ok(())
    }

    fn into_changes(self) -> Vec<FileChange> {
        let mut out = Vec::new();
        for path in self.order {
            let Some(content) = self.current.get(&path) else {
                continue;
            };
            if self.original.get(&path).and_then(|o| o.as_ref()) != Some(content) {
                out.push(FileChange {
                    path,
                    content: content.clone(),
                });
            }
        }
        out
    }
}

/// Applies every edit of `paths` in order. `at` is the field path of the list in the request (for
/// error messages), e.g. `deploySpecs[0].updates[0].paths`.
pub fn apply_paths(
    paths: &[PathUpdate],
    at: &str,
    files: &dyn Files,
    ctx: &Context,
) -> Result<Applied, ApplyError> {
    apply_segments(
        &[PathsAt {
            field: at.to_owned(),
            paths: paths.to_vec(),
        }],
        files,
        ctx,
    )
}

/// Path updates taken from one place of a request; a request that names the same branch twice
/// contributes two segments to that branch's commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathsAt {
    /// Where the paths sit in the request, e.g. `deploySpecs[0].updates[1].paths`.
    pub field: String,
    pub paths: Vec<PathUpdate>,
}

/// Applies several segments in order over one overlay, so later edits see earlier ones.
pub fn apply_segments(
    segments: &[PathsAt],
    files: &dyn Files,
    ctx: &Context,
) -> Result<Applied, ApplyError> {
    let mut overlay = Overlay::new(files);
    overlay.strict = ctx.strict;
    let mut summaries = Vec::new();
    for (at, pi, p) in segments.iter().flat_map(|s| {
        s.paths
            .iter()
            .enumerate()
            .map(move |(pi, p)| (&s.field, pi, p))
    }) {
        let at = format!("{at}[{pi}]");
        let dir = normalize_repo_path(&p.path).map_err(|m| err(&format!("{at}.path"), m))?;
        if let Some(k) = &p.kustomize {
            for (i, img) in k.images.iter().enumerate() {
                let field = format!("{at}.kustomize.images[{i}]");
                let spec = image_spec(img, &field).map_err(|e| err(&e.field, e.message))?;
                let file = kustomization_file(overlay.base, &dir).map_err(|m| err(&field, m))?;
                summaries.extend(edit_file(
                    &mut overlay,
                    &field,
                    &file,
                    &Edit::KustomizeImage(spec),
                    false,
                )?);
            }
        }
        for (i, y) in p.yq.iter().enumerate() {
            let field = format!("{at}.yq[{i}]");
            let file =
                join_repo_path(&dir, &y.file).map_err(|m| err(&format!("{field}.file"), m))?;
            let value_type = match (&y.value_type, y.value.typed) {
                (Some(t), _) => t
                    .parse::<ValueType>()
                    .map_err(|_| err(&format!("{field}.type"), format!("unknown type {t:?}")))?,
                (None, Some(typed)) => typed.parse::<ValueType>().unwrap_or(ValueType::Auto),
                (None, None) => ValueType::Auto,
            };
            let edit = Edit::Set {
                path: y.key.clone(),
                value: y.value.text.clone(),
                value_type,
            };
            summaries.extend(edit_file(&mut overlay, &field, &file, &edit, false)?);
        }
        for (i, m) in p.images.iter().enumerate() {
            let field = format!("{at}.images[{i}]");
            let spec = image_spec(&m.image_ref(), &field).map_err(|e| err(&e.field, e.message))?;
            let edit = match &m.container {
                Some(container) => Edit::ContainerImage {
                    container: container.clone(),
                    image: spec,
                },
                None => Edit::ManifestImage(spec),
            };
            match &m.file {
                Some(f) => {
                    let file =
                        join_repo_path(&dir, f).map_err(|m| err(&format!("{field}.file"), m))?;
                    summaries.extend(edit_file(&mut overlay, &field, &file, &edit, false)?);
                }
                None => {
                    let candidates =
                        manifest_files(overlay.base, &dir).map_err(|m| err(&field, m))?;
                    let mut hit = false;
                    for file in candidates {
                        if let Some(summary) = edit_file(&mut overlay, &field, &file, &edit, true)?
                        {
                            hit = true;
                            summaries.push(summary);
                        }
                    }
                    if !hit {
                        return Err(err(
                            &field,
                            format!(
                                "no container image named {} in the manifests of {}",
                                m.name,
                                display_dir(&dir)
                            ),
                        ));
                    }
                }
            }
        }
        for (i, h) in p.helm.iter().enumerate() {
            let field = format!("{at}.helm[{i}]");
            let file = join_repo_path(&dir, h.file.as_deref().unwrap_or("values.yaml"))
                .map_err(|m| err(&format!("{field}.file"), m))?;
            let image = tug_edit::ImageSpec {
                name: h.name.clone().unwrap_or_default(),
                new_name: h.new_name.clone(),
                new_tag: h.new_tag.clone(),
                digest: h.digest.clone(),
            };
            let edit = Edit::HelmImage {
                path: h.key.clone().unwrap_or_else(|| ".image".to_owned()),
                image,
            };
            summaries.extend(edit_file(&mut overlay, &field, &file, &edit, false)?);
        }
        for (i, c) in p.chart.iter().enumerate() {
            let field = format!("{at}.chart[{i}]");
            let edit = Edit::ChartVersion {
                name: c.name.clone(),
                repository: c.repository.clone(),
                version: c.version.clone(),
            };
            let file = match &c.file {
                Some(f) => join_repo_path(&dir, f).map_err(|m| err(&format!("{field}.file"), m))?,
                None => {
                    chart_file(&OverlayFiles(&overlay), &dir, &edit).map_err(|m| err(&field, m))?
                }
            };
            summaries.extend(edit_file(&mut overlay, &field, &file, &edit, false)?);
        }
        if let Some(r) = &p.redeploy {
            let field = format!("{at}.redeploy");
            let edit = Edit::Redeploy {
                key: r
                    .annotation
                    .clone()
                    .unwrap_or_else(|| REDEPLOY_ANNOTATION.to_owned()),
                value: ctx.redeploy_value.clone(),
                workload: r.workload.clone(),
            };
            let targets = match &r.file {
                Some(f) => {
                    vec![join_repo_path(&dir, f).map_err(|m| err(&format!("{field}.file"), m))?]
                }
                None => match kustomization_file(overlay.base, &dir) {
                    Ok(k) => vec![k],
                    Err(_) => manifest_files(overlay.base, &dir).map_err(|m| err(&field, m))?,
                },
            };
            let single = targets.len() == 1;
            let mut hit = false;
            for file in targets {
                if let Some(summary) = edit_file(&mut overlay, &field, &file, &edit, !single)? {
                    hit = true;
                    summaries.push(summary);
                }
            }
            if !hit {
                return Err(err(
                    &field,
                    format!("no workload with a pod template in {}", display_dir(&dir)),
                ));
            }
        }
    }
    let created = std::mem::take(&mut overlay.created);
    Ok(Applied {
        changes: overlay.into_changes(),
        summaries,
        created,
    })
}

fn display_dir(dir: &str) -> &str {
    if dir.is_empty() {
        "the repository root"
    } else {
        dir
    }
}

/// Edits one file through the overlay. With `skip_unmatched`, a file in which the edit finds no
/// target is passed over (`Ok(None)`): the caller is trying every manifest of a directory.
fn edit_file(
    overlay: &mut Overlay<'_>,
    field: &str,
    file: &str,
    edit: &Edit,
    skip_unmatched: bool,
) -> Result<Option<String>, ApplyError> {
    let input = overlay
        .read(file)
        .map_err(|e| err(field, e.to_string()))?
        .ok_or_else(|| err(field, format!("{file}: no such file")))?;
    let outcome = match tug_edit::apply(file, &input, edit) {
        Ok(o) => o,
        Err(e) if skip_unmatched && matches!(e.kind, tug_edit::EditErrorKind::NoMatch(_)) => {
            return Ok(None);
        }
        Err(e) => return Err(err(field, e.to_string())),
    };
    let summary = format!("{file}: {}", outcome.summary);
    if overlay.strict && !outcome.created.is_empty() {
        return Err(err(
            field,
            format!(
                "{file}: refused (strict): the edit would only add {}; nothing that exists matches, which is usually a typo",
                outcome.created.join("; ")
            ),
        ));
    }
    overlay.created.extend(
        outcome
            .created
            .iter()
            .map(|c| format!("{field}: {file}: {c}")),
    );
    if outcome.changed {
        overlay
            .write(file, outcome.output)
            .map_err(|e| err(field, e.to_string()))?;
    }
    Ok(Some(summary))
}

/// An overlay as [`Files`]: later edits see what earlier ones wrote.
struct OverlayFiles<'o, 'a>(&'o Overlay<'a>);

impl Files for OverlayFiles<'_, '_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
        self.0.read(path)
    }
    fn list(&self, dir: &str) -> Result<Option<Vec<String>>, FilesError> {
        self.0.base.list(dir)
    }
}

/// The one file of `dir` that pins the chart of `edit` (an [`Edit::ChartVersion`]): among the
/// kustomization, `Chart.yaml` and the manifests (Flux HelmReleases) exactly one must, so a
/// bump never lands in a file the requester did not expect. The error says what each file has,
/// or which files pin the chart.
pub fn chart_file(files: &dyn Files, dir: &str, edit: &Edit) -> Result<String, String> {
    let name = match edit {
        Edit::ChartVersion { name, .. } => name.as_str(),
        _ => "",
    };
    let names = files
        .list(dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: no such directory", display_dir(dir)))?;
    let mut candidates: Vec<String> = Vec::new();
    for special in tug_edit::KUSTOMIZATION_FILE_NAMES
        .iter()
        .chain(&tug_edit::CHART_FILE_NAMES)
    {
        if names.iter().any(|n| n == special) {
            candidates.push(join_repo_path(dir, special)?);
        }
    }
    for manifest in manifest_files(files, dir)? {
        if !candidates.contains(&manifest) {
            candidates.push(manifest);
        }
    }
    let mut pinned = Vec::new();
    let mut misses = Vec::new();
    for file in candidates {
        let Some(input) = files.read(&file).map_err(|e| e.to_string())? else {
            continue;
        };
        match tug_edit::apply(&file, &input, edit) {
            Err(e) if matches!(e.kind, tug_edit::EditErrorKind::NoMatch(_)) => {
                misses.push(e.to_string());
            }
            // Not a chart file at all (a Deployment, a Service): not worth naming.
            Err(e) if matches!(e.kind, tug_edit::EditErrorKind::Unsupported(_)) => {}
            // The file pins the chart; any other refusal is reported when it is edited.
            _ => pinned.push(file),
        }
    }
    match pinned.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no chart {name} in {}: {}",
            display_dir(dir),
            if misses.is_empty() {
                "no kustomization with helmCharts, Chart.yaml or Flux HelmRelease there".to_owned()
            } else {
                misses.join("; ")
            }
        )),
        many => Err(format!(
            "chart {name} is pinned in {} files of {} ({}); name the one to change",
            many.len(),
            display_dir(dir),
            many.join(", ")
        )),
    }
}

/// The kustomization in `dir`, by the names kustomize itself looks for.
fn kustomization_file(files: &dyn Files, dir: &str) -> Result<String, String> {
    let names = files
        .list(dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: no such directory", display_dir(dir)))?;
    for candidate in tug_edit::KUSTOMIZATION_FILE_NAMES {
        if names.iter().any(|n| n == candidate) {
            return join_repo_path(dir, candidate);
        }
    }
    Err(format!(
        "{}: no kustomization file (looked for {})",
        display_dir(dir),
        tug_edit::KUSTOMIZATION_FILE_NAMES.join(", ")
    ))
}

/// YAML files directly in `dir` that are not kustomizations, in name order.
fn manifest_files(files: &dyn Files, dir: &str) -> Result<Vec<String>, String> {
    let mut names = files
        .list(dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: no such directory", display_dir(dir)))?;
    names.sort();
    names
        .into_iter()
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .filter(|n| !tug_edit::KUSTOMIZATION_FILE_NAMES.contains(&n.as_str()))
        .map(|n| join_repo_path(dir, &n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ImageSpec, KustomizeUpdate, YqUpdate};

    /// Files in memory: the pure core is tested without a disk or a repository.
    struct Mem(BTreeMap<String, Vec<u8>>);

    impl Files for Mem {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FilesError> {
            Ok(self.0.get(path).cloned())
        }
        fn list(&self, dir: &str) -> Result<Option<Vec<String>>, FilesError> {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            let names: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|rest| !rest.contains('/'))
                .map(str::to_owned)
                .collect();
            Ok((!names.is_empty()).then_some(names))
        }
    }

    fn ctx() -> Context {
        Context {
            redeploy_value: "2026-01-01T00:00:00Z".to_owned(),
            strict: false,
        }
    }

    #[test]
    fn an_edit_that_only_adds_is_reported_or_refused_when_strict() {
        let files = Mem(BTreeMap::from([(
            "apps/a/dev/kustomization.yaml".to_owned(),
            KUST.as_bytes().to_vec(),
        )]));
        let typo = |name: &str| PathsAt {
            field: "paths".into(),
            paths: vec![PathUpdate {
                path: "apps/a/dev".into(),
                kustomize: Some(KustomizeUpdate {
                    images: vec![ImageSpec {
                        name: name.into(),
                        new_tag: Some("1.0.1".into()),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }],
        };
        let applied = apply_segments(&[typo("registry.example.com/ap")], &files, &ctx()).unwrap();
        assert_eq!(applied.changes.len(), 1);
        assert_eq!(
            applied.created,
            [
                "paths[0].kustomize.images[0]: apps/a/dev/kustomization.yaml: images entry registry.example.com/ap (the kustomization has: registry.example.com/app)"
            ]
        );
        let strict = Context {
            strict: true,
            ..ctx()
        };
        let e = apply_segments(&[typo("registry.example.com/ap")], &files, &strict).unwrap_err();
        assert_eq!(e.field, "paths[0].kustomize.images[0]");
        assert!(
            e.message.contains("refused (strict): the edit would only add images entry registry.example.com/ap (the kustomization has: registry.example.com/app)"),
            "{e}"
        );
        // An update of an existing entry is no addition, strict or not.
        let applied = apply_segments(&[typo("registry.example.com/app")], &files, &strict).unwrap();
        assert!(applied.created.is_empty());
        assert_eq!(applied.changes.len(), 1);
    }

    const KUST: &str = "resources:\n  - deployment.yaml\nimages:\n  - name: registry.example.com/app\n    newTag: \"1.0.0\"  # release tag\n";

    #[test]
    fn kustomize_and_yq_compose_on_one_file() {
        let files = Mem(BTreeMap::from([
            (
                "apps/a/dev/kustomization.yaml".to_owned(),
                KUST.as_bytes().to_vec(),
            ),
            (
                "apps/a/dev/values.yaml".to_owned(),
                b"image:\n  tag: old # keep\n".to_vec(),
            ),
        ]));
        let paths = vec![PathUpdate {
            path: "apps/a/dev".into(),
            kustomize: Some(KustomizeUpdate {
                images: vec![ImageSpec {
                    name: "registry.example.com/app".into(),
                    new_tag: Some("1.2.3".into()),
                    ..Default::default()
                }],
            }),
            yq: vec![
                YqUpdate {
                    file: "values.yaml".into(),
                    key: ".image.tag".into(),
                    value: "1.2.2".into(),
                    value_type: None,
                },
                YqUpdate {
                    file: "values.yaml".into(),
                    key: ".image.tag".into(),
                    value: "1.2.3".into(),
                    value_type: None,
                },
            ],
            ..Default::default()
        }];
        let applied = apply_paths(&paths, "paths", &files, &ctx()).unwrap();
        assert_eq!(applied.changes.len(), 2);
        assert_eq!(applied.changes[0].path, "apps/a/dev/kustomization.yaml");
        assert_eq!(
            String::from_utf8(applied.changes[0].content.clone()).unwrap(),
            KUST.replace("1.0.0", "1.2.3")
        );
        assert_eq!(applied.changes[1].content, b"image:\n  tag: 1.2.3 # keep\n");
        assert_eq!(applied.summaries.len(), 3);
    }

    #[test]
    fn editing_back_to_the_original_is_no_change() {
        let files = Mem(BTreeMap::from([(
            "values.yaml".to_owned(),
            b"image:\n  tag: a\n".to_vec(),
        )]));
        let set = |v: &str| YqUpdate {
            file: "values.yaml".into(),
            key: ".image.tag".into(),
            value: v.into(),
            value_type: None,
        };
        let paths = vec![PathUpdate {
            path: ".".into(),
            yq: vec![set("b"), set("a")],
            ..Default::default()
        }];
        let applied = apply_paths(&paths, "paths", &files, &ctx()).unwrap();
        assert!(applied.is_empty());
    }

    #[test]
    fn missing_kustomization_names_directory_and_field() {
        let files = Mem(BTreeMap::from([(
            "apps/a/x.yaml".to_owned(),
            b"a: 1\n".to_vec(),
        )]));
        let paths = vec![PathUpdate {
            path: "apps/a".into(),
            kustomize: Some(KustomizeUpdate {
                images: vec![ImageSpec {
                    name: "app".into(),
                    new_tag: Some("1".into()),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }];
        let e = apply_paths(&paths, "paths", &files, &ctx()).unwrap_err();
        assert_eq!(e.field, "paths[0].kustomize.images[0]");
        assert!(e.message.contains("apps/a: no kustomization file"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let files = Mem(BTreeMap::new());
        let paths = vec![PathUpdate {
            path: "x".into(),
            yq: vec![YqUpdate {
                file: "values.yaml".into(),
                key: ".a".into(),
                value: "1".into(),
                value_type: None,
            }],
            ..Default::default()
        }];
        let e = apply_paths(&paths, "paths", &files, &ctx()).unwrap_err();
        assert_eq!(e.to_string(), "paths[0].yq[0]: x/values.yaml: no such file");
    }

    const HELM_RELEASE: &str = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: podinfo\nspec:\n  chart:\n    spec:\n      chart: podinfo\n      version: 6.5.0 # pinned\n";

    fn chart(file: Option<&str>, name: &str, version: &str) -> Vec<PathUpdate> {
        vec![PathUpdate {
            path: "apps/web".into(),
            chart: vec![crate::model::ChartUpdate {
                file: file.map(str::to_owned),
                name: name.into(),
                repository: None,
                version: version.into(),
            }],
            ..Default::default()
        }]
    }

    /// A Flux layout: the kustomization lists the HelmRelease as a resource and pins no chart
    /// itself, so the HelmRelease is the one file that pins it.
    #[test]
    fn a_chart_is_found_in_the_one_file_of_the_path_that_pins_it() {
        let files = Mem(BTreeMap::from([
            (
                "apps/web/kustomization.yaml".to_owned(),
                b"resources:\n  - helmrelease.yaml\n".to_vec(),
            ),
            (
                "apps/web/helmrelease.yaml".to_owned(),
                HELM_RELEASE.as_bytes().to_vec(),
            ),
            (
                "apps/web/service.yaml".to_owned(),
                b"apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n".to_vec(),
            ),
        ]));
        let applied =
            apply_paths(&chart(None, "podinfo", "6.10"), "paths", &files, &ctx()).unwrap();
        assert_eq!(applied.changes.len(), 1);
        assert_eq!(applied.changes[0].path, "apps/web/helmrelease.yaml");
        assert_eq!(
            String::from_utf8(applied.changes[0].content.clone()).unwrap(),
            HELM_RELEASE.replace("6.5.0", "\"6.10\"")
        );
        assert_eq!(
            applied.summaries,
            ["apps/web/helmrelease.yaml: set chart podinfo to version 6.10 in HelmRelease podinfo"]
        );

        let e = apply_paths(&chart(None, "podinf", "6.10"), "paths", &files, &ctx()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "paths[0].chart[0]: no chart podinf in apps/web: apps/web/kustomization.yaml: no chart podinf: the kustomization has no helmCharts entries; apps/web/helmrelease.yaml: no chart podinf in the HelmReleases of the file (found podinfo)"
        );
    }

    #[test]
    fn a_chart_pinned_in_two_files_needs_the_file_named() {
        let files = Mem(BTreeMap::from([
            (
                "apps/web/dev.yaml".to_owned(),
                HELM_RELEASE.as_bytes().to_vec(),
            ),
            (
                "apps/web/prod.yaml".to_owned(),
                HELM_RELEASE.as_bytes().to_vec(),
            ),
        ]));
        let e = apply_paths(&chart(None, "podinfo", "6.6.0"), "paths", &files, &ctx()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "paths[0].chart[0]: chart podinfo is pinned in 2 files of apps/web (apps/web/dev.yaml, apps/web/prod.yaml); name the one to change"
        );
        let applied = apply_paths(
            &chart(Some("prod.yaml"), "podinfo", "6.6.0"),
            "paths",
            &files,
            &ctx(),
        )
        .unwrap();
        assert_eq!(applied.changes.len(), 1);
        assert_eq!(applied.changes[0].path, "apps/web/prod.yaml");
    }
}
