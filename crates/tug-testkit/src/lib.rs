//! Test support for tug: scratch directories, bare repositories driven through the git CLI,
//! real git servers on 127.0.0.1 (git daemon, smart HTTP through nginx and fcgiwrap, sshd) on
//! ports chosen at runtime, and a throwaway PKI for servers over TLS. Every server runs in its
//! own process group and is killed, with all its descendants, when its handle is dropped.

mod error;
mod gpg;
pub mod pki;
mod postgres;
mod process;
mod race;
mod repo;
mod servers;
mod tug_server;

pub use error::{Error, Result};
pub use gpg::GpgHome;
pub use postgres::Postgres;
pub use process::{ServerProcess, free_port, wait_for_port};
pub use race::{HumanPusher, HumanReport};
pub use repo::{
    BareRepo, Entry, LogEntry, Scratch, git_command, run_git, trailer_values_on_all_branches,
};
pub use servers::{BasicAuth, GitDaemon, SmartHttp, Sshd, require_binary};
pub use tug_server::{HttpResponse, Landed, TugServer, deploy_until_done, http_request};
