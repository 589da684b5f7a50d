//! Chart version bumps in the three places GitOps repositories pin a Helm chart:
//!
//! * a kustomization's `helmCharts:` entries (`name`, `repo`, `version`),
//! * a Helm `Chart.yaml`'s `dependencies:` (`name`, `repository`, `version`),
//! * Flux `HelmRelease` objects (`spec.chart.spec.chart`, `…sourceRef.name`, `…version`), in any
//!   document of a multi-document file.
//!
//! Exactly one chart must match: two entries of the same chart (two releases of one chart in one
//! kustomization, say) are refused as ambiguous rather than both bumped, since a bump meant for
//! one release would otherwise move the other too; the repository tells them apart.

use crate::CHART_FILE_NAMES;
use crate::doc::{Kind, NodeId};
use crate::editor::{Editor, NewNode};
use crate::error::{EditError, EditErrorKind};
use crate::manifest::{kind_of, objects, read};
use crate::value::NewScalar;

/// Longest chart version accepted; a semver range is far shorter.
const MAX_VERSION_LEN: usize = 128;

/// Why a chart version cannot be written, or `Ok`. A version is one line of printable text
/// without surrounding spaces: an exact version (`1.2.3`) or, for Flux and Helm dependencies, a
/// semver range (`>=1.2.0 <2.0.0`).
pub fn validate_chart_version(version: &str) -> Result<(), &'static str> {
    if version.is_empty() {
        return Err("the version is empty");
    }
    if version.len() > MAX_VERSION_LEN {
        return Err("longer than 128 characters");
    }
    if version.chars().any(char::is_control) {
        return Err("it holds a line break or another control character");
    }
    if version.trim() != version {
        return Err("it starts or ends with a space");
    }
    Ok(())
}

/// Where the file pins its charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A kustomization's `helmCharts:`.
    Kustomization,
    /// A `Chart.yaml`'s `dependencies:`.
    ChartFile,
    /// Flux `HelmRelease` objects.
    HelmReleases,
}

impl Layout {
    /// The key that names the chart's repository, for messages.
    fn repository_key(self) -> &'static str {
        match self {
            Layout::Kustomization => "repo",
            Layout::ChartFile => "repository",
            Layout::HelmReleases => "spec.chart.spec.sourceRef.name",
        }
    }
}

/// One chart reference in the file: the mapping holding its `version`, its chart name and
/// repository as written, and a label for messages.
struct Candidate {
    map: NodeId,
    chart: String,
    repository: Option<String>,
    label: String,
}

/// Sets the version of the chart `name` (from `repository`, when given); returns the summary.
pub(crate) fn apply(
    ed: &mut Editor<'_, '_>,
    name: &str,
    repository: Option<&str>,
    version: &str,
) -> Result<String, EditError> {
    if name.trim().is_empty() {
        return Err(EditError::new(
            ed.file,
            EditErrorKind::Unsupported("the chart name is empty".into()),
        ));
    }
    validate_chart_version(version).map_err(|reason| {
        EditError::new(
            ed.file,
            EditErrorKind::ChartVersion {
                version: version.to_owned(),
                reason,
            },
        )
    })?;
    let layout = layout(ed)?;
    let all = candidates(ed, layout)?;
    let named: Vec<&Candidate> = all.iter().filter(|c| c.chart == name).collect();
    let matching: Vec<&Candidate> = named
        .iter()
        .copied()
        .filter(|c| repository.is_none_or(|r| c.repository.as_deref() == Some(r)))
        .collect();
    let target = match matching.as_slice() {
        [one] => *one,
        [] => return Err(no_match(ed, layout, name, repository, &all, &named)),
        many => {
            let found: Vec<&str> = many.iter().map(|c| c.label.as_str()).collect();
            let mut repositories: Vec<Option<&str>> =
                many.iter().map(|c| c.repository.as_deref()).collect();
            repositories.sort_unstable();
            repositories.dedup();
            let hint = if repositories.len() == many.len() {
                format!(
                    "; name the repository ({}) to choose one",
                    layout.repository_key()
                )
            } else {
                "; they have the same repository, so set the version of the one meant by its path (tug edit set)"
                    .to_owned()
            };
            return Err(ed.error(
                many[0].map,
                EditErrorKind::Ambiguous(format!(
                    "{} charts named {name} match: {}{hint}",
                    many.len(),
                    found.join(", ")
                )),
            ));
        }
    };
    let new = NewScalar::string(version);
    let t = ed.tree;
    ed.check_editable(target.map)?;
    match t.get(target.map, "version") {
        Some((_, node)) => {
            ed.set_scalar(node, &new)?;
        }
        None if t.has_merge(target.map) => {
            return Err(ed.error(
                target.map,
                EditErrorKind::ThroughMerge {
                    what: format!("the version of {}", target.label),
                },
            ));
        }
        // An entry without a version follows the newest chart (kustomize and Flux) or does not
        // resolve (Helm); either way pinning the requested version is what the bump asks for.
        None => ed.insert_entries(
            target.map,
            vec![("version".to_owned(), NewNode::Scalar(new.clone()))],
        )?,
    }
    Ok(format!(
        "set chart {name} to version {version}{}",
        match layout {
            Layout::HelmReleases => format!(" in {}", target.label),
            Layout::Kustomization | Layout::ChartFile => String::new(),
        }
    ))
}

