//! Git servers the benchmarks push to: real servers on 127.0.0.1, stopped (with every process
//! they started) when dropped.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use tug_testkit::{Scratch, SmartHttp};

use crate::fixture::Fixture;

/// One push the web server answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PushTime {
    /// Seconds from the request's first byte read to the answer's last byte sent.
    pub secs: f64,
    /// When the answer ended, in seconds since the epoch (to the millisecond).
    pub ended: f64,
}

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

    /// The pushes to `repo` the server answered so far (the `POST` of a pack, which
    /// `receive-pack` answers once the refs are updated and the hooks ran), in the order they
    /// were answered.
    pub(crate) fn push_times(&self, repo: &ServedRepo) -> Result<Vec<PushTime>> {
        let name = repo
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("a served repository has a name")?;
        let post = format!("/git/{name}/git-receive-pack ");
        self.http
            .requests()
            .context("read the web server's access log")?
            .iter()
            .filter(|line| line.starts_with("POST ") && line.contains(&post))
            .map(|line| {
                let mut fields = line.rsplit(' ').map(str::parse::<f64>);
                match (fields.next(), fields.next()) {
                    (Some(Ok(ended)), Some(Ok(secs))) => Ok(PushTime { secs, ended }),
                    _ => bail!("no request time and end time at the end of {line:?}"),
                }
            })
            .collect()
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

/// Commits and pushes for the tests of the served copies.
#[cfg(test)]
pub(crate) mod testing {
    use anyhow::Result;
    use tug_testkit::run_git;

    /// Commits version `n` of a file in the work tree `work`.
    pub(crate) fn commit(work: &std::path::Path, n: usize) -> Result<()> {
        std::fs::write(work.join("file"), format!("{n}\n"))?;
        run_git(Some(work), &["add", "file"])?;
        run_git(
            Some(work),
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "commit",
                "--quiet",
                "-m",
                &n.to_string(),
            ],
        )?;
        Ok(())
    }

    /// Pushes the work tree's `HEAD` to `url` as `main`.
    pub(crate) fn push(work: &std::path::Path, url: &str) -> Result<()> {
        run_git(
            Some(work),
            &["push", "--quiet", url, "HEAD:refs/heads/main"],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{commit, push};
    use super::*;
    use tug_testkit::run_git;

    #[test]
    fn push_times_are_the_answers_to_the_pushes_of_one_repository() -> Result<()> {
        let scratch = Scratch::new()?;
        let work = scratch.join("work");
        run_git(None, &["init", "--quiet", &work.to_string_lossy()])?;
        commit(&work, 0)?;
        // The pristine copy the server publishes: that one commit on main.
        let src = scratch.join("src.git");
        run_git(None, &["init", "--quiet", "--bare", &src.to_string_lossy()])?;
        push(&work, &src.to_string_lossy())?;
        let fixture = Fixture {
            name: "src".to_owned(),
            path: src,
            service_dirs: 0,
            services: Vec::new(),
            commits: 1,
            files: 1,
        };
        let http = SmartHttpServer::start()?;
        let (a, b) = (http.publish(&fixture, "a")?, http.publish(&fixture, "b")?);
        assert!(http.push_times(&a)?.is_empty());
        for (n, to) in [(1, &a), (2, &b), (3, &a)] {
            commit(&work, n)?;
            push(&work, &to.url)?;
        }
        let (to_a, to_b) = (http.push_times(&a)?, http.push_times(&b)?);
        assert_eq!((to_a.len(), to_b.len()), (2, 1), "{to_a:?} {to_b:?}");
        assert!(
            to_a.iter()
                .chain(&to_b)
                .all(|push| (0.0..60.0).contains(&push.secs)),
            "{to_a:?} {to_b:?}"
        );
        // In the order answered, each after the last, and all within the last minute.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        assert!(to_a[0].ended <= to_a[1].ended, "{to_a:?}");
        assert!(
            to_a.iter()
                .all(|push| (now - 60.0..now + 1.0).contains(&push.ended)),
            "{to_a:?} at {now}"
        );
        Ok(())
    }

    #[test]
    fn only_loopback_urls_pass() {
        assert!(ensure_loopback("http://127.0.0.1:8080/git/small.git").is_ok());
        assert!(ensure_loopback("http://127.0.0.1/git/small.git").is_ok());
        assert!(ensure_loopback("http://127.0.0.10:80/x.git").is_err());
        assert!(ensure_loopback("https://github.com/o/r.git").is_err());
        assert!(ensure_loopback("/tmp/x.git").is_err());
    }
}
