//! The request format. Field names follow the Delivery server's JSON (camelCase, `commitSpec` with
//! capitalised keys) so that its users' `curl` bodies and spec files work unchanged; every struct
//! rejects unknown fields so a typo never silently drops an edit.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// A body of `POST /api/v1/deploy` (and of `tug deploy`).
/// Every camelCase key is also accepted in snake_case (`deploy_specs`, `new_tag`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    #[serde(rename = "commitSpec", alias = "commit_spec", default)]
    pub commit_spec: CommitSpec,
    #[serde(rename = "deploySpecs", alias = "deploy_specs", default)]
    pub deploy_specs: Vec<DeploySpec>,
    /// Where to report the outcome, in addition to the server's configured sinks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
    /// Same as the `Idempotency-Key` header; the header wins when both are given.
    #[serde(
        rename = "idempotencyKey",
        alias = "idempotency_key",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub idempotency_key: Option<String>,
    /// Commit even when the files already hold the desired state (a deliberate redeploy marker).
    #[serde(
        rename = "allowEmpty",
        alias = "allow_empty",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_empty: bool,
    /// Refuse the request when an edit would only add (a new kustomize `images:` entry, a new
    /// key) instead of changing what exists; absent: the server's `deploy.strict` default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Commit metadata. The capitalised names are the Delivery server's wire format.
/// `commitMessage` and `commit_message` spellings are accepted for each key too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitSpec {
    #[serde(
        rename = "CommitMessage",
        alias = "commitMessage",
        alias = "commit_message",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub message: Option<String>,
    #[serde(
        rename = "CommitUserName",
        alias = "commitUserName",
        alias = "commit_user_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_name: Option<String>,
    #[serde(
        rename = "CommitUserEmail",
        alias = "commitUserEmail",
        alias = "commit_user_email",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_email: Option<String>,
    /// The source project, branch or tag and commit that produced the artifact (the Delivery
    /// client's `DELIVERY_COMMIT_*`); recorded as trailers.
    #[serde(
        rename = "CommitProject",
        alias = "commitProject",
        alias = "commit_project",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub project: Option<String>,
    #[serde(
        rename = "CommitBranch",
        alias = "commitBranch",
        alias = "commit_branch",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub branch: Option<String>,
    #[serde(
        rename = "CommitTag",
        alias = "commitTag",
        alias = "commit_tag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tag: Option<String>,
    #[serde(
        rename = "CommitShortSHA",
        alias = "commitShortSha",
        alias = "commit_short_sha",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub short_sha: Option<String>,
}

/// What to say about this request in the notifications the server is configured to send. A request
/// cannot name its own webhook URLs: the server would otherwise call any address a client chose.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// Send no notification for this request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// An extra line shown with the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Extra facts shown with the notification (pipeline URL, ticket, …).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub context: std::collections::BTreeMap<String, String>,
}

/// One repository and what to change in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploySpec {
    /// The repository's URL (as configured on the server). Either `url` or `repository` names it.
    #[serde(default)]
    pub url: String,
    /// The repository's name in the server configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default)]
    pub updates: Vec<BranchUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchUpdate {
    pub branch: String,
    #[serde(default)]
    pub paths: Vec<PathUpdate>,
}

/// Edits under one directory of the repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathUpdate {
    /// Directory relative to the repository root (`""` or `.` for the root).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kustomize: Option<KustomizeUpdate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub yq: Vec<YqUpdate>,
    /// Container images in raw manifests (tug extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ManifestImageUpdate>,
    /// Images in Helm values files (tug extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub helm: Vec<HelmImageUpdate>,
    /// Helm chart versions: kustomize `helmCharts`, `Chart.yaml` dependencies, Flux
    /// `HelmRelease`s (tug extension).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chart: Vec<ChartUpdate>,
    /// Roll pods even when no tag changed (tug extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeploy: Option<RedeployUpdate>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KustomizeUpdate {
    #[serde(default)]
    pub images: Vec<ImageSpec>,
}

/// An image in kustomize's vocabulary: the image `name` to match, and what to set (the edit
/// engine's own type).
pub use tug_edit::ImageSpec;