fn no_match(
    ed: &Editor<'_, '_>,
    layout: Layout,
    name: &str,
    repository: Option<&str>,
    all: &[Candidate],
    named: &[&Candidate],
) -> EditError {
    let place = match layout {
        Layout::Kustomization => "the kustomization's helmCharts",
        Layout::ChartFile => "the chart's dependencies",
        Layout::HelmReleases => "the HelmReleases of the file",
    };
    let message = match (repository, named.is_empty()) {
        (Some(r), false) => {
            let repositories: Vec<&str> = named
                .iter()
                .map(|c| c.repository.as_deref().unwrap_or("none"))
                .collect();
            format!(
                "no chart {name} from {} {r} in {place} ({name} comes from: {})",
                layout.repository_key(),
                repositories.join(", ")
            )
        }
        _ if all.is_empty() => format!(
            "no chart {name}: {}",
            match layout {
                Layout::Kustomization => "the kustomization has no helmCharts entries",
                Layout::ChartFile => "the Chart.yaml has no dependencies",
                Layout::HelmReleases =>
                    "no HelmRelease of the file names a chart (spec.chart.spec.chart)",
            }
        ),
        _ => {
            let mut charts: Vec<&str> = all.iter().map(|c| c.chart.as_str()).collect();
            charts.dedup();
            format!("no chart {name} in {place} (found {})", charts.join(", "))
        }
    };
    EditError::new(ed.file, EditErrorKind::NoMatch(message))
}

/// Which of the three layouts the file has: by its name and content.
fn layout(ed: &Editor<'_, '_>) -> Result<Layout, EditError> {
    let t = ed.tree;
    let base = ed.file.rsplit(['/', '\\']).next().unwrap_or(ed.file);
    let root = t.docs.first().copied().filter(|&r| t.is_map(r));
    if crate::is_kustomization(ed.file, t.src.as_bytes())
        || root.is_some_and(|r| t.get(r, "helmCharts").is_some())
    {
        return Ok(Layout::Kustomization);
    }
    if CHART_FILE_NAMES.contains(&base) {
        return Ok(Layout::ChartFile);
    }
    let releases = t
        .docs
        .iter()
        .flat_map(|&d| objects(t, d))
        .any(|o| kind_of(t, o) == Some("HelmRelease"));
    if releases {
        return Ok(Layout::HelmReleases);
    }
    Err(EditError::new(
        ed.file,
        EditErrorKind::Unsupported(
            "no chart here: the file is not a kustomization with helmCharts, a Chart.yaml with dependencies, or a manifest with a Flux HelmRelease"
                .into(),
        ),
    ))
}

/// The first document of a `Chart.yaml`, which is a mapping.
fn chart_root(ed: &Editor<'_, '_>) -> Result<NodeId, EditError> {
    let t = ed.tree;
    match t.docs.first() {
        Some(&root) if t.is_map(root) => Ok(root),
        Some(&root) => Err(ed.error(
            root,
            EditErrorKind::Unsupported(format!(
                "a Chart.yaml is a mapping, this file holds a {}",
                t.node(root).kind_name()
            )),
        )),
        None => Err(EditError::new(
            ed.file,
            EditErrorKind::Unsupported("the Chart.yaml is empty".into()),
        )),
    }
}

/// Every chart reference of the file, in document order.
fn candidates(ed: &Editor<'_, '_>, layout: Layout) -> Result<Vec<Candidate>, EditError> {
    let t = ed.tree;
    let text = |map: NodeId, key: &str| read(t, map, key).and_then(|v| t.scalar(v));
    match layout {
        Layout::Kustomization | Layout::ChartFile => {
            let (list_key, repo_key) = match layout {
                Layout::Kustomization => ("helmCharts", "repo"),
                _ => ("dependencies", "repository"),
            };
            let root = match layout {
                Layout::Kustomization => crate::kustomize::kustomization_root(ed)?,
                _ => chart_root(ed)?,
            };
            let Some((_, list)) = t.get(root, list_key) else {
                return Ok(Vec::new());
            };
            let list = t.deref(list);
            if ed.is_empty_null(list) {
                return Ok(Vec::new());
            }
            if !matches!(t.node(list).kind, Kind::Seq { .. }) {
                return Err(ed.error(
                    list,
                    EditErrorKind::path_kind(
                        &format!(".{list_key}"),
                        &format!(".{list_key}"),
                        "sequence",
                        t.node(list).kind_name(),
                    ),
                ));
            }
            Ok(t.items(list)
                .iter()
                .map(|&item| t.deref(item))
                .filter(|&item| t.is_map(item))
                .filter_map(|item| {
                    let chart = text(item, "name")?.to_owned();
                    let repository = text(item, repo_key).map(str::to_owned);
                    let mut label = format!("{list_key} entry {chart}");
                    if let Some(release) = text(item, "releaseName") {
                        label.push_str(&format!(" (releaseName {release})"));
                    } else if let Some(r) = &repository {
                        label.push_str(&format!(" ({repo_key} {r})"));
                    }
                    Some(Candidate {
                        map: item,
                        chart,
                        repository,
                        label,
                    })
                })
                .collect())
        }
        Layout::HelmReleases => Ok(t
            .docs
            .iter()
            .flat_map(|&d| objects(t, d))
            .filter(|&o| kind_of(t, o) == Some("HelmRelease"))
            .filter_map(|release| {
                let spec = read(t, read(t, read(t, release, "spec")?, "chart")?, "spec")?;
                let chart = text(spec, "chart")?.to_owned();
                let repository = read(t, spec, "sourceRef")
                    .and_then(|s| text(s, "name"))
                    .map(str::to_owned);
                let metadata = read(t, release, "metadata");
                let object = metadata.and_then(|m| text(m, "name")).unwrap_or("?");
                let label = match metadata.and_then(|m| text(m, "namespace")) {
                    Some(ns) => format!("HelmRelease {ns}/{object}"),
                    None => format!("HelmRelease {object}"),
                };
                Some(Candidate {
                    map: spec,
                    chart,
                    repository,
                    label,
                })
            })
            .collect()),
    }
}
