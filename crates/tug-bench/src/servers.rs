//! Git servers the benchmarks push to: real servers on 127.0.0.1, stopped (with every process
//! they started) when dropped.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tug_testkit::{Scratch, SmartHttp};

use crate::fixture::Fixture;

/// A copy of a fixture served by a loopback server.
#[derive(Debug, Clone)]
pub(crate) struct ServedRepo {
    pub path: PathBuf,
    pub url: String,
}

/// Smart HTTP (nginx → fcgiwrap → `git http-backend`) over a scratch directory of bare
/// repositories.
pub(crate) struct SmartHttpServer {
    // Declared first so it stops before its repositories are deleted.
    http: SmartHttp,
    root: Scratch,
}

impl SmartHttpServer {
    pub(crate) fn start() -> Result<Self> {
        let root = Scratch::new().context("create the served repositories' directory")?;
        let http = SmartHttp::start(root.path(), None).context("start smart HTTP on 127.0.0.1")?;
        Ok(Self { http, root })
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "smart HTTP on 127.0.0.1:{} (nginx → fcgiwrap → git http-backend)",
            self.http.port()
        )
    }

    /// Kills the web server and its git processes and starts them again on the same port.
    pub(crate) fn restart(&mut self) -> Result<()> {
        self.http
            .restart()
            .context("restart smart HTTP on 127.0.0.1")
    }

    /// Serves a fresh copy of `fixture` as `NAME.git`.
    pub(crate) fn publish(&self, fixture: &Fixture, name: &str) -> Result<ServedRepo> {
        let file = format!("{name}.git");
        let path = self.root.join(&file);
        fixture.copy_to(&path)?;
        let url = self.http.url(&file);
        ensure_loopback(&url)?;
        Ok(ServedRepo { path, url })
    }

    /// Deletes a served copy once its scenario is done (large copies add up).
    pub(crate) fn unpublish(&self, repo: &ServedRepo) -> Result<()> {
        std::fs::remove_dir_all(&repo.path)
            .with_context(|| format!("remove {}", repo.path.display()))
    }
}

/// Benchmarks talk to 127.0.0.1 only.
pub(crate) fn ensure_loopback(url: &str) -> Result<()> {
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split(['/', ':']).next());
    if host != Some("127.0.0.1") {
        bail!("refusing to benchmark against {url}: only 127.0.0.1 is allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_urls_pass() {
        assert!(ensure_loopback("http://127.0.0.1:8080/git/small.git").is_ok());
        assert!(ensure_loopback("http://127.0.0.1/git/small.git").is_ok());
        assert!(ensure_loopback("http://127.0.0.10:80/x.git").is_err());
        assert!(ensure_loopback("https://github.com/o/r.git").is_err());
        assert!(ensure_loopback("/tmp/x.git").is_err());
    }
}
