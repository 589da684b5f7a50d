//! Dry runs: what a deploy request would change, computed on the current tip of each branch with
//! the same validation, authorisation and edits as a real request — and nothing stored or
//! pushed.

use std::sync::Arc;

use serde::Serialize;
use tug_git::{Change, FileAction, FileSource};

use crate::app::App;
use crate::error::ServiceError;
use tug_deploy::TaskChange;

use crate::intake::job_from_request;

/// The outcome of a dry run on one repository branch.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchPreview {
    pub repository: String,
    pub url: String,
    pub branch: String,
    /// The commit at the tip the edits were computed on; `None` when the branch is missing.
    pub tip: Option<String>,
    /// `would_commit`, `up_to_date` or `failed`.
    pub status: &'static str,
    /// The commit message that would be written.
    pub commit_message: Option<String>,
    pub files: Vec<FilePreview>,
    /// What the edits would only add (see `strict`).
    pub created: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilePreview {
    pub path: String,
    /// A unified diff of the file (`/dev/null` for an added or deleted file).
    pub diff: String,
}

/// The id a dry run's commit message carries instead of a job id: no job exists.
const DRY_RUN_REQUEST: &str = "dry-run";

impl App {
    /// Computes what `request` would change, branch by branch.
    pub async fn preview(
        self: &Arc<Self>,
        token: Option<&str>,
        request: tug_spec::DeployRequest,
    ) -> Result<Vec<BranchPreview>, ServiceError> {
        let principal = self.caller(token).await?;
        let job = job_from_request(
            &self.config,
            &principal,
            request,
            None,
            jiff::Timestamp::now(),
        )
        .map_err(ServiceError::from)?;
        let mut previews = Vec::with_capacity(job.tasks.len());
        for task in job.tasks {
            let change = serde_json::from_value::<TaskChange>(task.payload)
                .map_err(|e| ServiceError::invalid(e.to_string()))?;
            if let Some(preview) = self
                .preview_change(&task.branch.repository, &task.branch.branch, change)
                .await?
            {
                previews.push(preview);
            }
        }
        Ok(previews)
    }

    /// What `change` would commit on the current tip of `repository`'s `branch`; `None` for a
    /// repository that is not configured.
    pub async fn preview_change(
        &self,
        repository: &str,
        branch: &str,
        change: TaskChange,
    ) -> Result<Option<BranchPreview>, ServiceError> {
        let Some(repo) = self.config.repository(repository) else {
            return Ok(None);
        };
        let mut preview = BranchPreview {
            repository: repo.name.clone(),
            url: repo.url.clone(),
            branch: branch.to_owned(),
            tip: None,
            status: "failed",
            commit_message: None,
            files: Vec::new(),
            created: Vec::new(),
            error: None,
        };
        let change = change.for_request(DRY_RUN_REQUEST);
        let mirror = match self.writers.mirror(repo).await {
            Ok(m) => m,
            Err(e) => {
                preview.error = Some(e.to_string());
                return Ok(Some(preview));
            }
        };
        let branch = branch.to_owned();
        let computed = tokio::task::spawn_blocking(move || compute(&mirror, &branch, &change))
            .await
            .map_err(|e| ServiceError::internal(format!("dry run failed: {e}")))?;
        match computed {
            Ok(Computed {
                tip,
                message,
                files,
                created,
            }) => {
                preview.tip = Some(tip);
                preview.status = if files.is_empty() {
                    "up_to_date"
                } else {
                    "would_commit"
                };
                preview.commit_message = Some(message);
                preview.files = files;
                preview.created = created;
            }
            Err(e) => preview.error = Some(e),
        }
        Ok(Some(preview))
    }
}

struct Computed {
    tip: String,
    message: String,
    files: Vec<FilePreview>,
    created: Vec<String>,
}

fn compute(
    mirror: &tug_git::Mirror,
    branch: &str,
    change: &TaskChange,
) -> Result<Computed, String> {
    let tip = mirror
        .fetch_branch(branch)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("branch {branch} does not exist in {}", mirror.url()))?;
    let view = mirror.tree_at(tip).map_err(|e| e.to_string())?;
    let writes = change.apply(&view).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for write in &writes {
        let old = view.read_file(&write.path).map_err(|e| e.to_string())?;
        let new = match &write.action {
            FileAction::Put { content, .. } => Some(content.clone()),
            FileAction::Delete => None,
        };
        if old == new {
            continue;
        }
        files.push(FilePreview {
            path: write.path.clone(),
            diff: unified_diff(&write.path, old.as_deref(), new.as_deref()),
        });
    }
    let message = change.commit_meta().message().map_err(|e| e.to_string())?;
    Ok(Computed {
        tip: tip.to_hex(),
        message,
        files,
        created: change.created.lines(),
    })
}

fn unified_diff(path: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> String {
    let text =
        |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
    let (old_text, new_text) = (text(old), text(new));
    let from = if old.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".to_owned()
    };
    let to = if new.is_some() {
        format!("b/{path}")
    } else {
        "/dev/null".to_owned()
    };
    similar::TextDiff::from_lines(&old_text, &new_text)
        .unified_diff()
        .context_radius(3)
        .header(&from, &to)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_added_changed_and_deleted_files_as_git_does() {
        let changed = unified_diff("a.yaml", Some(b"x: 1\ny: 2\n"), Some(b"x: 1\ny: 3\n"));
        assert!(
            changed.starts_with("--- a/a.yaml\n+++ b/a.yaml\n"),
            "{changed}"
        );
        assert!(changed.contains("-y: 2\n+y: 3\n"), "{changed}");
        let added = unified_diff("n.yaml", None, Some(b"z: 1\n"));
        assert!(
            added.starts_with("--- /dev/null\n+++ b/n.yaml\n"),
            "{added}"
        );
        let deleted = unified_diff("d.yaml", Some(b"z: 1\n"), None);
        assert!(
            deleted.starts_with("--- a/d.yaml\n+++ /dev/null\n"),
            "{deleted}"
        );
    }
}
