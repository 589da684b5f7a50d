//! `artifact.json`: what CI built, in the release manager's format, and the builder behind
//! `tug artifact init` and `tug artifact add build|push|test|scan`.
//!
//! Every level refuses unknown fields, as the release manager's reader does, so a typo in a CI
//! script fails the build that wrote it rather than the release that reads it. The one addition tug
//! makes to the format is the optional `digest` of build and push stages (and the `scan` and
//! `chart` stages); files without them are exactly the release manager's files.

use std::fmt;

use jiff::Timestamp;
use jiff::fmt::temporal::{Pieces, PiecesOffset};
use jiff::tz::Offset;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::json;
use crate::validate::path_component_problem;

/// What is wrong with an artifact; every variant names the JSON path of the value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// The document is not JSON or does not fit the artifact format.
    #[error("artifact is not valid at {path}: {message}")]
    Format { path: String, message: String },
    /// A field holds a value tug cannot use (unsafe name, malformed tag or digest …).
    #[error("artifact field {path} {problem}")]
    Invalid { path: String, problem: String },
    /// Writing the artifact as JSON failed.
    #[error("artifact could not be written as JSON: {0}")]
    Write(String),
}

impl ArtifactError {
    fn invalid(path: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// JSON path of the value at fault (`stages[1].data.tag`), or `the document`.
    #[must_use]
    pub fn path(&self) -> &str {
        match self {
            Self::Format { path, .. } | Self::Invalid { path, .. } => path,
            Self::Write(_) => "the document",
        }
    }
}

/// One artifact: a build of one service at one commit, with what CI did to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Artifact {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default)]
    pub application: Repository,
    #[serde(default)]
    pub ci: Ci,
    /// Team owning the service; written by some release manager pipelines.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub squad: String,
    /// CI plan the artifact was built with (the release manager's shuttle plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuttle: Option<Shuttle>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
}

/// The source commit an artifact was built from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Repository {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author_email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub committer_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub committer_email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
}

/// The CI plan section of release manager artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Shuttle {
    #[serde(default)]
    pub plan: Repository,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shuttle_version: String,
}

/// The CI job that built the artifact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ci {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<CiTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<CiTime>,
}

/// An instant as CI wrote it, keeping the UTC offset it was written with, so that a file read and
/// written again keeps its bytes (`2019-03-29T13:47:15.259380775+01:00` stays as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CiTime {
    pub timestamp: Timestamp,
    /// `None` for instants written in UTC with `Z`.
    pub offset: Option<Offset>,
}

impl CiTime {
    /// An instant written in UTC (`…Z`).
    #[must_use]
    pub fn utc(timestamp: Timestamp) -> Self {
        Self {
            timestamp,
            offset: None,
        }
    }
}

impl fmt::Display for CiTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            None => write!(f, "{}", self.timestamp),
            Some(offset) => write!(f, "{}", self.timestamp.display_with_offset(offset)),
        }
    }
}

impl std::str::FromStr for CiTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let timestamp: Timestamp = s
            .parse()
            .map_err(|e| format!("'{s}' is not an RFC 3339 timestamp: {e}"))?;
        let pieces =
            Pieces::parse(s).map_err(|e| format!("'{s}' is not an RFC 3339 timestamp: {e}"))?;
        let offset = match pieces.offset() {
            Some(PiecesOffset::Numeric(numeric)) => Some(numeric.offset()),
            _ => None,
        };
        Ok(Self { timestamp, offset })
    }
}

impl Serialize for CiTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CiTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// One CI stage recorded in the artifact. Its `id` follows from the kind of data it carries, so a
/// stage can never claim to be a push while holding test results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    pub data: StageData,
}

/// The data of a stage, typed by stage id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageData {
    /// `build`: the image was built.
    Build(ImageData),
    /// `push`: the image was pushed; its reference is the one released.
    Push(ImageData),
    /// `test`: test results.
    Test(TestData),
    /// `snyk-docker`: the release manager's container scan.
    SnykDocker(SnykDockerData),
    /// `snyk-code`: the release manager's source scan.
    SnykCode(SnykCodeData),
    /// `scan`: a vulnerability scan by any scanner (tug's own stage).
    Scan(ScanData),
    /// `chart`: the Helm chart version CI published (tug's own stage); what `chart` targets
    /// release.
    Chart(ChartData),
}

