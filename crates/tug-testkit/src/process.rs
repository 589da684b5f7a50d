//! Server processes that die with their handle, and port helpers.

use std::collections::HashMap;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A port on 127.0.0.1 that was free a moment ago, below the kernel's range of ephemeral ports.
/// A server started on it can still lose a race with another test; the server starters retry
/// with a new port when that happens. Below the ephemeral range, no outgoing connection is ever
/// given the port as its own: a server restarted on the port it had (the replica tests kill and
/// restart servers on the addresses their clients know) finds it free.
pub fn free_port() -> Result<u16> {
    let (low, _) = ephemeral_range();
    // Ports from 10000 up to the ephemeral range, visited from a place that differs between
    // calls and processes, so concurrent tests rarely try the same one.
    let first: u16 = 10_000;
    if low > first + 1_000 {
        let span = u32::from(low - first);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id().wrapping_mul(2_654_435_761)
            ^ NEXT.fetch_add(7_919, std::sync::atomic::Ordering::Relaxed);
        for i in 0..span.min(2_000) {
            let port = first
                + u16::try_from((seed.wrapping_add(i.wrapping_mul(7_919))) % span).unwrap_or(0);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind", "127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("read address of", "127.0.0.1:0", e))?
        .port();
    Ok(port)
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), Linux's default when
/// unreadable.
fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// A running server in its own process group, killed with every descendant on drop.
pub struct ServerProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Set once the process and its descendants were killed and reaped.
    killed: bool,
}

impl ServerProcess {
    /// Starts `cmd` in a new process group with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io("open log", log, e))?;
        let err = out.try_clone().map_err(|e| Error::io("open log", log, e))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io("start", format!("{name} ({:?})", cmd.get_program()), e))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
            killed: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(description)` when the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited with {status}; log:\n{}",
                self.name,
                self.log_text()
            )),
            Ok(None) => None,
            Err(e) => Some(format!("{}: cannot poll: {e}", self.name)),
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every live process below the server (connection handlers can leave its process group).
    pub fn descendants(&self) -> Vec<u32> {
        descendants(self.child.id())
    }
}

impl ServerProcess {
    /// SIGKILL to the process, its process group and every descendant, then reaps it.
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        let pid = self.child.id();
        let mut targets: Vec<String> = descendants(pid).iter().map(u32::to_string).collect();
        targets.push(format!("-{pid}"));
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .args(&targets)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn parent_map() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces: fields start after ')'.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let (Some(_state), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(ppid) = ppid.parse::<u32>() {
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let children = parent_map();
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(next) = stack.pop() {
        for &child in children.get(&next).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(child);
            stack.push(child);
        }
    }
    out
}

/// Polls until something accepts connections on 127.0.0.1:`port`, the server exits, or the
/// deadline passes.
pub fn wait_for_port(server: &mut ServerProcess, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(exit) = server.exited() {
            return Err(Error::ServerStart {
                server: server.name,
                detail: exit,
            });
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::ServerStart {
                server: server.name,
                detail: format!(
                    "port {port} not open after {timeout:?}; log:\n{}",
                    server.log_text()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls until `path` exists or the deadline passes.
pub(crate) fn wait_for_path(
    server: &mut ServerProcess,
    path: &Path,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Some(exit) = server.exited() {
            return Err(Error::ServerStart {
                server: server.name,
                detail: exit,
            });
        }
        if Instant::now() > deadline {
            return Err(Error::ServerStart {
                server: server.name,
                detail: format!("{} not created after {timeout:?}", path.display()),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
