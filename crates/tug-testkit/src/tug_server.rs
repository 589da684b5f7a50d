//! A real `tug server` process for integration tests: its configuration, data directory and log
//! in a scratch directory, listen ports chosen at runtime, and a small HTTP/1.1 client for the
//! REST API (plain HTTP only; a TLS server is reached with a TLS-capable client of the test).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::process::free_port;
use crate::repo::Scratch;

const SERVER: &str = "tug server";
/// Start-up includes opening (and migrating) the SQLite store.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// SIGTERM lets the writers finish the push in flight; open streams get a grace period.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// A deploy stream ends when its job ends; a test that waits longer than this is stuck.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
// Ports found free can be taken by another test before the server binds them; try new ones.
const PORT_ATTEMPTS: usize = 5;

/// A running `tug server`, killed (with every process it started) on drop.
pub struct TugServer {
    binary: PathBuf,
    scratch: Scratch,
    config_path: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    home: PathBuf,
    http_port: u16,
    grpc_port: u16,
    tls: bool,
    child: Option<Child>,
    /// Process groups of every incarnation, so processes a killed server left behind (a git
    /// push in flight) are cleaned up too.
    groups: Vec<u32>,
    /// Processes a killed incarnation left behind outside its process group (a push tug runs
    /// in a group of its own, to stop it with its helpers on a timeout), killed on drop.
    orphans: Vec<u32>,
}

impl TugServer {
    /// Starts `binary server --config FILE` with `config_yaml` plus the listen addresses and
    /// data directory this helper chooses (so `config_yaml` must not set `listen` or `data_dir`),
    /// and waits until `/api/v1/health` answers.
    pub fn start(binary: &Path, config_yaml: &str) -> Result<TugServer> {
        Self::start_with_env(binary, config_yaml, &[])
    }

