//! The git write path of tug: one bare mirror per remote, files read and written as git objects
//! without a work tree or index, commits built in-process, and compare-and-swap pushes that
//! re-apply changes to the new tip when the branch moved.
//!
//! Every git process is built by one module with an isolated environment: no system or global
//! config, a private HOME, no prompts, no credential helper, no inherited `GIT_*` variables;
//! HTTPS credentials reach git only through an askpass script reading variables set on that one
//! child, SSH through an explicit key, known_hosts file and shared connection. Pushes to HTTP(S)
//! remotes send the batch's own pack from the process itself (with the same credentials, as an
//! `Authorization` header) and leave anything unusual to `git push`.

mod commit;
mod env;
mod error;
mod history;
mod land;
mod maintain;
mod mirror;
mod object;
mod oid;
mod pack;
mod refs;
mod reject;
mod replay;
mod secret;
mod sign;
mod smart_http;
mod store;
mod tree;

pub use commit::{CommitMeta, Identity, Timestamp, format_message, validate_trailer_key};
pub use env::{Auth, CommandObserver};
pub use error::{ChangeError, GitError};
pub use history::{History, HistoryCommit};
pub use land::{
    Building, Change, LandOptions, LandReport, LandResult, Prepared, land, land_prepared, prepare,
};
pub use mirror::{Maintenance, MaintenanceDue, Mirror, MirrorOptions, Remote, check_remote_url};
pub use object::{EntryKind, ObjectId};
pub use secret::Secret;
pub use sign::{OpenPgpSigner, Signer, SshSigner};
pub use tree::{DirEntry, FileAction, FileSource, FileWrite, TreeView, files_under, split_path};
pub use tug_clock::{Clock, ManualClock, SystemClock};

#[cfg(test)]
mod tests {
    fn shared_across_threads<T: Send + Sync>() {}

    #[test]
    fn mirrors_and_options_can_be_shared_with_blocking_tasks() {
        shared_across_threads::<crate::Mirror>();
        shared_across_threads::<crate::LandOptions>();
        shared_across_threads::<crate::GitError>();
    }
}