/// Set a value at a YAML path, as the Delivery server's `yq` list does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct YqUpdate {
    pub file: String,
    pub key: String,
    /// Always carried as text; JSON numbers, booleans and null are accepted and keep their type.
    #[serde(deserialize_with = "scalar_as_text")]
    #[schema(schema_with = scalar_schema)]
    pub value: ScalarText,
    /// `auto` (default), `string`, `number`, `bool` or `null`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
}

/// A scalar value as text, remembering whether the request gave it as a non-string JSON/YAML value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ScalarText {
    pub text: String,
    /// `number`, `bool` or `null` when the request sent a typed value; `None` for strings.
    pub typed: Option<&'static str>,
}

impl From<ScalarText> for String {
    fn from(v: ScalarText) -> String {
        v.text
    }
}

impl From<&str> for ScalarText {
    fn from(s: &str) -> Self {
        ScalarText {
            text: s.to_owned(),
            typed: None,
        }
    }
}

/// What [`scalar_as_text`] accepts.
fn scalar_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(
            [Type::String, Type::Number, Type::Boolean, Type::Null]
                .into_iter()
                .collect::<utoipa::openapi::schema::SchemaType>(),
        )
        .build()
}

fn scalar_as_text<'de, D: Deserializer<'de>>(d: D) -> Result<ScalarText, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        Bool(bool),
        Int(i64),
        Float(f64),
        Text(String),
        Null(()),
    }
    Ok(match Any::deserialize(d)? {
        Any::Text(text) => ScalarText { text, typed: None },
        Any::Bool(b) => ScalarText {
            text: b.to_string(),
            typed: Some("bool"),
        },
        Any::Int(i) => ScalarText {
            text: i.to_string(),
            typed: Some("number"),
        },
        Any::Float(f) => ScalarText {
            text: f.to_string(),
            typed: Some("number"),
        },
        Any::Null(()) => ScalarText {
            text: "null".to_owned(),
            typed: Some("null"),
        },
    })
}

/// Container images in raw manifests under the path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestImageUpdate {
    /// One file; when absent, every `.yaml`/`.yml` file directly in the path is considered and at
    /// least one must hold a matching container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub name: String,
    /// Only the containers with this `name` (tug).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(
        rename = "newName",
        alias = "new_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub new_name: Option<String>,
    #[serde(
        rename = "newTag",
        alias = "new_tag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub new_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// An image in a Helm values file: `image: {repository, tag}` or `image: "repo:tag"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HelmImageUpdate {
    /// Defaults to `values.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Path of the image node; defaults to `.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The image repository the values file holds now; it must match (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        rename = "newName",
        alias = "new_name",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub new_name: Option<String>,
    #[serde(
        rename = "newTag",
        alias = "new_tag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub new_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The version of a Helm chart, wherever the path pins it: a kustomization's `helmCharts` entry,
/// a `Chart.yaml` dependency or a Flux `HelmRelease`'s `spec.chart.spec.version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartUpdate {
    /// One file; when absent, the path's kustomization, `Chart.yaml` and manifests are
    /// searched, and exactly one of them must pin the chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The chart's name (`helmCharts[].name`, `dependencies[].name`,
    /// `spec.chart.spec.chart`).
    pub name: String,
    /// Only the entry from this repository, as the file writes it (`helmCharts[].repo`,
    /// `dependencies[].repository`, a HelmRelease's `spec.chart.spec.sourceRef.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The version to pin, a string: a JSON number is refused (`1.10` arrives as 1.1), while a
    /// YAML spec file's plain `1.10` is taken as written.
    pub version: String,
}

/// Bump a pod-template annotation so the rollout happens even when the image did not change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeployUpdate {
    /// One file; when absent, the path's kustomization if it has one, else every manifest in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Only the workload with this `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Annotation key; defaults to [`crate::REDEPLOY_ANNOTATION`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

impl ManifestImageUpdate {
    pub fn image_ref(&self) -> ImageSpec {
        ImageSpec {
            name: self.name.clone(),
            new_name: self.new_name.clone(),
            new_tag: self.new_tag.clone(),
            digest: self.digest.clone(),
        }
    }
}

impl PathUpdate {
    /// Number of edits this path asks for.
    pub fn edit_count(&self) -> usize {
        self.kustomize.as_ref().map_or(0, |k| k.images.len())
            + self.yq.len()
            + self.images.len()
            + self.helm.len()
            + self.chart.len()
            + usize::from(self.redeploy.is_some())
    }
}