    /// Like [`TugServer::start`], with `env` added to the otherwise clean environment of the
    /// server (for `${VAR}` references in the configuration).
    pub fn start_with_env(
        binary: &Path,
        config_yaml: &str,
        env: &[(&str, &str)],
    ) -> Result<TugServer> {
        for key in ["listen", "data_dir"] {
            if config_yaml
                .lines()
                .any(|line| line.starts_with(&format!("{key}:")))
            {
                return Err(Error::ServerStart {
                    server: SERVER,
                    detail: format!(
                        "the test configuration sets `{key}`; TugServer chooses it itself"
                    ),
                });
            }
        }
        let scratch = Scratch::new()?;
        let data_dir = scratch.join("data");
        let home = scratch.dir("home")?;
        let mut server = TugServer {
            binary: binary.to_owned(),
            config_path: scratch.join("tug.yaml"),
            log: scratch.join("tug-server.log"),
            data_dir,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            home,
            http_port: 0,
            grpc_port: 0,
            tls: config_yaml.lines().any(|line| line.starts_with("tls:")),
            child: None,
            groups: Vec::new(),
            orphans: Vec::new(),
            scratch,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            server.http_port = free_port()?;
            server.grpc_port = free_port()?;
            if server.http_port == server.grpc_port {
                continue;
            }
            let config = format!(
                "{config_yaml}\nlisten:\n  http: \"127.0.0.1:{http}\"\n  grpc: \"127.0.0.1:{grpc}\"\ndata_dir: \"{data}\"\n",
                http = server.http_port,
                grpc = server.grpc_port,
                data = server.data_dir.display(),
            );
            fs::write(&server.config_path, config)
                .map_err(|e| Error::io("write", &server.config_path, e))?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) if server.logs().contains("cannot listen on") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(Error::ServerStart {
            server: SERVER,
            detail: "no free pair of ports found".to_owned(),
        }))
    }

    /// A `Command` for `binary` with a clean environment: only `PATH`, a scratch `HOME` and
    /// `env`; nothing from the test's `GIT_*` or `TUG_*` variables.
    pub fn clean_command(binary: &Path, home: &Path, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("LC_ALL", "C")
            .env("RUST_BACKTRACE", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io("open log", &self.log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("open log", &self.log, e))?;
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut cmd = Self::clean_command(&self.binary, &self.home, &env);
        cmd.arg("server")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.scratch.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io("start", &self.binary, e))?;
        self.groups.push(child.id());
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait()? {
                self.child = None;
                return Err(Error::ServerStart {
                    server: SERVER,
                    detail: format!("exited with {status}; log:\n{}", self.logs()),
                });
            }
            let ready = if self.tls {
                // The helper's client speaks plain HTTP: an open port is the best it can tell.
                TcpStream::connect(("127.0.0.1", self.http_port)).is_ok()
            } else {
                self.get("/api/v1/health", None)
                    .is_ok_and(|r| r.status == 200 && r.text().contains("SERVING"))
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::ServerStart {
                    server: SERVER,
                    detail: format!("not healthy after {START_TIMEOUT:?}; log:\n{}", self.logs()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => child
                .try_wait()
                .map_err(|e| Error::io("poll", &self.binary, e)),
            None => Ok(None),
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` when the configuration sets `tls`).
    pub fn http_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.grpc_port))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The scratch directory holding configuration, data and log.
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the server process has not exited (read from /proc, so that a test can ask
    /// while requests hold shared references to the server).
    pub fn is_running(&self) -> bool {
        let Some(pid) = self.pid() else {
            return false;
        };
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // The state follows the parenthesised command name; `Z` is an exited, unreaped child.
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    }

    /// Everything the server wrote to stdout and stderr, across restarts.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL to the server process alone, as the kernel's OOM killer would: processes it
    /// started (a git push in flight) live on. Waits until the server is gone.
    pub fn kill9(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        self.orphans.extend(crate::process::descendants(child.id()));
        child
            .kill()
            .map_err(|e| Error::io("kill", &self.binary, e))?;
        child
            .wait()
            .map_err(|e| Error::io("wait for", &self.binary, e))?;
        Ok(())
    }

    /// SIGTERM, then waits (with a deadline) for the server to exit; returns its exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.send_sigterm()?;
        self.wait_exit(STOP_TIMEOUT)
    }

    /// Sends SIGTERM and returns at once; [`TugServer::wait_exit`] collects the exit.
    pub fn send_sigterm(&self) -> Result<()> {
        let Some(child) = &self.child else {
            return Err(Error::ServerStart {
                server: SERVER,
                detail: "SIGTERM: the server is not running".to_owned(),
            });
        };
        if signal(child.id(), "-TERM") {
            Ok(())
        } else {
            Err(Error::ServerStart {
                server: SERVER,
                detail: format!("cannot send SIGTERM to process {}", child.id()),
            })
        }
    }

    /// Waits until the server exits (SIGKILL after `timeout`, then an error) and returns its exit
    /// status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::ServerStart {
                server: SERVER,
                detail: "wait: the server is not running".to_owned(),
            });
        };
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::ServerStart {
                        server: SERVER,
                        detail: format!("did not exit within {timeout:?}; log:\n{}", self.logs()),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(Error::io("wait for", &self.binary, e)),
            }
        }
    }

    /// Starts the server again with the same configuration, data directory and ports (after
    /// [`TugServer::kill9`] or [`TugServer::terminate`]; a running server is killed first).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.spawn_and_wait()
    }

    /// Sends one request and reads the whole response (the server closes the connection after
    /// it, so a deploy stream is complete when this returns).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse> {
        http_request(self.http_addr(), method, path, headers, body)
    }

    /// `GET path` with an optional bearer token.
    pub fn get(&self, path: &str, token: Option<&str>) -> Result<HttpResponse> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.request("GET", path, &headers, b"")
    }

    /// `GET path` answered with JSON: the status and the parsed body.
    pub fn get_json(&self, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
        let response = self.get(path, token)?;
        let json = response.json()?;
        Ok((response.status, json))
    }

    /// `POST /api/v1/deploy` with `body`: the status and every NDJSON line of the answer (one
    /// line for an error object or a `?wait=false` answer).
    pub fn post_deploy(
        &self,
        body: &[u8],
        token: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<(u16, Vec<Value>)> {
        let response = self.post_deploy_to("/api/v1/deploy", body, token, idempotency_key)?;
        let lines = response.ndjson()?;
        Ok((response.status, lines))
    }

    /// `POST path` (`/api/v1/deploy?wait=false`, …) with the deploy headers.
    pub fn post_deploy_to(
        &self,
        path: &str,
        body: &[u8],
        token: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<HttpResponse> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = auth.as_deref() {
            headers.push(("Authorization", auth));
        }
        if let Some(key) = idempotency_key {
            headers.push(("Idempotency-Key", key));
        }
        self.request("POST", path, &headers, body)
    }
}

impl Drop for TugServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            self.orphans.extend(crate::process::descendants(child.id()));
        }
        for orphan in &self.orphans {
            let _ = Command::new("kill")
                .args(["-KILL", &orphan.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        for group in &self.groups {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One HTTP/1.1 response, its body de-chunked.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Command {
            command: "parse response body as JSON".to_owned(),
            status: format!("HTTP {}", self.status),
            stderr: format!("{e}: {}", self.text()),
        })
    }

    /// Every non-empty line parsed as JSON.
    pub fn ndjson(&self) -> Result<Vec<Value>> {
        self.body
            .split(|&b| b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(|line| {
                serde_json::from_slice(line).map_err(|e| Error::Command {
                    command: "parse NDJSON line".to_owned(),
                    status: format!("HTTP {}", self.status),
                    stderr: format!("{e}: {}", String::from_utf8_lossy(line)),
                })
            })
            .collect()
    }
}

fn protocol_error(what: &str, detail: impl Into<String>) -> Error {
    Error::Command {
        command: what.to_owned(),
        status: "malformed HTTP response".to_owned(),
        stderr: detail.into(),
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` to `addr` and reads the response to its
/// end. The body is written from a second thread so that a server answering before it read
/// everything (413) is still heard.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let what = format!("{method} http://{addr}{path}");
    let stream = TcpStream::connect(addr).map_err(|e| Error::io("connect to", &what, e))?;
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(|e| Error::io("configure", &what, e))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = stream
        .try_clone()
        .map_err(|e| Error::io("clone socket of", &what, e))?;
    let body = body.to_vec();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(head.as_bytes())?;
        writer.write_all(&body)?;
        writer.flush()
    });
    let response = read_response(BufReader::new(stream), &what);
    let sent = sender
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("sender thread panicked")));
    match (response, sent) {
        (Ok(r), _) => Ok(r),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(send)) => Err(Error::Command {
            command: what,
            status: format!("request not sent: {send}"),
            stderr: e.to_string(),
        }),
    }
}

