//! `tug edit …`: one edit of one file on disk.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use tug_edit::{Edit, ImageSpec, ValueType};

use crate::cli::{EditCommand, EditCommon, OutputFormat, ValueTypeArg};
use crate::exit::Coded;
use crate::localfs::{Checkout, write_atomic};
use crate::output;

pub(crate) fn run(cmd: EditCommand) -> anyhow::Result<ExitCode> {
    let (file, edit, common) = match cmd {
        EditCommand::Image { path, spec, common } => {
            let image = ImageSpec::parse(&spec).with_context(|| format!("image spec {spec:?}"))?;
            let (file, is_kustomization) = resolve_image_target(&path)?;
            let edit = if is_kustomization {
                Edit::KustomizeImage(image)
            } else {
                Edit::ManifestImage(image)
            };
            (file, edit, common)
        }
        EditCommand::HelmImage {
            file,
            spec,
            key,
            common,
        } => {
            let image = ImageSpec::parse(&spec).with_context(|| format!("image spec {spec:?}"))?;
            (file, Edit::HelmImage { path: key, image }, common)
        }
        EditCommand::Set {
            file,
            key,
            value,
            value_type,
            common,
        } => {
            let value_type = match value_type {
                ValueTypeArg::Auto => ValueType::Auto,
                ValueTypeArg::String => ValueType::String,
                ValueTypeArg::Number => ValueType::Number,
                ValueTypeArg::Bool => ValueType::Bool,
                ValueTypeArg::Null => ValueType::Null,
            };
            let edit = Edit::Set {
                path: key,
                value,
                value_type,
            };
            (file, edit, common)
        }
        EditCommand::Chart {
            path,
            name,
            chart_version,
            repository,
            common,
        } => {
            let edit = Edit::ChartVersion {
                name,
                repository,
                version: chart_version,
            };
            (resolve_chart_target(&path, &edit)?, edit, common)
        }
        EditCommand::Redeploy {
            file,
            workload,
            annotation,
            value,
            common,
        } => {
            let value = value.unwrap_or_else(now_rfc3339);
            let edit = Edit::Redeploy {
                key: annotation,
                value,
                workload,
            };
            (file, edit, common)
        }
    };
    edit_one(&file, &edit, &common)
}

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map_or_else(|_| jiff::Timestamp::now().to_string(), |t| t.to_string())
}

/// A directory means its kustomization; a file named like a kustomization gets kustomize
/// semantics; any other file is a manifest.
fn resolve_image_target(path: &Path) -> anyhow::Result<(PathBuf, bool)> {
    if path.is_dir() {
        for name in tug_edit::KUSTOMIZATION_FILE_NAMES {
            let candidate = path.join(name);
            if candidate.is_file() {
                return Ok((candidate, true));
            }
        }
        bail!(
            "{}: no kustomization file (looked for {})",
            path.display(),
            tug_edit::KUSTOMIZATION_FILE_NAMES.join(", ")
        );
    }
    let is_kustomization = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| tug_edit::KUSTOMIZATION_FILE_NAMES.contains(&n));
    Ok((path.to_path_buf(), is_kustomization))
}

/// A directory means the one file in it that pins the chart, found as a deploy finds it.
fn resolve_chart_target(path: &Path, edit: &Edit) -> anyhow::Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    // The directory is seen from its parent, so messages name it as `web/…`, not as a root.
    let absolute = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    let (Some(parent), Some(dir)) = (
        absolute.parent(),
        absolute.file_name().and_then(|n| n.to_str()),
    ) else {
        bail!("{}: name the file that pins the chart", path.display());
    };
    let checkout =
        Checkout::new(parent).with_context(|| format!("{}: cannot read", path.display()))?;
    let file =
        tug_spec::chart_file(&checkout, dir, edit).map_err(|m| Coded::failed("edit_failed", m))?;
    let name = file.rsplit('/').next().unwrap_or(&file);
    Ok(path.join(name))
}

fn edit_one(file: &Path, edit: &Edit, common: &EditCommon) -> anyhow::Result<ExitCode> {
    let name = file.display().to_string();
    let input = std::fs::read(file).with_context(|| format!("{name}: cannot read"))?;
    let outcome = tug_edit::apply(&name, &input, edit)
        .map_err(|e| Coded::failed("edit_failed", e.to_string()))?;
    let diff = common
        .dry_run
        .then(|| output::unified_diff(&name, &input, &outcome.output));
    if outcome.changed && !common.dry_run {
        // Renaming over a symbolic link would replace the link with a copy; write its target.
        let target =
            std::fs::canonicalize(file).with_context(|| format!("{name}: cannot write"))?;
        write_atomic(&target, &outcome.output).with_context(|| format!("{name}: cannot write"))?;
    }
    match common.output {
        OutputFormat::Json => output::json(&serde_json::json!({
            "file": name,
            "changed": outcome.changed,
            "summary": outcome.summary,
            "dryRun": common.dry_run,
            "diff": diff,
        })),
        OutputFormat::Text => match diff {
            Some(d) if outcome.changed => output::line(d.trim_end_matches('\n')),
            _ if outcome.changed => output::line(&format!("{name}: {}", outcome.summary)),
            _ => output::line(&format!("{name}: already up to date")),
        },
    }
    Ok(ExitCode::SUCCESS)
}