/// The kinds of stage, by their `id` in `artifact.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum StageKind {
    #[serde(rename = "build")]
    Build,
    #[serde(rename = "push")]
    Push,
    #[serde(rename = "test")]
    Test,
    #[serde(rename = "snyk-docker")]
    SnykDocker,
    #[serde(rename = "snyk-code")]
    SnykCode,
    #[serde(rename = "scan")]
    Scan,
    #[serde(rename = "chart")]
    Chart,
}

impl StageKind {
    /// The stage id written to `artifact.json`.
    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Push => "push",
            Self::Test => "test",
            Self::SnykDocker => "snyk-docker",
            Self::SnykCode => "snyk-code",
            Self::Scan => "scan",
            Self::Chart => "chart",
        }
    }

    /// The stage name the release manager's `artifact add` writes for this kind.
    #[must_use]
    pub fn default_name(self) -> &'static str {
        match self {
            Self::Build => "Build",
            Self::Push => "Push",
            Self::Test => "Test",
            Self::SnykDocker => "Security Scan - Docker",
            Self::SnykCode => "Security Scan - Code",
            Self::Scan => "Security Scan",
            Self::Chart => "Chart",
        }
    }
}

impl StageData {
    #[must_use]
    pub fn kind(&self) -> StageKind {
        match self {
            Self::Build(_) => StageKind::Build,
            Self::Push(_) => StageKind::Push,
            Self::Test(_) => StageKind::Test,
            Self::SnykDocker(_) => StageKind::SnykDocker,
            Self::SnykCode(_) => StageKind::SnykCode,
            Self::Scan(_) => StageKind::Scan,
            Self::Chart(_) => StageKind::Chart,
        }
    }

    /// Vulnerability counts, for the stages that carry them.
    #[must_use]
    pub fn vulnerabilities(&self) -> Option<Vulnerabilities> {
        match self {
            Self::SnykDocker(d) => Some(d.vulnerabilities),
            Self::SnykCode(d) => Some(d.vulnerabilities),
            Self::Scan(d) => Some(d.vulnerabilities),
            Self::Build(_) | Self::Push(_) | Self::Test(_) | Self::Chart(_) => None,
        }
    }
}

impl Stage {
    /// A stage with the name the release manager gives stages of this kind.
    #[must_use]
    pub fn new(data: StageData) -> Self {
        Self {
            name: data.kind().default_name().to_owned(),
            data,
        }
    }

    #[must_use]
    pub fn build(data: ImageData) -> Self {
        Self::new(StageData::Build(data))
    }

    #[must_use]
    pub fn push(data: ImageData) -> Self {
        Self::new(StageData::Push(data))
    }

    #[must_use]
    pub fn test(data: TestData) -> Self {
        Self::new(StageData::Test(data))
    }

    #[must_use]
    pub fn scan(data: ScanData) -> Self {
        Self::new(StageData::Scan(data))
    }

    #[must_use]
    pub fn chart(data: ChartData) -> Self {
        Self::new(StageData::Chart(data))
    }

    /// The stage id in `artifact.json` (`build`, `push`, `test`, `snyk-docker`, `snyk-code`, `scan`,
    /// `chart`).
    #[must_use]
    pub fn id(&self) -> &'static str {
        self.data.kind().id()
    }
}

/// Data of `build` and `push` stages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageData {
    /// Image repository without tag or digest, e.g. `quay.io/lunarway/example`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    /// Content digest (`sha256:…`), when CI knows it; tug's addition to the format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub docker_version: String,
}

/// Data of `test` stages, in the release manager's shape (`results` nested).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestData {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default)]
    pub results: TestResults,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestResults {
    #[serde(default)]
    pub passed: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub skipped: u64,
}

