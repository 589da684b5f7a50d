//! Branch refs of a mirror, read and written in-process with git's lock-file protocol (the
//! mirror uses the `files` ref backend; [`crate::Mirror::open`] refuses others).

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::GitError;
use crate::object::ObjectId;

pub(crate) fn read_ref(git_dir: &Path, name: &str) -> Result<Option<ObjectId>, GitError> {
    let corrupt = |reason: String| GitError::CorruptRef {
        path: git_dir.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let loose = git_dir.join(name);
    match fs::read_to_string(&loose) {
        Ok(text) => {
            let text = text.trim();
            return ObjectId::from_hex(text)
                .map(Some)
                .ok_or_else(|| corrupt(format!("{} does not hold an object id", loose.display())));
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
            ) => {}
        Err(e) => return Err(GitError::io("read ref", loose, e)),
    }
    let packed_path = git_dir.join("packed-refs");
    let packed = match fs::read_to_string(&packed_path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(GitError::io("read", packed_path, e)),
    };
    for line in packed.lines() {
        if line.starts_with('#') || line.starts_with('^') {
            continue;
        }
        if let Some((hex, ref_name)) = line.split_once(' ')
            && ref_name == name
        {
            return ObjectId::from_hex(hex).map(Some).ok_or_else(|| {
                corrupt(format!(
                    "packed-refs line {line:?} does not hold an object id"
                ))
            });
        }
    }
    Ok(None)
}

// git itself waits up to 100 ms for a ref lock held by another git process (a fetch).
const LOCK_WAIT: Duration = Duration::from_secs(1);

pub(crate) fn write_ref(git_dir: &Path, name: &str, oid: ObjectId) -> Result<(), GitError> {
    let path = git_dir.join(name);
    let lock_path = git_dir.join(format!("{name}.lock"));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| GitError::io("create ref directory", parent, e))?;
    }
    let deadline = Instant::now() + LOCK_WAIT;
    let mut lock = loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)
        {
            Ok(file) => break file,
            Err(e) if e.kind() == ErrorKind::AlreadyExists && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(GitError::RefRace {
                    path: git_dir.to_owned(),
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(GitError::io("lock ref", lock_path, e)),
        }
    };
    let written = lock
        .write_all(format!("{oid}\n").as_bytes())
        .and_then(|()| fs::rename(&lock_path, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&lock_path);
        return Err(GitError::io("update ref", path, e));
    }
    Ok(())
}
