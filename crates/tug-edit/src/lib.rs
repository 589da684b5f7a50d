//! Byte-exact edits of YAML manifests for GitOps repositories.
//!
//! [`apply`] is a pure function from a file's bytes to new bytes: no filesystem, network, clock
//! or randomness (a redeploy's annotation value comes from the caller). An edit changes the bytes
//! of the edited value and nothing else: comments (also a trailing comment on the edited line),
//! blank lines, key order, indentation, quoting style, anchors and aliases, flow collections,
//! other documents, `...` markers, CRLF line ends, a UTF-8 BOM and a missing final newline all
//! survive.
//!
//! Every edit is verified: the output is parsed again and compared with the input as semantic
//! trees (scalars by resolved value, aliases by name, never expanded); only the paths the edit
//! targets may differ, and they must hold exactly the intended values. Anything else is refused
//! with an [`EditError`] naming file, line and column, and the caller keeps the input untouched.
//!
//! Layout: one module per edit kind (`kustomize`, `manifest`, `set`, `helm`, `chart`,
//! `redeploy`) over a
//! shared document model (`doc`: parse into a node tree with byte offsets; `editor`: splices;
//! `verify`: the after-the-fact check).

mod chart;
mod doc;
mod editor;
mod error;
mod helm;
mod kustomize;
mod manifest;
mod path;
mod redeploy;
mod set;
mod spec;
mod value;
mod verify;

pub use chart::validate_chart_version;
pub use error::{EditError, EditErrorKind};
pub use redeploy::validate_annotation_key;
pub use spec::{ImageSpec, PRESERVE, SpecError};
pub use value::ValueType;

use doc::Tree;
use editor::Editor;

/// File names kustomize reads as a kustomization.
pub const KUSTOMIZATION_FILE_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// File names Helm reads as a chart's metadata, whose `dependencies` pin chart versions.
pub const CHART_FILE_NAMES: [&str; 2] = ["Chart.yaml", "Chart.yml"];

/// The annotation a redeploy bumps unless told otherwise.
pub const DEFAULT_REDEPLOY_ANNOTATION: &str = "tug.dev/redeployed-at";