/// Vulnerability counts by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vulnerabilities {
    #[serde(default)]
    pub high: u64,
    #[serde(default)]
    pub medium: u64,
    #[serde(default)]
    pub low: u64,
}

impl std::ops::Add for Vulnerabilities {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            high: self.high.saturating_add(other.high),
            medium: self.medium.saturating_add(other.medium),
            low: self.low.saturating_add(other.low),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnykDockerData {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snyk_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_image: String,
    #[serde(default)]
    pub vulnerabilities: Vulnerabilities,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SnykCodeData {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub snyk_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub language: String,
    #[serde(default)]
    pub vulnerabilities: Vulnerabilities,
}

/// Data of tug's `scan` stage: any scanner's vulnerability counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScanData {
    /// Scanner that produced the counts (`trivy`, `grype`, `snyk` …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scanner: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default)]
    pub vulnerabilities: Vulnerabilities,
}

/// Data of tug's `chart` stage: the Helm chart CI published with this build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChartData {
    /// The chart's name, as a kustomization's `helmCharts`, a `Chart.yaml` dependency or a Flux
    /// `HelmRelease` names it.
    #[serde(default)]
    pub name: String,
    /// The published version.
    #[serde(default)]
    pub version: String,
}

impl Serialize for Stage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Stage", 3)?;
        s.serialize_field("id", self.id())?;
        if self.name.is_empty() {
            s.skip_field("name")?;
        } else {
            s.serialize_field("name", &self.name)?;
        }
        match &self.data {
            StageData::Build(d) | StageData::Push(d) => s.serialize_field("data", d)?,
            StageData::Test(d) => s.serialize_field("data", d)?,
            StageData::SnykDocker(d) => s.serialize_field("data", d)?,
            StageData::SnykCode(d) => s.serialize_field("data", d)?,
            StageData::Scan(d) => s.serialize_field("data", d)?,
            StageData::Chart(d) => s.serialize_field("data", d)?,
        }
        s.end()
    }
}

impl<'de> Deserialize<'de> for Stage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Stage", &["id", "name", "data"], StageVisitor)
    }
}

struct StageVisitor;

fn typed_data<'de, A: MapAccess<'de>>(kind: StageKind, map: &mut A) -> Result<StageData, A::Error> {
    Ok(match kind {
        StageKind::Build => StageData::Build(map.next_value()?),
        StageKind::Push => StageData::Push(map.next_value()?),
        StageKind::Test => StageData::Test(map.next_value()?),
        StageKind::SnykDocker => StageData::SnykDocker(map.next_value()?),
        StageKind::SnykCode => StageData::SnykCode(map.next_value()?),
        StageKind::Scan => StageData::Scan(map.next_value()?),
        StageKind::Chart => StageData::Chart(map.next_value()?),
    })
}

fn data_from_value(
    kind: StageKind,
    value: serde_json::Value,
) -> Result<StageData, json::JsonFault> {
    Ok(match kind {
        StageKind::Build => StageData::Build(json::from_value(value)?),
        StageKind::Push => StageData::Push(json::from_value(value)?),
        StageKind::Test => StageData::Test(json::from_value(value)?),
        StageKind::SnykDocker => StageData::SnykDocker(json::from_value(value)?),
        StageKind::SnykCode => StageData::SnykCode(json::from_value(value)?),
        StageKind::Scan => StageData::Scan(json::from_value(value)?),
        StageKind::Chart => StageData::Chart(json::from_value(value)?),
    })
}

