//! A work-tree clone driven through the git CLI, as a script-based deploy pipeline runs it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tug_testkit::{Scratch, git_command};

pub(crate) struct WorkTree {
    dir: PathBuf,
    _scratch: Scratch,
}

impl WorkTree {
    /// Clones `url` (outside any timing); returns the clone and how long cloning took.
    pub(crate) fn clone(url: &str) -> Result<(Self, Duration)> {
        let scratch = Scratch::new().context("create a directory for the work-tree clone")?;
        let dir = scratch.join("work");
        let started = Instant::now();
        let mut cmd = git_command();
        cmd.args(["clone", "--quiet", url]).arg(&dir);
        run(cmd, &format!("git clone {url}"))?;
        Ok((
            Self {
                dir,
                _scratch: scratch,
            },
            started.elapsed(),
        ))
    }

    /// A copy of this clone (`cp -a`), much faster than cloning a large remote again.
    pub(crate) fn copy(&self) -> Result<Self> {
        let scratch = Scratch::new().context("create a directory for a work-tree copy")?;
        let dir = scratch.join("work");
        let mut cmd = Command::new("cp");
        cmd.arg("-a").arg(&self.dir).arg(&dir);
        run(cmd, &format!("cp -a {}", self.dir.display()))?;
        Ok(Self {
            dir,
            _scratch: scratch,
        })
    }

    /// Runs git in the clone and returns how long it took.
    pub(crate) fn git(&self, args: &[&str]) -> Result<Duration> {
        let mut cmd = git_command();
        cmd.current_dir(&self.dir).args(args);
        let started = Instant::now();
        run(cmd, &format!("git {}", args.join(" ")))?;
        Ok(started.elapsed())
    }

    /// Sets the tag of `image` in the kustomization `file` with `sed -i`, the way a shell
    /// pipeline edits it: the `newTag:` on the line after the image's `- name:` line, keeping
    /// the line's quotes and comment.
    pub(crate) fn sed_image_tag(&self, file: &str, image: &str, tag: &str) -> Result<Duration> {
        let mut cmd = Command::new("sed");
        cmd.current_dir(&self.dir)
            .args(["-i", "-E", &sed_script(image, tag), file]);
        let started = Instant::now();
        run(cmd, &format!("sed on {file}"))?;
        Ok(started.elapsed())
    }
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let output = cmd.output().with_context(|| format!("start {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn sed_script(image: &str, tag: &str) -> String {
    let mut pattern = String::new();
    for c in image.chars() {
        if ".[]*^$+?(){}|\\%".contains(c) {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    format!(r#"\%^  - name: {pattern}$%{{n;s/newTag: "[^"]*"/newTag: "{tag}"/}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sed_edits_only_the_named_image_and_keeps_the_comment() {
        let scratch = Scratch::new().unwrap();
        let file = scratch.join("kustomization.yaml");
        let before = "images:\n  - name: registry.example.com/search/svc-0007\n    newTag: \"1.2.3\"  # release tag\n  - name: registry.example.com/platform/fluent-bit\n    newTag: \"3.0.7\"\n";
        std::fs::write(&file, before).unwrap();
        let tree = WorkTree {
            dir: scratch.path().to_owned(),
            _scratch: Scratch::new().unwrap(),
        };
        tree.sed_image_tag(
            "kustomization.yaml",
            "registry.example.com/search/svc-0007",
            "2.0.1",
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            before.replace("\"1.2.3\"", "\"2.0.1\"")
        );
        // A dot in the name is literal: this image does not exist, nothing changes.
        tree.sed_image_tag(
            "kustomization.yaml",
            "registry.example.com/search/svc.0007",
            "9.9.9",
        )
        .unwrap();
        assert!(!std::fs::read_to_string(&file).unwrap().contains("9.9.9"));
    }
}