fn read_response(mut reader: BufReader<TcpStream>, what: &str) -> Result<HttpResponse> {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| Error::io("read status of", what, e))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| protocol_error(what, format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| Error::io("read headers of", what, e))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| protocol_error(what, format!("header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader
                .read_line(&mut size_line)
                .map_err(|e| Error::io("read chunk of", what, e))?;
            let size_text = size_line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| protocol_error(what, format!("chunk size {size_line:?}")))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader
                .read_exact(&mut body[start..])
                .map_err(|e| Error::io("read chunk of", what, e))?;
            let mut crlf = [0u8; 2];
            reader
                .read_exact(&mut crlf)
                .map_err(|e| Error::io("read chunk of", what, e))?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| Error::io("read body of", what, e))?;
    } else {
        reader
            .read_to_end(&mut body)
            .map_err(|e| Error::io("read body of", what, e))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// A deploy that some replica saw through to success.
#[derive(Debug, Clone)]
pub struct Landed {
    pub job_id: String,
    /// How many times the request was sent (1 when the first replica answered).
    pub tries: usize,
}

/// Sends one deploy request (`POST /api/v1/deploy` with `headers`, which should carry an
/// `Idempotency-Key`) until a server of `servers` streams its final result, moving to the next
/// server when the connection drops (the server was killed) or it answers 503/429, as a CI
/// client of several replicas does. `Err` for a failed job, another refusal, or no final result
/// before `deadline`.
pub fn deploy_until_done(
    servers: &[SocketAddr],
    headers: &[(&str, &str)],
    body: &[u8],
    first: usize,
    deadline: Duration,
) -> std::result::Result<Landed, String> {
    if servers.is_empty() {
        return Err("no server to send the request to".to_owned());
    }
    let until = Instant::now() + deadline;
    let mut last = String::new();
    let mut tries = 0;
    while Instant::now() < until {
        let server = servers[(first + tries) % servers.len()];
        tries += 1;
        match http_request(server, "POST", "/api/v1/deploy", headers, body) {
            Ok(response) if response.status == 200 => {
                let lines = response.ndjson().unwrap_or_default();
                match lines.last().map(|line| &line["result"]) {
                    Some(result) if result["status"] == "succeeded" => {
                        let job_id = result["jobId"].as_str().unwrap_or_default().to_owned();
                        return Ok(Landed { job_id, tries });
                    }
                    Some(result) if result["status"] == "failed" => {
                        return Err(format!("the job failed: {lines:?}"));
                    }
                    // The stream broke off (the server died mid-stream): ask again.
                    _ => last = format!("{lines:?}"),
                }
            }
            Ok(response) if matches!(response.status, 429 | 503) => last = response.text(),
            Ok(response) => {
                return Err(format!("refused: {} {}", response.status, response.text()));
            }
            Err(error) => last = error.to_string(),
        }
        // A client's back-off before it tries another server.
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "no final result within {deadline:?}; last answer: {last}"
    ))
}