/// One edit of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// `kustomize edit set image NAME[=NEWNAME][:TAG][@DIGEST]` on a kustomization's `images:`.
    ///
    /// The entry whose `name` is NAME is updated in place (appended when none matches, and
    /// `images:` is added at the end of the kustomization when absent). A new tag removes an
    /// existing `digest`; a new digest removes `newTag`; giving both sets both.
    ///
    /// Unlike kustomize, `NAME:TAG` keeps an existing `newName`: a kustomization that renames
    /// an image (say to a mirror) keeps doing so when CI bumps the tag. Use `NAME=NEWNAME:TAG`
    /// to change the name too.
    ///
    /// Tags YAML would read as another type (`1.20`, `1`, `true`, `1e3`) are quoted; an existing
    /// scalar keeps its quote style.
    KustomizeImage(ImageSpec),
    /// Sets the image of every container, init container and ephemeral container whose
    /// repository is exactly NAME: every `image` of an item of a `containers`,
    /// `initContainers` or `ephemeralContainers` list at any depth of any document (pod specs
    /// of every workload kind, items of `kind: List`, custom resources), as kustomize's image
    /// transformer finds them. NEWNAME replaces the repository, TAG the tag, DIGEST the
    /// digest; a new tag drops the old digest and a new digest drops the old tag, as kustomize
    /// renders them. Matching is textual: `nginx` does not match `docker.io/library/nginx`.
    /// No matching container is an error.
    ManifestImage(ImageSpec),
    /// [`Edit::ManifestImage`] narrowed to the containers named `container` (init and ephemeral
    /// containers included): only their images change, other containers of the same image
    /// repository stay as they are. No container of that name with a matching image is an
    /// error.
    ContainerImage {
        /// The container's `name`.
        container: String,
        /// The image change.
        image: ImageSpec,
    },
    /// Sets the scalar at a yq-style path (`.image.tag`, `.a[0].b`, `.a["x.y"]`,
    /// `.containers[name=app].image`).
    ///
    /// Under [`ValueType::Auto`] the value becomes a number, a bool, null or a string by the
    /// YAML 1.2 core schema (`Null` and `~` are null, `0x1A` and `0o17` integers), written in a
    /// spelling YAML 1.1 readers agree with (`null`, `15` for `0o17`, `12` for `012`), except
    /// that an existing string stays a string (`"1.19"` set to `1.20` is `"1.20"`) and a custom
    /// tag (`!cat meow`) is kept. A file with no document (empty, or only comments) gets its
    /// first mapping.
    /// Multi-line values become `|` block scalars. Missing mapping keys are created with the
    /// file's indentation (in a single-document file; in a multi-document file the value is set
    /// in every document where the path exists). Missing list items are an error. Setting the
    /// same value is a no-op.
    Set {
        /// The yq-style path.
        path: String,
        /// The value, as text.
        value: String,
        /// How the value is typed.
        value_type: ValueType,
    },
    /// Sets a Helm values image at `path` (usually `.image`), in either layout:
    ///
    /// * a mapping with `repository` (or, Argo CD's convention, `name` when there is no
    ///   `repository`), `tag` and optionally `registry` and `digest`: NAME must equal
    ///   `repository` (or `registry/repository`) when it exists; NEWNAME becomes `repository`
    ///   (or `name`; with a `registry` key, NEWNAME must start with `registry/`, which is
    ///   stripped); TAG becomes `tag`; DIGEST becomes `digest`. A new tag blanks a non-empty
    ///   `digest` (charts let a digest win over the tag); a new digest leaves `tag` alone.
    ///   Missing keys are created.
    /// * a string `repo:tag`: NAME must equal its repository; it is rewritten like a container
    ///   image.
    HelmImage {
        /// The path of the image node, e.g. `.image`.
        path: String,
        /// The image change.
        image: ImageSpec,
    },
    /// Sets the version of the Helm chart `name`, wherever the file pins it:
    ///
    /// * a kustomization: the `helmCharts` entry whose `name` is `name` (and whose `repo` is
    ///   `repository`, when given);
    /// * a `Chart.yaml` (by file name): the `dependencies` entry whose `name` is `name` (and
    ///   whose `repository` is `repository`, when given);
    /// * Flux `HelmRelease` objects, in any document of the file: the one whose
    ///   `spec.chart.spec.chart` is `name` (and whose `spec.chart.spec.sourceRef.name` is
    ///   `repository`, when given); its `spec.chart.spec.version` is set.
    ///
    /// Exactly one chart must match: none, or two (the same chart twice, from one repository or
    /// unnarrowed), is an error naming what the file has. A matching entry without `version`
    /// gets one, after its last key. The version is always written as a string: `1.10` or `2`
    /// are quoted (YAML would read numbers), an existing quoted version keeps its quotes.
    ChartVersion {
        /// The chart's name.
        name: String,
        /// The chart's repository as the file writes it, to choose between entries of one name.
        repository: Option<String>,
        /// The version to pin (`1.2.3`; a semver range where the file's reader takes one).
        version: String,
    },
    /// Bumps an annotation so the pods roll even when the image did not change.
    ///
    /// * Raw manifests: `spec.template.metadata.annotations[key]` (a CronJob's
    ///   `spec.jobTemplate.spec.template…`) of every workload, or only of the one whose
    ///   `metadata.name` is `workload`; Jobs (immutable template) and bare Pods are skipped.
    /// * A kustomization: `commonAnnotations[key]`, which kustomize copies into every pod
    ///   template (and, as a side effect, onto every resource's metadata).
    /// * Helm values (a file without `apiVersion`/`kind`): `podAnnotations[key]`.
    Redeploy {
        /// The annotation key, usually [`DEFAULT_REDEPLOY_ANNOTATION`].
        key: String,
        /// The annotation value, e.g. a timestamp chosen by the caller.
        value: String,
        /// Only this workload (by `metadata.name`); raw manifests only.
        workload: Option<String>,
    },
}

