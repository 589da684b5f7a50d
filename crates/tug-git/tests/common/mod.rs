//! Changes and options shared by the landing tests.

#![allow(dead_code)]

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use tug_git::{
    ChangeError, CommitMeta, FileSource, FileWrite, Identity, LandOptions, ManualClock, Mirror,
    MirrorOptions, Remote,
};

pub(crate) const KUSTOMIZATION: &str = "apps/checkout/prod/kustomization.yaml";

pub(crate) const MANIFEST: &str = "\
# checkout in prod
images:
  - name: registry.example.com/checkout
    newTag: \"1.0.0\"  # release tag
replicas: 2
";

pub(crate) fn bot() -> Identity {
    Identity::new("tug", "tug@example.invalid")
}

pub(crate) fn author() -> Identity {
    Identity::new("CI Pipeline", "ci@example.invalid")
}

pub(crate) fn options() -> LandOptions {
    let mut opts = LandOptions::new(bot());
    opts.clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_750_000_000).unwrap(),
    ));
    opts
}

/// Sets the value of the first line starting with `key:` in a file, keeping what follows a
/// `#` comment on that line; fails when the file or the key is missing.
pub(crate) struct SetLine {
    pub path: String,
    pub key: String,
    pub value: String,
    pub request: String,
}

impl SetLine {
    pub(crate) fn new(path: &str, key: &str, value: &str, request: &str) -> Self {
        Self {
            path: path.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            request: request.to_owned(),
        }
    }
}

pub(crate) fn set_line(content: &str, key: &str, value: &str) -> Option<String> {
    let mut found = false;
    let lines: Vec<String> = content
        .split_inclusive('\n')
        .map(|line| {
            let trimmed = line.trim_start();
            if !found && trimmed.starts_with(&format!("{key}:")) {
                found = true;
                let indent = &line[..line.len() - trimmed.len()];
                let comment = trimmed
                    .find("  #")
                    .map(|i| &trimmed[i..])
                    .unwrap_or("")
                    .trim_end_matches('\n');
                let newline = if line.ends_with('\n') { "\n" } else { "" };
                format!("{indent}{key}: {value}{comment}{newline}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    found.then(|| lines.concat())
}

impl tug_git::Change for SetLine {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError> {
        let content = files
            .read_file(&self.path)?
            .ok_or_else(|| ChangeError::edit(&self.path, "no such file"))?;
        let content =
            String::from_utf8(content).map_err(|_| ChangeError::edit(&self.path, "not UTF-8"))?;
        let updated = set_line(&content, &self.key, &self.value)
            .ok_or_else(|| ChangeError::edit(&self.path, format!("no `{}:` line", self.key)))?;
        Ok(vec![FileWrite::put(self.path.clone(), updated)])
    }

    fn commit_meta(&self) -> CommitMeta {
        CommitMeta::new(author(), format!("set {} to {}", self.key, self.value))
            .with_body(format!("in {}", self.path))
            .with_trailer("Tug-Request", self.request.clone())
    }
}

/// A change that runs `before_first_apply` the first time it is applied: a human pushing between
/// our read of the tip and our push.
pub(crate) struct Interleaved<F: Fn()> {
    pub inner: SetLine,
    pub before_first_apply: F,
    pub applied: Cell<u32>,
}

impl<F: Fn()> tug_git::Change for Interleaved<F> {
    fn apply(&self, files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError> {
        self.applied.set(self.applied.get() + 1);
        if self.applied.get() == 1 {
            (self.before_first_apply)();
        }
        self.inner.apply(files)
    }

    fn commit_meta(&self) -> CommitMeta {
        self.inner.commit_meta()
    }
}

/// Writes fixed content to fixed paths.
pub(crate) struct Put(pub Vec<FileWrite>, pub &'static str);

impl tug_git::Change for Put {
    fn apply(&self, _files: &dyn FileSource) -> Result<Vec<FileWrite>, ChangeError> {
        Ok(self.0.clone())
    }

    fn commit_meta(&self) -> CommitMeta {
        CommitMeta::new(author(), self.1)
    }
}

/// Records the argv of every git process a mirror starts.
#[derive(Clone, Default)]
pub(crate) struct ArgvLog(pub Arc<Mutex<Vec<Vec<String>>>>);

impl ArgvLog {
    pub(crate) fn options(&self) -> MirrorOptions {
        let log = self.0.clone();
        MirrorOptions {
            observer: Some(Arc::new(move |argv| {
                let argv = argv
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                log.lock().unwrap().push(argv);
            })),
            ..MirrorOptions::default()
        }
    }

    pub(crate) fn commands(&self) -> Vec<Vec<String>> {
        self.0.lock().unwrap().clone()
    }

    /// How many git processes ran the subcommand `name`.
    pub(crate) fn count(&self, name: &str) -> usize {
        self.commands()
            .iter()
            .filter(|argv| subcommand(argv) == Some(name))
            .count()
    }
}

/// The git subcommand of an argv built by tug-git (after the `-c` options and `--git-dir`).
pub(crate) fn subcommand(argv: &[String]) -> Option<&str> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--git-dir" => {
                args.next();
            }
            other => return Some(other),
        }
    }
    None
}

pub(crate) fn open(data_dir: &std::path::Path, url: &str, options: MirrorOptions) -> Mirror {
    Mirror::open(data_dir, Remote::new(url, tug_git::Auth::None), options).unwrap()
}

/// The `.pack` files of a repository's object directory, sorted.
pub(crate) fn pack_files(git_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut packs: Vec<_> = std::fs::read_dir(git_dir.join("objects/pack"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "pack"))
        .collect();
    packs.sort();
    packs
}

/// The packs of `git_dir` that are not in `before`.
pub(crate) fn new_packs(
    git_dir: &std::path::Path,
    before: &[std::path::PathBuf],
) -> Vec<std::path::PathBuf> {
    pack_files(git_dir)
        .into_iter()
        .filter(|pack| !before.contains(pack))
        .collect()
}

/// Loose objects in a repository's object directory.
pub(crate) fn count_loose(git_dir: &std::path::Path) -> usize {
    std::fs::read_dir(git_dir.join("objects"))
        .unwrap()
        .flatten()
        .filter(|dir| dir.file_name().len() == 2)
        .map(|dir| std::fs::read_dir(dir.path()).unwrap().count())
        .sum()
}

/// One object of a pack as `git verify-pack -v` lists it.
#[derive(Debug)]
pub(crate) struct PackedObject {
    pub id: String,
    pub kind: String,
    /// Deltas between this object and a whole one; 0 when stored whole.
    pub depth: usize,
    pub base: Option<String>,
}

/// Runs `git verify-pack -v` (which fails on a malformed pack or index) and lists the objects.
pub(crate) fn verify_pack(pack: &std::path::Path) -> Vec<PackedObject> {
    let out = tug_testkit::run_git(None, &["verify-pack", "-v", pack.to_str().unwrap()]).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let is_object = fields
                .first()
                .is_some_and(|id| id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()));
            match fields.len() {
                5 if is_object => Some(PackedObject {
                    id: fields[0].to_owned(),
                    kind: fields[1].to_owned(),
                    depth: 0,
                    base: None,
                }),
                7 if is_object => Some(PackedObject {
                    id: fields[0].to_owned(),
                    kind: fields[1].to_owned(),
                    depth: fields[5].parse().unwrap(),
                    base: Some(fields[6].to_owned()),
                }),
                _ => None,
            }
        })
        .collect()
}