impl<'de> Visitor<'de> for StageVisitor {
    type Value = Stage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a stage object with id, name and data")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Stage, A::Error> {
        let mut kind: Option<StageKind> = None;
        let mut name: Option<String> = None;
        let mut data: Option<StageData> = None;
        // Stages written with `data` before `id` are valid JSON; their data waits here until the id
        // says which shape to read it as.
        let mut early_data: Option<serde_json::Value> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" if kind.is_some() => return Err(de::Error::duplicate_field("id")),
                "id" => kind = Some(map.next_value()?),
                "name" if name.is_some() => return Err(de::Error::duplicate_field("name")),
                "name" => name = Some(map.next_value()?),
                "data" if data.is_some() || early_data.is_some() => {
                    return Err(de::Error::duplicate_field("data"));
                }
                "data" => match kind {
                    Some(kind) => data = Some(typed_data(kind, &mut map)?),
                    None => early_data = Some(map.next_value()?),
                },
                other => return Err(de::Error::unknown_field(other, &["id", "name", "data"])),
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("id"))?;
        let data = match (data, early_data) {
            (Some(data), _) => data,
            (None, Some(value)) => data_from_value(kind, value).map_err(|fault| {
                let fault = fault.under("data");
                de::Error::custom(format_args!("{}: {}", fault.path, fault.message))
            })?,
            (None, None) => return Err(de::Error::missing_field("data")),
        };
        Ok(Stage {
            name: name.unwrap_or_default(),
            data,
        })
    }
}

/// A reference to the image an artifact released: `image:tag`, or `image:tag@digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    pub image: String,
    pub tag: String,
    pub digest: Option<String>,
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.image, self.tag)?;
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The chart version an artifact releases to `chart` targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartReference {
    pub name: String,
    pub version: String,
}

impl fmt::Display for ChartReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// What `tug artifact init` knows at the start of a CI run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInit {
    pub id: String,
    pub service: String,
    /// Empty when the service's namespace is the environment's name.
    pub namespace: String,
    pub application: Repository,
    pub ci_job_url: String,
    pub ci_start: Timestamp,
}

impl Artifact {
    /// A new artifact with no stages yet, validated.
    ///
    /// # Errors
    /// When the id, service or namespace cannot be used as a path component.
    pub fn init(init: ArtifactInit) -> Result<Self, ArtifactError> {
        let artifact = Self {
            id: init.id,
            service: init.service,
            namespace: init.namespace,
            application: init.application,
            ci: Ci {
                job_url: init.ci_job_url,
                start: Some(CiTime::utc(init.ci_start)),
                end: None,
            },
            squad: String::new(),
            shuttle: None,
            stages: Vec::new(),
        };
        artifact.validate()?;
        Ok(artifact)
    }

    /// Adds a stage, replacing the stage with the same id where there is one (in its place, so the
    /// order of stages stays the order CI first ran them).
    ///
    /// # Errors
    /// When the stage's data is invalid (malformed tag or digest …); the artifact is unchanged.
    pub fn add_stage(&mut self, stage: Stage) -> Result<(), ArtifactError> {
        let index = self.stages.iter().position(|s| s.id() == stage.id());
        let path = format!("stages[{}]", index.unwrap_or(self.stages.len()));
        validate_stage(&path, &stage)?;
        match index {
            Some(i) => self.stages[i] = stage,
            None => self.stages.push(stage),
        }
        Ok(())
    }

    /// Records when the CI run ended.
    pub fn finish(&mut self, end: Timestamp) {
        self.ci.end = Some(CiTime::utc(end));
    }

    /// Reads and validates an `artifact.json`.
    ///
    /// # Errors
    /// [`ArtifactError::Format`] for JSON that does not fit (unknown fields included), with the JSON
    /// path of the value at fault; [`ArtifactError::Invalid`] for values tug cannot use.
    pub fn from_json(json: &str) -> Result<Self, ArtifactError> {
        let artifact: Self = json::from_str(json).map_err(|fault| ArtifactError::Format {
            path: fault.location().to_owned(),
            message: fault.message,
        })?;
        artifact.validate()?;
        Ok(artifact)
    }

    /// Writes the artifact as pretty JSON with a trailing newline, as the release manager does.
    ///
    /// # Errors
    /// Only when JSON serialisation itself fails.
    pub fn to_json(&self) -> Result<String, ArtifactError> {
        json::to_go_pretty(self).map_err(|e| ArtifactError::Write(e.to_string()))
    }