/// The result of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The new file contents (the input, byte for byte, when nothing changed).
    pub output: Vec<u8>,
    /// Whether the output differs from the input.
    pub changed: bool,
    /// What the edit did, for humans: `set image app to registry/app:1.2.3`.
    pub summary: String,
    /// When the edit changed nothing that was there and only added something new — a kustomize
    /// `images:` entry, a key at a yq path, Helm image keys — one line per addition naming it
    /// and what exists instead (`images entry "app" (the kustomization has: web, db)`). A
    /// request that only adds usually holds a typo; callers warn about it or refuse it. Empty
    /// when the edit updated something that existed (even if it added keys beside it) and for
    /// redeploys.
    pub created: Vec<String>,
}

const BOM: &str = "\u{feff}";

/// Applies `edit` to the contents of the file `file_name` (used in messages, and to recognise
/// kustomizations for [`Edit::Redeploy`]).
pub fn apply(file_name: &str, input: &[u8], edit: &Edit) -> Result<Outcome, EditError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        let valid = &input[..e.valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        EditError {
            file: file_name.to_owned(),
            line: Some(line),
            column: Some(column),
            kind: EditErrorKind::InvalidUtf8,
        }
    })?;
    let (bom, text) = match text.strip_prefix(BOM) {
        Some(rest) => (BOM, rest),
        None => ("", text),
    };
    let tree = Tree::parse(file_name, text)?;
    let mut ed = Editor::new(file_name, &tree);
    let summary = match edit {
        Edit::KustomizeImage(spec) => {
            spec.validate()
                .map_err(|e| EditError::new(file_name, e.into()))?;
            kustomize::apply(&mut ed, spec)?
        }
        Edit::ManifestImage(spec) => {
            spec.validate()
                .map_err(|e| EditError::new(file_name, e.into()))?;
            manifest::apply(&mut ed, spec, None)?
        }
        Edit::ContainerImage { container, image } => {
            image
                .validate()
                .map_err(|e| EditError::new(file_name, e.into()))?;
            manifest::apply(&mut ed, image, Some(container))?
        }
        Edit::Set {
            path,
            value,
            value_type,
        } => set::apply(&mut ed, path, value, *value_type)?,
        Edit::HelmImage { path, image } => {
            image
                .validate()
                .map_err(|e| EditError::new(file_name, e.into()))?;
            helm::apply(&mut ed, path, image)?
        }
        Edit::ChartVersion {
            name,
            repository,
            version,
        } => chart::apply(&mut ed, name, repository.as_deref(), version)?,
        Edit::Redeploy {
            key,
            value,
            workload,
        } => {
            let target = redeploy_target(file_name, &tree);
            redeploy::apply(&mut ed, target, key, value, workload.as_deref())?
        }
    };
    let created = std::mem::take(&mut ed.created);
    let (new_text, changes) = ed.finish()?;
    if new_text == text {
        return Ok(Outcome {
            output: input.to_vec(),
            changed: false,
            summary: format!("{summary} (already up to date)"),
            created: Vec::new(),
        });
    }
    let after = Tree::parse(file_name, &new_text).map_err(|e| EditError {
        kind: EditErrorKind::Verification(format!("the edited file does not parse: {}", e.kind)),
        ..e
    })?;
    verify::verify(file_name, &tree, &after, &changes)?;
    let mut output = Vec::with_capacity(bom.len() + new_text.len());
    output.extend_from_slice(bom.as_bytes());
    output.extend_from_slice(new_text.as_bytes());
    Ok(Outcome {
        output,
        changed: true,
        summary,
        created,
    })
}

