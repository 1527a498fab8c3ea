//! The child processes (mock upstream, sluice) and what `/proc` says about them and the machine.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// How many stderr lines of a child are kept to explain a failure.
const TAIL_LINES: usize = 40;
/// How many distinct WARN/ERROR messages of a child are kept for the report.
const NOTABLE_LINES: usize = 8;

/// What a child wrote on stderr: the last lines, and its warnings and errors grouped by message.
#[derive(Debug, Default)]
pub struct LogTail {
    lines: VecDeque<String>,
    pub warnings: usize,
    pub errors: usize,
    /// Distinct WARN/ERROR messages (numbers masked): count and the first line seen.
    pub notable: Vec<(String, usize, String)>,
    /// WARN/ERROR lines beyond the distinct messages kept.
    pub other: usize,
}

/// A log line without its timestamp and with every number masked, to group repeats.
fn message_key(line: &str) -> String {
    let rest = match line.split_once(' ') {
        Some((first, rest)) if first.starts_with(|c: char| c.is_ascii_digit()) => rest,
        _ => line,
    };
    let mut key = String::with_capacity(rest.len());
    let mut in_number = false;
    for c in rest.trim().chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                key.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            key.push(c);
        }
    }
    key
}

impl LogTail {
    fn push(&mut self, line: String) {
        let level = if line.contains(" ERROR ") {
            self.errors += 1;
            true
        } else if line.contains(" WARN ") {
            self.warnings += 1;
            true
        } else {
            false
        };
        if level {
            let key = message_key(&line);
            if let Some(kind) = self.notable.iter_mut().find(|(k, _, _)| *k == key) {
                kind.1 += 1;
            } else if self.notable.len() < NOTABLE_LINES {
                self.notable
                    .push((key, 1, line.chars().take(400).collect()));
            } else {
                self.other += 1;
            }
        }
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn tail(&self) -> String {
        self.lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// A running child process, killed when dropped (also while unwinding from a panic).
pub struct Proc {
    name: String,
    child: Child,
    /// `127.0.0.1:PORT`, as the child announced it.
    pub addr: String,
    pub log: Arc<Mutex<LogTail>>,
}

impl Proc {
    /// Spawns `cmd`, drains its stderr on a thread for as long as it runs, and waits for the
    /// line containing `listening on http://` to learn its address.
    pub fn spawn(name: &str, mut cmd: Command, timeout: Duration) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("{name}: no stderr pipe"))?;
        let log = Arc::new(Mutex::new(LogTail::default()));
        let (tx, rx) = mpsc::channel::<String>();
        let thread_log = Arc::clone(&log);
        std::thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || drain(stderr, &thread_log, &tx))
            .context("cannot start a stderr thread")?;
        let mut proc = Proc {
            name: name.to_owned(),
            child,
            addr: String::new(),
            log,
        };
        match rx.recv_timeout(timeout) {
            Ok(addr) => proc.addr = addr,
            Err(_) => {
                let status = proc.child.try_wait().ok().flatten();
                bail!(
                    "{name} did not announce its address within {timeout:?} (exit status: {status:?}); its stderr:\n{}",
                    proc.tail()
                );
            }
        }
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn tail(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tail()
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("unknown ({err})")),
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub fn stop(mut self, grace: Duration) {
        let terminated = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if terminated {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "bench: {} did not stop within {grace:?}; killing it",
                self.name
            );
        }
        // Drop kills it.
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn drain(stderr: std::process::ChildStderr, log: &Mutex<LogTail>, tx: &mpsc::Sender<String>) {
    const MARKER: &str = "listening on http://";
    let mut reader = BufReader::new(stderr);
    let mut announced = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
        if !announced && let Some(at) = line.find(MARKER) {
            let rest = &line[at + MARKER.len()..];
            let addr: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/')
                .collect();
            announced = tx.send(addr).is_ok();
        }
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

fn stat_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// utime + stime of a process (`None`: this one), in clock ticks.
pub fn cpu_ticks(pid: Option<u32>) -> Result<u64> {
    let path = stat_path(pid, "stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name may contain spaces and parentheses: the fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resets the peak RSS (`VmHWM`) of a process to its current RSS. Returns whether it worked.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count)
}

/// A process's TCP sockets on one local port, as `/proc/PID/net/tcp` lists them (IPv4).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpSockets {
    /// Sockets in the ESTABLISHED state.
    pub established: usize,
    /// Bytes received on them that the process has not read yet (the `rx_queue` column).
    pub unread_bytes: u64,
}

/// The ESTABLISHED sockets whose local port is `port`, in the network namespace of `pid`.
pub fn tcp_sockets(pid: u32, port: u16) -> Option<TcpSockets> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    let mut sockets = TcpSockets::default();
    // sl local_address rem_address st tx_queue:rx_queue ...; addresses and queues in hex.
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(queues)) =
            (fields.get(1), fields.get(3), fields.get(4))
        else {
            continue;
        };
        let local_port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if local_port != Some(port) || *state != "01" {
            continue;
        }
        sockets.established += 1;
        sockets.unread_bytes += queues
            .split_once(':')
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
            .unwrap_or(0);
    }
    Some(sockets)
}

/// Clock ticks per second, from `getconf CLK_TCK` (100 if that fails).
pub fn clock_ticks() -> (u64, bool) {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .map_or((100, false), |t| (t, true))
}

/// A line describing the machine: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {:.1} GiB memory, Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// Raises RLIMIT_NOFILE before anything is spawned (children inherit it): the soft limit to the
/// hard limit, and both to `want` if the process may raise the hard limit (root). Returns a
/// description for the report and the resulting soft limit.
pub fn raise_nofile(want: u64) -> (String, u64) {
    use rlimit::Resource;
    let Ok((soft, hard)) = rlimit::getrlimit(Resource::NOFILE) else {
        return ("unknown (getrlimit failed)".to_owned(), 1024);
    };
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let target = want.min(nr_open);
    if target > hard && rlimit::setrlimit(Resource::NOFILE, target, target).is_ok() {
        return (
            format!("{target} (raised from soft {soft} / hard {hard})"),
            target,
        );
    }
    if soft < hard && rlimit::setrlimit(Resource::NOFILE, hard, hard).is_ok() {
        return (format!("{hard} (soft raised from {soft})"), hard);
    }
    (format!("{soft} (hard {hard})"), soft)
}

/// `cargo build --release` of `targets` (`--bin sluice`, …) in the crate at `manifest`.
pub fn cargo_build_release(manifest: &Path, targets: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // `cargo run` gives this process the variables of a crate being run (CARGO_MANIFEST_DIR,
    // CARGO_PKG_NAME, …). Build scripts such as ring's rerun when they change, so passing them on
    // would rebuild half the tree here and again at the next `cargo run`.
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .args(["build", "--release"])
        .args(targets)
        .current_dir(manifest)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

/// Where cargo builds: `CARGO_TARGET_DIR`, else `target/` beside the manifest.
pub fn target_dir(manifest: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir().map_or(dir.clone(), |cwd| cwd.join(dir))
            }
        }
        None => manifest.join("target"),
    }
}