    /// Checks the values tug relies on: id, service and namespace are safe path components, stage
    /// ids are unique, images, tags and digests are well formed.
    ///
    /// # Errors
    /// The first problem found, naming its JSON path.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        for (path, value) in [("id", &self.id), ("service", &self.service)] {
            if let Some(problem) = path_component_problem(value) {
                return Err(ArtifactError::invalid(path, problem));
            }
        }
        if !self.namespace.is_empty()
            && let Some(problem) = path_component_problem(&self.namespace)
        {
            return Err(ArtifactError::invalid("namespace", problem));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            if let Some(first) = self.stages[..i].iter().position(|s| s.id() == stage.id()) {
                return Err(ArtifactError::invalid(
                    format!("stages[{i}].id"),
                    format!("repeats stage id '{}' of stages[{first}]", stage.id()),
                ));
            }
            validate_stage(&format!("stages[{i}]"), stage)?;
        }
        Ok(())
    }

    /// The stage with this id (`build`, `push`, …).
    #[must_use]
    pub fn stage(&self, id: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id() == id)
    }

    /// The image this artifact releases: the pushed image, else the built one.
    #[must_use]
    pub fn image_reference(&self) -> Option<ImageReference> {
        let pushed = self.stages.iter().find_map(|s| match &s.data {
            StageData::Push(d) => Some(d),
            _ => None,
        });
        let built = || {
            self.stages.iter().find_map(|s| match &s.data {
                StageData::Build(d) => Some(d),
                _ => None,
            })
        };
        let data = pushed.or_else(built)?;
        Some(ImageReference {
            image: data.image.clone(),
            tag: data.tag.clone(),
            digest: data.digest.clone(),
        })
    }

    /// The chart version this artifact releases: its `chart` stage.
    #[must_use]
    pub fn chart_reference(&self) -> Option<ChartReference> {
        self.stages.iter().find_map(|s| match &s.data {
            StageData::Chart(d) => Some(ChartReference {
                name: d.name.clone(),
                version: d.version.clone(),
            }),
            _ => None,
        })
    }

    /// The source branch: `application.branch`, or for older release manager artifacts that lack
    /// it, the branch part of an id of the form `<branch>-<sha>-<plan sha>`.
    #[must_use]
    pub fn branch(&self) -> Option<&str> {
        if !self.application.branch.is_empty() {
            return Some(&self.application.branch);
        }
        let mut parts = self.id.rsplitn(3, '-');
        let (_plan, _sha, branch) = (parts.next()?, parts.next()?, parts.next()?);
        (!branch.is_empty()).then_some(branch)
    }

    /// Vulnerabilities summed over all scan stages (as the release manager's status shows them).
    #[must_use]
    pub fn vulnerabilities(&self) -> Vulnerabilities {
        self.stages
            .iter()
            .filter_map(|s| s.data.vulnerabilities())
            .fold(Vulnerabilities::default(), |a, b| a + b)
    }
}

fn validate_stage(path: &str, stage: &Stage) -> Result<(), ArtifactError> {
    let data = match &stage.data {
        StageData::Build(d) | StageData::Push(d) => d,
        StageData::SnykDocker(d) => {
            if !d.tag.is_empty() {
                check(tag_problem(&d.tag), format!("{path}.data.tag"))?;
            }
            return Ok(());
        }
        StageData::Chart(d) => {
            check(chart_name_problem(&d.name), format!("{path}.data.name"))?;
            return check(
                chart_version_problem(&d.version),
                format!("{path}.data.version"),
            );
        }
        StageData::Test(_) | StageData::SnykCode(_) | StageData::Scan(_) => return Ok(()),
    };
    check(image_problem(&data.image), format!("{path}.data.image"))?;
    check(tag_problem(&data.tag), format!("{path}.data.tag"))?;
    if let Some(digest) = &data.digest {
        check(digest_problem(digest), format!("{path}.data.digest"))?;
    }
    Ok(())
}

fn check(problem: Option<String>, path: String) -> Result<(), ArtifactError> {
    match problem {
        Some(problem) => Err(ArtifactError::Invalid { path, problem }),
        None => Ok(()),
    }
}

/// A chart name: one word of printable characters.
fn chart_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty; the chart's name is required".to_owned());
    }
    name.chars()
        .any(|c| c.is_control() || c.is_whitespace())
        .then(|| format!("'{name}' holds a space or control character"))
}

