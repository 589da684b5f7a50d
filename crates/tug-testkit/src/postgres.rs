//! A throwaway PostgreSQL server: `initdb` into a scratch directory, `postgres` listening on a
//! Unix socket only (no port to race for), killed with its children on drop. As root (CI), the
//! server runs as the `postgres` user, since PostgreSQL refuses to run as root.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::ServerProcess;
use crate::repo::Scratch;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server with trust authentication for the `postgres` user.
pub struct Postgres {
    server: Option<ServerProcess>,
    settings: Vec<String>,
    data: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    dir: Scratch,
}

impl Postgres {
    /// Starts a server with `fsync=off`: tests want speed, not durability across power loss.
    /// Commits stay synchronous, so what was acknowledged survives [`Postgres::kill`] (the WAL
    /// is in the operating system's cache, which a killed server does not lose).
    pub fn start() -> Result<Postgres> {
        Self::start_with(&["-c", "fsync=off"])
    }

    /// Starts a server with the default durability settings (`fsync=on`), for benchmarks that
    /// compare stores fairly.
    pub fn start_durable() -> Result<Postgres> {
        Self::start_with(&[])
    }

    fn start_with(settings: &[&str]) -> Result<Postgres> {
        let bin_dir = bin_dir()?;
        let dir = Scratch::new()?;
        let run_as = if is_root() {
            Some(postgres_ids()?)
        } else {
            None
        };
        let data = dir.join("data");
        let socket_dir = dir.dir("socket")?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), socket_dir.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| Error::io("chown", path, e))?;
            }
        }
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .args(["--no-sync", "--no-instructions", "--locale=C", "-D"])
            .arg(&data);
        run(initdb, run_as)?;
        let mut postgres = Postgres {
            server: None,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            data,
            socket_dir,
            bin_dir,
            run_as,
            dir,
        };
        postgres.spawn()?;
        Ok(postgres)
    }

    /// Kills the server (SIGKILL, as a crash would); [`Postgres::restart`] brings it back with
    /// the same data.
    pub fn kill(&mut self) {
        self.server = None;
    }

    /// Starts the server again on the same data directory and socket (after a kill, it
    /// recovers like after a crash).
    pub fn restart(&mut self) -> Result<()> {
        self.server = None;
        self.spawn()
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-c", "listen_addresses=", "-c", "max_connections=300"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ))
            .args(&self.settings);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let log = self.dir.join("postgres.log");
        let mut server = ServerProcess::spawn("postgres", cmd, &log)?;
        if let Some((uid, gid)) = self.run_as {
            let _ = std::os::unix::fs::chown(&log, Some(uid), Some(gid));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(exit) = server.exited() {
                return Err(Error::ServerStart {
                    server: "postgres",
                    detail: exit,
                });
            }
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .arg("-q")
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-U", "postgres"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::ServerStart {
                    server: "postgres",
                    detail: format!(
                        "not ready after {START_TIMEOUT:?}; log:\n{}",
                        server.log_text()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.server = Some(server);
        Ok(())
    }

    /// The URL of database `name` (create it with [`Postgres::create_database`]).
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost/{name}?host={}",
            self.socket_dir.display()
        )
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs SQL with `psql` and returns what it printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(self.bin_dir.join("psql"));
        cmd.arg("-h")
            .arg(&self.socket_dir)
            .args(["-U", "postgres", "-d", database, "-X", "-A", "-t", "-q"])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql]);
        let out = cmd
            .output()
            .map_err(|e| Error::io("run", self.bin_dir.join("psql"), e))?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("psql -c {sql:?}"),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// Where PostgreSQL's programs are: next to `initdb` in PATH, else Debian's versioned directory.
fn bin_dir() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Through symlinks (some machines link `initdb` into /usr/local/bin): pg_isready and psql
    // sit next to the real one.
    if let Some(dir) = std::env::split_paths(&path)
        .filter_map(|dir| fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| dir.join("postgres").is_file() && dir.join("pg_isready").is_file())
    {
        return Ok(dir);
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("bin"))
                .filter(|bin| bin.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().ok_or(Error::MissingBinary {
        binary: "initdb".to_owned(),
        package: "postgresql",
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The uid and gid of the `postgres` user Debian's package creates.
fn postgres_ids() -> Result<(u32, u32)> {
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|e| Error::io("read", "/etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .ok_or(Error::MissingBinary {
            binary: "the postgres user".to_owned(),
            package: "postgresql",
        })
}

fn run(mut cmd: Command, run_as: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd
        .output()
        .map_err(|e| Error::io("run", cmd.get_program().to_owned(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("{:?}", cmd.get_program()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
