//! Re-applying a batch after a lost push race without redoing every edit.
//!
//! A [`Change`](crate::Change) is a pure function of the files it reads. When a push loses its
//! race, the batch is rebuilt on the new tip, and most of the time the other writer touched
//! files none of the batch's changes read (a person's unrelated commit). Recording what each
//! change read, and replaying those reads on the new tip, tells whether the change's output is
//! still what it would compute: if every read answers the same, its writes are reused instead of
//! running the edit engine again. This keeps the time between learning the tip and pushing —
//! the window in which another push makes ours lose — short on a busy branch.

use std::cell::RefCell;

use crate::error::ChangeError;
use crate::object::EntryKind;
use crate::tree::{DirEntry, FileSource, FileWrite};

/// One question a change asked of the files, with the answer it got.
#[derive(Debug)]
enum Read {
    File(String, Option<Vec<u8>>),
    Kind(String, Option<EntryKind>),
    Dir(String, Vec<DirEntry>),
}

/// What one change read and wrote the last time it was applied.
#[derive(Debug)]
pub(crate) struct Applied {
    reads: Vec<Read>,
    writes: Vec<FileWrite>,
}

impl Applied {
    /// The recorded writes when every recorded read answers the same on `files`; `None` when
    /// anything differs (or cannot be read), and the change must be applied again.
    pub(crate) fn replay(&self, files: &dyn FileSource) -> Option<Vec<FileWrite>> {
        let same = self.reads.iter().all(|read| match read {
            Read::File(path, content) => files.read_file(path).ok().as_ref() == Some(content),
            Read::Kind(path, kind) => files.entry_kind(path).ok() == Some(*kind),
            Read::Dir(path, entries) => files.list_dir(path).ok().as_ref() == Some(entries),
        });
        same.then(|| self.writes.clone())
    }
}

/// A [`FileSource`] that records every successful answer it gives.
pub(crate) struct Recording<'a> {
    inner: &'a dyn FileSource,
    reads: RefCell<Vec<Read>>,
}

impl<'a> Recording<'a> {
    pub(crate) fn new(inner: &'a dyn FileSource) -> Self {
        Self {
            inner,
            reads: RefCell::new(Vec::new()),
        }
    }

    /// What was read, with the writes the change computed from it.
    pub(crate) fn finish(self, writes: &[FileWrite]) -> Applied {
        Applied {
            reads: self.reads.into_inner(),
            writes: writes.to_vec(),
        }
    }
}

impl FileSource for Recording<'_> {
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ChangeError> {
        let content = self.inner.read_file(path)?;
        self.reads
            .borrow_mut()
            .push(Read::File(path.to_owned(), content.clone()));
        Ok(content)
    }

    fn entry_kind(&self, path: &str) -> Result<Option<EntryKind>, ChangeError> {
        let kind = self.inner.entry_kind(path)?;
        self.reads
            .borrow_mut()
            .push(Read::Kind(path.to_owned(), kind));
        Ok(kind)
    }

    fn list_dir(&self, path: &str) -> Result<Vec<DirEntry>, ChangeError> {
        let entries = self.inner.list_dir(path)?;
        self.reads
            .borrow_mut()
            .push(Read::Dir(path.to_owned(), entries.clone()));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Files(BTreeMap<&'static str, &'static str>);

    impl FileSource for Files {
        fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ChangeError> {
            Ok(self.0.get(path).map(|c| c.as_bytes().to_vec()))
        }
        fn entry_kind(&self, path: &str) -> Result<Option<EntryKind>, ChangeError> {
            Ok(self.0.contains_key(path).then_some(EntryKind::File))
        }
        fn list_dir(&self, _path: &str) -> Result<Vec<DirEntry>, ChangeError> {
            Ok(self
                .0
                .keys()
                .map(|name| DirEntry {
                    name: (*name).to_owned(),
                    kind: EntryKind::File,
                })
                .collect())
        }
    }

    fn record(files: &Files) -> Applied {
        let recording = Recording::new(files);
        let content = recording.read_file("a.yaml").unwrap().unwrap();
        recording.entry_kind("b.yaml").unwrap();
        let mut out = content.clone();
        out.extend_from_slice(b"# edited\n");
        recording.finish(&[FileWrite::put("a.yaml", out)])
    }

    #[test]
    fn writes_are_reused_when_every_read_answers_the_same() {
        let before = Files(BTreeMap::from([("a.yaml", "x: 1\n"), ("c.txt", "1")]));
        let applied = record(&before);
        // Another writer changed only a file the change never looked at.
        let after = Files(BTreeMap::from([("a.yaml", "x: 1\n"), ("c.txt", "2")]));
        let writes = applied.replay(&after).expect("reused");
        assert_eq!(writes, vec![FileWrite::put("a.yaml", "x: 1\n# edited\n")]);
    }

    #[test]
    fn a_changed_read_file_or_a_new_file_means_applying_again() {
        let before = Files(BTreeMap::from([("a.yaml", "x: 1\n")]));
        let applied = record(&before);
        let edited = Files(BTreeMap::from([("a.yaml", "x: 2\n")]));
        assert!(applied.replay(&edited).is_none());
        let appeared = Files(BTreeMap::from([("a.yaml", "x: 1\n"), ("b.yaml", "")]));
        assert!(applied.replay(&appeared).is_none());
    }
}