/// A chart version: one line of printable text without surrounding spaces, at most 128 bytes
/// (the edit engine's own rule, so a registered artifact always releases).
fn chart_version_problem(version: &str) -> Option<String> {
    if version.is_empty() {
        return Some("is empty; a version is required".to_owned());
    }
    if version.len() > 128 {
        return Some("is longer than 128 characters".to_owned());
    }
    (version.chars().any(char::is_control) || version.trim() != version)
        .then(|| format!("{version:?} holds a control character or surrounding spaces"))
}

/// A Docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn tag_problem(tag: &str) -> Option<String> {
    if tag.is_empty() {
        return Some("is empty; a tag is required".to_owned());
    }
    if tag.len() > 128 {
        return Some(format!(
            "'{tag}' is {} characters long, at most 128 are allowed",
            tag.len()
        ));
    }
    if tag.starts_with(['.', '-']) {
        return Some(format!("'{tag}' starts with '{}'", &tag[..1]));
    }
    tag.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .map(|c| {
            format!("'{tag}' contains {c:?}; tags allow ASCII letters, digits, '_', '.' and '-'")
        })
}

/// An OCI digest: `algorithm:encoded`, with `sha256` and `sha512` checked for length and hex.
pub(crate) fn digest_problem(digest: &str) -> Option<String> {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Some(format!(
            "'{digest}' is not of the form algorithm:hex (e.g. sha256:…)"
        ));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !algorithm_ok {
        return Some(format!(
            "'{digest}' has a malformed algorithm '{algorithm}'"
        ));
    }
    let expected_len = match algorithm {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    if let Some(len) = expected_len {
        if encoded.len() != len
            || !encoded
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            return Some(format!(
                "'{digest}' must have {len} lowercase hex digits after '{algorithm}:'"
            ));
        }
    } else if encoded.is_empty()
        || !encoded
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '_' | '-'))
    {
        return Some(format!("'{digest}' has a malformed encoded part"));
    }
    None
}

/// An image repository without tag or digest: `[registry[:port]/]path/components`.
pub(crate) fn image_problem(image: &str) -> Option<String> {
    if image.is_empty() {
        return Some("is empty; an image is required".to_owned());
    }
    if image.contains('@') {
        return Some(format!(
            "'{image}' contains a digest; put it in the digest field"
        ));
    }
    let components: Vec<&str> = image.split('/').collect();
    let (registry, path) = match components.as_slice() {
        [first, rest @ ..]
            if !rest.is_empty() && (first.contains(['.', ':']) || *first == "localhost") =>
        {
            (Some(*first), rest)
        }
        all => (None, all),
    };
    if let Some(registry) = registry {
        let (host, port) = registry
            .split_once(':')
            .map_or((registry, None), |(h, p)| (h, Some(p)));
        let host_ok = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Some(format!("'{image}' has a malformed registry '{registry}'"));
        }
    }
    for component in path {
        if component.contains(':') {
            return Some(format!("'{image}' contains a tag; put it in the tag field"));
        }
        let ok = !component.is_empty()
            && component.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && component.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && component.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !ok {
            return Some(format!(
                "'{image}' has a malformed path component '{component}'; use lowercase letters, digits and separators"
            ));
        }
    }
    None
}

