//! Files of a checkout on disk, confined to the checkout, and atomic writes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tug_spec::{Files, FilesError};

/// A checkout directory seen through [`Files`]: symbolic links, and paths that resolve outside the
/// root, are refused.
pub(crate) struct Checkout {
    root: PathBuf,
}

impl Checkout {
    pub(crate) fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Checkout {
            root: fs::canonicalize(root)?,
        })
    }

    /// The on-disk path of a repository path, after checking no component is a link.
    fn resolve(&self, rel: &str) -> Result<PathBuf, FilesError> {
        let mut path = self.root.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FilesError::Symlink {
                        path: rel.to_owned(),
                    });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
                Err(e) => {
                    return Err(FilesError::Io {
                        path: rel.to_owned(),
                        message: e.to_string(),
                    });
                }
            }
        }
        if !path.starts_with(&self.root) {
            return Err(FilesError::Escapes {
                path: rel.to_owned(),
            });
        }
        Ok(path)
    }

    pub(crate) fn write(&self, rel: &str, content: &[u8]) -> Result<(), FilesError> {
        let path = self.resolve(rel)?;
        write_atomic(&path, content).map_err(|e| FilesError::Io {
            path: rel.to_owned(),
            message: e.to_string(),
        })
    }
}

impl Files for Checkout {
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, FilesError> {
        let path = self.resolve(rel)?;
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FilesError::Io {
                path: rel.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    fn list(&self, rel: &str) -> Result<Option<Vec<String>>, FilesError> {
        let path = self.resolve(rel)?;
        let io = |e: std::io::Error| FilesError::Io {
            path: rel.to_owned(),
            message: e.to_string(),
        };
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            if entry.file_type().map_err(io)?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(Some(names))
    }
}

/// Replaces a file's content so that readers see the old or the new bytes, never a mix: write a
/// temporary file beside it with the same permissions, flush it, rename it over the original.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let perms = fs::metadata(path).map(|m| m.permissions()).ok();
    let mut tmp = tempfile::Builder::new()
        .prefix(".tug-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(content)?;
    tmp.as_file().sync_all()?;
    if let Some(perms) = perms {
        fs::set_permissions(tmp.path(), perms)?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