/// Whether a file is a kustomization: by name ([`KUSTOMIZATION_FILE_NAMES`]) or by content
/// (`apiVersion: kustomize.config.k8s.io/…` with `kind: Kustomization`; a Flux `Kustomization`
/// object is a manifest, not a kustomization).
pub fn is_kustomization(file_name: &str, input: &[u8]) -> bool {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    if KUSTOMIZATION_FILE_NAMES.contains(&base) {
        return true;
    }
    let Ok(text) = std::str::from_utf8(input) else {
        return false;
    };
    let mut kind = false;
    let mut api_version = false;
    for line in text.lines() {
        let line = line.trim_end();
        kind |= line == "kind: Kustomization";
        api_version |= line.starts_with("apiVersion: kustomize.config.k8s.io/");
    }
    kind && api_version
}

fn redeploy_target(file_name: &str, tree: &Tree<'_>) -> redeploy::Target {
    if is_kustomization(file_name, tree.src.as_bytes()) {
        return redeploy::Target::Kustomization;
    }
    let manifest = tree.docs.iter().any(|&root| {
        tree.is_map(root)
            && tree.get(root, "apiVersion").is_some()
            && tree.get(root, "kind").is_some()
    });
    if manifest {
        redeploy::Target::Manifests
    } else {
        redeploy::Target::HelmValues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A splice that changes more than its target must be refused by the verifier.
    #[test]
    fn verifier_refuses_a_broken_splice() {
        let before = "a: 1\nb: 2\n";
        let broken = "a: 5\nb: 3\n";
        let b = Tree::parse("f.yaml", before).unwrap();
        let a = Tree::parse("f.yaml", broken).unwrap();
        let changes = vec![editor::Change {
            doc: 0,
            path: vec![doc::Seg::Key("a".into())],
            expect: editor::Expect::Node(editor::NewNode::Scalar(value::NewScalar {
                value: "5".into(),
                kind: value::ScalarKind::Int,
            })),
        }];
        let err = verify::verify("f.yaml", &b, &a, &changes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.yaml:2:4: edit refused by verification: .b changed"
        );
        // The same check accepts the honest splice.
        let honest = Tree::parse("f.yaml", "a: 5\nb: 2\n").unwrap();
        verify::verify("f.yaml", &b, &honest, &changes).unwrap();
    }

    #[test]
    fn verifier_refuses_a_wrong_target_value() {
        let b = Tree::parse("f.yaml", "tag: \"1.19\"\n").unwrap();
        let a = Tree::parse("f.yaml", "tag: 1.20\n").unwrap();
        let changes = vec![editor::Change {
            doc: 0,
            path: vec![doc::Seg::Key("tag".into())],
            expect: editor::Expect::Node(editor::NewNode::Scalar(value::NewScalar::string("1.20"))),
        }];
        let err = verify::verify("f.yaml", &b, &a, &changes).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not read back as the intended value"),
            "{err}"
        );
    }

    #[test]
    fn verifier_sees_aliases_by_name_and_anchors() {
        let b = Tree::parse("f.yaml", "a: &x 1\nb: *x\n").unwrap();
        let a = Tree::parse("f.yaml", "a: &y 1\nb: *y\n").unwrap();
        let err = verify::verify("f.yaml", &b, &a, &[]).unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
    }

    #[test]
    fn verifier_refuses_added_keys_and_documents() {
        let b = Tree::parse("f.yaml", "a: 1\n").unwrap();
        let a = Tree::parse("f.yaml", "a: 1\nc: 2\n").unwrap();
        assert!(verify::verify("f.yaml", &b, &a, &[]).is_err());
        let a = Tree::parse("f.yaml", "a: 1\n---\na: 1\n").unwrap();
        assert!(verify::verify("f.yaml", &b, &a, &[]).is_err());
    }
}