/// Where two `artifact.json` documents differ, as dotted field paths in document order
/// (`application.sha`, `stages`); arrays and values of different kinds count as one field. Empty
/// when they hold the same content, however it is written (key order, spacing). Registering an
/// artifact id again with content that differs is refused with these fields named.
pub fn differing_fields(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
        match (old, new) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                let keys = b.keys().chain(a.keys().filter(|k| !b.contains_key(*k)));
                for key in keys {
                    let at = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match (a.get(key), b.get(key)) {
                        (Some(x), Some(y)) => walk(&at, x, y, out),
                        _ => out.push(at),
                    }
                }
            }
            (a, b) if a != b => out.push(if path.is_empty() {
                "(the whole document)".to_owned()
            } else {
                path.to_owned()
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> Artifact {
        Artifact::init(ArtifactInit {
            id: "main-4f1c2d9a7b".to_owned(),
            service: "api".to_owned(),
            namespace: String::new(),
            application: Repository {
                branch: "main".to_owned(),
                sha: "4f1c2d9a7b".to_owned(),
                ..Repository::default()
            },
            ci_job_url: "https://ci.example.com/jobs/1".to_owned(),
            ci_start: "2024-05-02T08:00:01Z".parse().unwrap(),
        })
        .unwrap()
    }

    fn image(image: &str, tag: &str) -> ImageData {
        ImageData {
            image: image.to_owned(),
            tag: tag.to_owned(),
            ..ImageData::default()
        }
    }

    /// A `chart` stage names the chart version `chart` targets release; it survives a write and
    /// read, and a name or version a file could not hold is refused naming its path.
    #[test]
    fn a_chart_stage_names_the_chart_version_to_release() {
        let mut artifact = init();
        assert_eq!(artifact.chart_reference(), None);
        let chart = |name: &str, version: &str| {
            Stage::chart(ChartData {
                name: name.to_owned(),
                version: version.to_owned(),
            })
        };
        artifact.add_stage(chart("podinfo", "6.10")).unwrap();
        assert_eq!(
            artifact.chart_reference(),
            Some(ChartReference {
                name: "podinfo".to_owned(),
                version: "6.10".to_owned()
            })
        );
        let json = artifact.to_json().unwrap();
        assert!(
            json.contains(r#""id": "chart""#) && json.contains(r#""version": "6.10""#),
            "{json}"
        );
        assert_eq!(Artifact::from_json(&json).unwrap(), artifact);
        let err = artifact.add_stage(chart("podinfo", "6.10\nx")).unwrap_err();
        assert_eq!(err.path(), "stages[0].data.version");
        let err = artifact.add_stage(chart("", "1")).unwrap_err();
        assert_eq!(err.path(), "stages[0].data.name");
    }

    #[test]
    fn builder_adds_and_replaces_stages_in_place() {
        let mut artifact = init();
        artifact
            .add_stage(Stage::build(image("quay.io/acme/api", "main-1")))
            .unwrap();
        artifact
            .add_stage(Stage::test(TestData {
                url: String::new(),
                results: TestResults {
                    passed: 3,
                    failed: 0,
                    skipped: 1,
                },
            }))
            .unwrap();
        assert_eq!(
            artifact.image_reference().unwrap().to_string(),
            "quay.io/acme/api:main-1"
        );
        artifact
            .add_stage(Stage::build(image("quay.io/acme/api", "main-2")))
            .unwrap();
        let ids: Vec<_> = artifact.stages.iter().map(Stage::id).collect();
        assert_eq!(ids, ["build", "test"]);
        assert_eq!(artifact.image_reference().unwrap().tag, "main-2");

        let mut pushed = image("quay.io/acme/api", "main-2");
        pushed.digest = Some(format!("sha256:{}", "ab".repeat(32)));
        artifact.add_stage(Stage::push(pushed)).unwrap();
        assert_eq!(
            artifact.image_reference().unwrap().to_string(),
            format!("quay.io/acme/api:main-2@sha256:{}", "ab".repeat(32))
        );
        artifact.finish("2024-05-02T08:03:00Z".parse().unwrap());

        let written = artifact.to_json().unwrap();
        assert_eq!(Artifact::from_json(&written).unwrap(), artifact);
        assert!(
            written.contains("\"end\": \"2024-05-02T08:03:00Z\""),
            "{written}"
        );
    }

    #[test]
    fn a_rejected_stage_leaves_the_artifact_unchanged() {
        let mut artifact = init();
        artifact
            .add_stage(Stage::build(image("quay.io/acme/api", "v1")))
            .unwrap();
        let before = artifact.clone();
        let err = artifact
            .add_stage(Stage::build(image("quay.io/acme/api", "")))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "artifact field stages[0].data.tag is empty; a tag is required"
        );
        let err = artifact
            .add_stage(Stage::push(image("Quay.io/Acme/API", "v1")))
            .unwrap_err();
        assert_eq!(err.path(), "stages[1].data.image");
        assert_eq!(artifact, before);
    }

    #[test]
    fn init_refuses_unsafe_names() {
        let err = Artifact::init(ArtifactInit {
            id: "a/b".to_owned(),
            ..init_fields()
        })
        .unwrap_err();
        assert_eq!(err.path(), "id");
        let err = Artifact::init(ArtifactInit {
            namespace: "..".to_owned(),
            ..init_fields()
        })
        .unwrap_err();
        assert_eq!(err.path(), "namespace");
    }

    fn init_fields() -> ArtifactInit {
        ArtifactInit {
            id: "x-1-2".to_owned(),
            service: "api".to_owned(),
            namespace: String::new(),
            application: Repository::default(),
            ci_job_url: String::new(),
            ci_start: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn branch_falls_back_to_the_release_manager_id_form() {
        let mut artifact = init();
        artifact.application.branch = String::new();
        artifact.id = "feature_login-1c1508405e-67e9d69164".to_owned();
        assert_eq!(artifact.branch(), Some("feature_login"));
        artifact.id = "nodashes".to_owned();
        assert_eq!(artifact.branch(), None);
    }

    #[test]
    fn stages_with_data_before_id_still_read() {
        let json = r#"{"id": "a-b-c", "service": "x", "stages": [{"data": {"image": "quay.io/a/b", "tag": "1"}, "name": "Push", "id": "push"}]}"#;
        let artifact = Artifact::from_json(json).unwrap();
        assert_eq!(
            artifact.image_reference().unwrap().to_string(),
            "quay.io/a/b:1"
        );
        let json = r#"{"id": "a-b-c", "service": "x", "stages": [{"data": {"image": "quay.io/a/b", "tags": "1"}, "id": "push"}]}"#;
        let err = Artifact::from_json(json).unwrap_err();
        assert_eq!(err.path(), "stages[0]");
        assert!(
            err.to_string().contains("data.tags: unknown field `tags`"),
            "{err}"
        );
    }

    #[test]
    fn ci_times_keep_their_offset() {
        for text in [
            "2019-03-29T13:47:15.259380775+01:00",
            "0001-01-01T00:00:00Z",
            "2024-01-02T03:04:05.5-07:30",
        ] {
            let time: CiTime = text.parse().unwrap();
            assert_eq!(time.to_string(), text);
        }
    }

    #[test]
    fn digests_and_tags() {
        assert_eq!(digest_problem(&format!("sha512:{}", "0".repeat(128))), None);
        assert_eq!(
            digest_problem("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"),
            None
        );
        assert!(digest_problem(&format!("sha256:{}", "A".repeat(64))).is_some());
        assert!(digest_problem("sha256").is_some());
        assert!(tag_problem(&"a".repeat(129)).is_some());
        assert_eq!(tag_problem("v1.2.3_rc-1"), None);
        assert_eq!(image_problem("localhost:5000/a/b"), None);
        assert_eq!(image_problem("nginx"), None);
        assert!(image_problem("registry.example.com:port/a").is_some());
    }

    #[test]
    fn differing_fields_name_what_changed_and_ignore_how_it_is_written() {
        let old: serde_json::Value = serde_json::from_str(
            r#"{"id": "a-1", "application": {"sha": "1111", "branch": "main"}, "stages": [1]}"#,
        )
        .unwrap();
        let same: serde_json::Value = serde_json::from_str(
            r#"{"stages":[1],"application":{"branch":"main","sha":"1111"},"id":"a-1"}"#,
        )
        .unwrap();
        assert!(differing_fields(&old, &same).is_empty());
        let other: serde_json::Value = serde_json::from_str(
            r#"{"id": "a-1", "application": {"sha": "2222", "branch": "main"}, "stages": [1, 2], "ci": {}}"#,
        )
        .unwrap();
        assert_eq!(
            differing_fields(&old, &other),
            ["application.sha", "stages", "ci"]
        );
        assert_eq!(
            differing_fields(&old, &serde_json::json!([])),
            ["(the whole document)"]
        );
    }
}
