//! Real git servers on 127.0.0.1 for tests, each with its own files in a scratch directory.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};
use crate::process::{ServerProcess, free_port, wait_for_path, wait_for_port};
use crate::repo::Scratch;

const START_TIMEOUT: Duration = Duration::from_secs(15);
// A port found free can be taken by another test before the server binds it; try a new one.
const PORT_ATTEMPTS: usize = 5;
/// The path nginx answers with 204 so that `SmartHttp::requests` knows the log is written.
const SETTLE_PATH: &str = "/tug-testkit-settle";

/// The path of `binary` (searched in PATH, /usr/sbin and /usr/lib/git-core), or an error naming
/// the Debian package that provides it.
pub fn require_binary(binary: &str, package: &'static str) -> Result<PathBuf> {
    let candidate = Path::new(binary);
    if candidate.is_absolute() {
        return if candidate.exists() {
            Ok(candidate.to_owned())
        } else {
            Err(Error::MissingBinary {
                binary: binary.to_owned(),
                package,
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            PathBuf::from("/usr/sbin"),
            PathBuf::from("/usr/lib/git-core"),
        ])
        .map(|dir| dir.join(binary))
        .find(|full| full.is_file())
        .ok_or(Error::MissingBinary {
            binary: binary.to_owned(),
            package,
        })
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> Result<()> {
    fs::write(path, content).map_err(|e| Error::io("write", path, e))
}

fn server_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `git daemon` serving every repository under a base directory, pushes enabled.
pub struct GitDaemon {
    port: u16,
    process: ServerProcess,
    _scratch: Scratch,
}

impl GitDaemon {
    pub fn start(base_path: &Path) -> Result<Self> {
        let git = require_binary("git", "git")?;
        let scratch = Scratch::new()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut cmd = Command::new(&git);
            server_env(&mut cmd);
            cmd.arg("daemon")
                .arg("--reuseaddr")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base_path.display()))
                .args([
                    "--export-all",
                    "--enable=receive-pack",
                    "--informative-errors",
                ])
                .arg(base_path);
            let mut process =
                ServerProcess::spawn("git daemon", cmd, &scratch.join("git-daemon.log"))?;
            match wait_for_port(&mut process, port, START_TIMEOUT) {
                Ok(()) => {
                    return Ok(Self {
                        port,
                        process,
                        _scratch: scratch,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(Error::ServerStart {
            server: "git daemon",
            detail: "no attempt".to_owned(),
        }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The daemon's process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `git://127.0.0.1:PORT/NAME` for a repository directly under the base path.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

/// Credentials nginx demands before passing a request to git.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

/// Smart HTTP: nginx → fcgiwrap → `git http-backend`, serving every repository under a root
/// directory at `http://127.0.0.1:PORT/git/NAME`, optionally behind basic auth.
pub struct SmartHttp {
    port: u16,
    // Dropped in order: nginx first, then the FastCGI workers behind it.
    nginx: ServerProcess,
    fcgiwrap: ServerProcess,
    scratch: Scratch,
}

impl SmartHttp {
    pub fn start(root: &Path, auth: Option<BasicAuth>) -> Result<Self> {
        let nginx = require_binary("nginx", "nginx-light")?;
        let backend = require_binary("/usr/lib/git-core/git-http-backend", "git")?;
        let scratch = Scratch::new()?;
        let dir = scratch.path().to_owned();
        for sub in ["body", "fastcgi", "proxy", "uwsgi", "scgi", "logs", "home"] {
            scratch.dir(sub)?;
        }
        // nginx workers run as the configured user; give them a way in.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("set mode of", &dir, e))?;

        let socket = dir.join("fcgiwrap.sock");
        let fcgi = spawn_fcgiwrap(&dir, &socket)?;

        let auth_lines = match &auth {
            Some(auth) => {
                let htpasswd = dir.join("htpasswd");
                // nginx understands the `{SHA}` form: base64 of the SHA-1 of the password.
                let digest = base64::engine::general_purpose::STANDARD
                    .encode(Sha1::digest(auth.password.as_bytes()));
                write(&htpasswd, format!("{}:{{SHA}}{digest}\n", auth.username))?;
                format!(
                    "auth_basic \"git\";\n      auth_basic_user_file {};\n      fastcgi_param REMOTE_USER $remote_user;",
                    htpasswd.display()
                )
            }
            None => "fastcgi_param REMOTE_USER tug-test;".to_owned(),
        };
        let user_line = if is_root() { "user root;" } else { "" };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let conf = dir.join("nginx.conf");
            write(
                &conf,
                format!(
                    r#"{user_line}
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
  log_format requests '$request_method $request_uri $status $request_time $msec';
  access_log {dir}/access.log requests;
  client_body_temp_path {dir}/body;
  fastcgi_temp_path {dir}/fastcgi;
  proxy_temp_path {dir}/proxy;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location = {SETTLE_PATH} {{
      return 204;
    }}
    location ~ ^/git(/.*)$ {{
      {auth_lines}
      fastcgi_pass unix:{socket};
      fastcgi_param SCRIPT_FILENAME {backend};
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param SERVER_PROTOCOL $server_protocol;
      fastcgi_param REMOTE_ADDR $remote_addr;
      fastcgi_param GIT_PROJECT_ROOT {root};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param GIT_CONFIG_NOSYSTEM 1;
      fastcgi_param HOME {dir}/home;
      fastcgi_param PATH_INFO $1;
      fastcgi_param GIT_PROTOCOL $http_git_protocol;
      fastcgi_buffering off;
    }}
  }}
}}
"#,
                    dir = dir.display(),
                    socket = socket.display(),
                    backend = backend.display(),
                    root = root.display(),
                    SETTLE_PATH = SETTLE_PATH,
                ),
            )?;
            match spawn_nginx(&nginx, &dir, port) {
                Ok(process) => {
                    return Ok(Self {
                        port,
                        nginx: process,
                        fcgiwrap: fcgi,
                        scratch,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(Error::ServerStart {
            server: "nginx",
            detail: "no attempt".to_owned(),
        }))
    }

    /// Kills nginx and every FastCGI worker (SIGKILL, connections in flight drop mid-answer)
    /// and starts them again on the same port and configuration: what a client sees when the
    /// git host restarts.
    pub fn restart(&mut self) -> Result<()> {
        let nginx = require_binary("nginx", "nginx-light")?;
        let dir = self.scratch.path().to_owned();
        let socket = dir.join("fcgiwrap.sock");
        self.nginx.kill();
        self.fcgiwrap.kill();
        // fcgiwrap refuses to bind over the socket file its killed predecessor left.
        match fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &socket, e)),
        }
        self.fcgiwrap = spawn_fcgiwrap(&dir, &socket)?;
        self.nginx = spawn_nginx(&nginx, &dir, self.port)?;
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The nginx master's process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.nginx.pid()
    }

    /// fcgiwrap's process id, which is also its process group id.
    pub fn fcgiwrap_pid(&self) -> u32 {
        self.fcgiwrap.pid()
    }

    /// `http://127.0.0.1:PORT/git/NAME` for a repository directly under the root.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/git/{name}", self.port)
    }

    /// The directory holding the server's configuration and logs.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Every request answered so far, one `METHOD URI STATUS SECONDS ENDED` line each (how long
    /// the request took, from its first byte read to its answer's last byte sent, and when it
    /// ended in seconds since the epoch, to the millisecond), in the order they were answered.
    ///
    /// nginx writes a request's line just after it sent the answer's last byte, so a client
    /// can hold its answer before the line is written. One more request first closes that
    /// gap: nginx's only worker takes a new connection once it finished its current event,
    /// and the last byte of an answer and that answer's log line belong to one event.
    pub fn requests(&self) -> Result<Vec<String>> {
        self.settle()?;
        let log = self.scratch.path().join("access.log");
        let text = match fs::read_to_string(&log) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("read", &log, e)),
        };
        let settle = format!(" {SETTLE_PATH} ");
        Ok(text
            .lines()
            .filter(|line| !line.contains(&settle))
            .map(str::to_owned)
            .collect())
    }

    /// Asks nginx for `SETTLE_PATH` and reads the answer to its end.
    fn settle(&self) -> Result<()> {
        let what = format!("GET http://127.0.0.1:{}{SETTLE_PATH}", self.port);
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .map_err(|e| Error::io("connect to", &what, e))?;
        stream
            .set_read_timeout(Some(START_TIMEOUT))
            .map_err(|e| Error::io("configure", &what, e))?;
        stream
            .write_all(
                format!(
                    "GET {SETTLE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .map_err(|e| Error::io("send", &what, e))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(|e| Error::io("read the answer of", &what, e))?;
        if answer.starts_with(b"HTTP/1.1 204") {
            Ok(())
        } else {
            Err(Error::Command {
                command: what,
                status: "not answered with 204".to_owned(),
                stderr: String::from_utf8_lossy(&answer[..answer.len().min(80)]).into_owned(),
            })
        }
    }
}

fn spawn_fcgiwrap(dir: &Path, socket: &Path) -> Result<ServerProcess> {
    let fcgiwrap = require_binary("fcgiwrap", "fcgiwrap")?;
    let mut cmd = Command::new(&fcgiwrap);
    server_env(&mut cmd);
    cmd.env("HOME", dir.join("home"))
        .args(["-c", "2", "-s"])
        .arg(format!("unix:{}", socket.display()));
    let mut fcgi = ServerProcess::spawn("fcgiwrap", cmd, &dir.join("fcgiwrap.log"))?;
    wait_for_path(&mut fcgi, socket, START_TIMEOUT)?;
    Ok(fcgi)
}

/// nginx with the configuration `dir/nginx.conf`, once it accepts connections on `port`.
fn spawn_nginx(nginx: &Path, dir: &Path, port: u16) -> Result<ServerProcess> {
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"));
    let mut process = ServerProcess::spawn("nginx", cmd, &dir.join("nginx.log"))?;
    wait_for_port(&mut process, port, START_TIMEOUT)?;
    Ok(process)
}

/// OpenSSH's sshd on a free port, with its own host key and one authorised client key, logging
/// in as the current user.
pub struct Sshd {
    port: u16,
    user: String,
    process: ServerProcess,
    scratch: Scratch,
}

impl Sshd {
    pub fn start() -> Result<Self> {
        let sshd = require_binary("/usr/sbin/sshd", "openssh-server")?;
        let keygen = require_binary("ssh-keygen", "openssh-client")?;
        require_binary("ssh", "openssh-client")?;
        let scratch = Scratch::new()?;
        let dir = scratch.path().to_owned();
        let privsep = Path::new("/run/sshd");
        if is_root() && !privsep.exists() {
            fs::create_dir_all(privsep).map_err(|e| Error::io("create directory", privsep, e))?;
        }
        for key in ["host_key", "client_key"] {
            let out = Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "tug-test", "-f"])
                .arg(dir.join(key))
                .output()
                .map_err(|e| Error::io("run", &keygen, e))?;
            if !out.status.success() {
                return Err(Error::Command {
                    command: format!("ssh-keygen {key}"),
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
        }
        let user = Command::new("id")
            .arg("-un")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .map_err(|e| Error::io("run", "id -un", e))?;
        let home = scratch.dir("home")?;
        let client_pub = fs::read_to_string(dir.join("client_key.pub"))
            .map_err(|e| Error::io("read", dir.join("client_key.pub"), e))?;
        // An empty HOME keeps the login shell from sourcing the machine's profile on every git
        // command, as a git host's forced command would.
        write(
            &dir.join("authorized_keys"),
            format!(
                "environment=\"HOME={}\" {}",
                home.display(),
                client_pub.trim()
            ),
        )?;
        let host_pub = fs::read_to_string(dir.join("host_key.pub"))
            .map_err(|e| Error::io("read", dir.join("host_key.pub"), e))?;
        let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        let host_key = host_key.join(" ");

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let conf = dir.join("sshd_config");
            write(
                &conf,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {dir}/host_key\nPidFile {dir}/sshd.pid\n\
                     AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                     UseDNS no\nPrintMotd no\nMaxStartups 64\nMaxSessions 64\nAcceptEnv GIT_PROTOCOL\n\
                     PermitUserEnvironment yes\n",
                    dir = dir.display()
                ),
            )?;
            write(
                &dir.join("known_hosts"),
                format!("[127.0.0.1]:{port} {host_key}\n"),
            )?;
            let mut cmd = Command::new(&sshd);
            cmd.arg("-D").arg("-e").arg("-f").arg(&conf);
            let mut process = ServerProcess::spawn("sshd", cmd, &dir.join("sshd.log"))?;
            match wait_for_port(&mut process, port, START_TIMEOUT) {
                Ok(()) => {
                    return Ok(Self {
                        port,
                        user,
                        process,
                        scratch,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(Error::ServerStart {
            server: "sshd",
            detail: "no attempt".to_owned(),
        }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh://USER@127.0.0.1:PORT/ABSOLUTE/PATH`.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// The private key the server accepts.
    pub fn client_key(&self) -> PathBuf {
        self.scratch.join("client_key")
    }

    /// A known_hosts file that pins this server's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.scratch.join("known_hosts")
    }

    /// sshd's process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}
