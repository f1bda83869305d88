//! Background mounts: `hf-mount start` runs the foreground mount command as a
//! detached process (its stderr in a log file), waits until the mount is ready
//! or has failed, and records it in a pid file; `status` lists the records and
//! marks dead ones; `stop` unmounts (SIGTERM, bounded wait) and removes the record.
//!
//! State lives under `$HF_MOUNT_HOME` (default `~/.hf-mount`): `pids/` and `logs/`,
//! one file each per mountpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How long `start` waits for the mount to come up (the source probe has its own deadline).
const START_WAIT: Duration = Duration::from_secs(60);
/// How long `stop` waits for pending work after SIGTERM before killing (the mount drains its
/// uploads for `--flush-shutdown-timeout-ms`, 30 s by default, then leaves the rest in its journal).
const STOP_WAIT: Duration = Duration::from_secs(60);

/// One background mount, as recorded in its pid file.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Record {
    pub pid: u32,
    pub source: String,
    pub revision: Option<String>,
    pub backend: String,
    pub mountpoint: PathBuf,
    pub started_unix: u64,
    pub log: PathBuf,
}

/// Where pid and log files live.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("HF_MOUNT_HOME") {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join(".hf-mount")
}

/// A file name for a mountpoint: its path with `/` replaced, readable in `ls`.
pub(crate) fn slug(mountpoint: &Path) -> String {
    let s: String = mountpoint
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    if s.is_empty() {
        "root".into()
    } else {
        s
    }
}

fn pid_file(mountpoint: &Path) -> PathBuf {
    home().join("pids").join(format!("{}.json", slug(mountpoint)))
}

/// Whether the process exists and is not a zombie (a dead daemon whose parent has not reaped it).
fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid as i32, 0) } != 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Starts `hf-mount <backend> ARGS…` in the background; returns once the mount is ready,
/// or fails with the mount's own error.
pub fn start(
    backend: &str,
    args: &[String],
    source: &str,
    revision: Option<String>,
    mountpoint: &Path,
) -> anyhow::Result<Record> {
    let mountpoint =
        std::fs::canonicalize(mountpoint).with_context(|| format!("mountpoint {}", mountpoint.display()))?;
    let pid_path = pid_file(&mountpoint);
    if let Some(old) = read_record(&pid_path) {
        if alive(old.pid) {
            anyhow::bail!(
                "{} is already mounted by hf-mount (pid {}); `hf-mount stop {}` first",
                mountpoint.display(),
                old.pid,
                mountpoint.display()
            );
        }
        let _ = std::fs::remove_file(&pid_path); // stale
    }
    let logs = home().join("logs");
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(home().join("pids"))?;
    let log = logs.join(format!("{}.log", slug(&mountpoint)));
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let offset = log_file.metadata()?.len();
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg(backend).args(args).stdin(Stdio::null()).stdout(log_file.try_clone()?).stderr(log_file);
    // Detach: a new session, so the mount outlives the shell that started it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount process")?;
    let record = Record {
        pid: child.id(),
        source: source.to_string(),
        revision,
        backend: backend.to_string(),
        mountpoint: mountpoint.clone(),
        started_unix: now_unix(),
        log: log.clone(),
    };
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = text
                .get(offset as usize..)
                .unwrap_or("")
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            anyhow::bail!(
                "the mount failed ({status}): {}",
                if tail.is_empty() { "see ".to_string() + &log.display().to_string() } else { tail }
            );
        }
        if crate::cli::is_mounted(&mountpoint) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the mount did not come up within {START_WAIT:?}; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&pid_path, serde_json::to_vec_pretty(&record)?)?;
    Ok(record)
}

fn read_record(path: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Every recorded mount, with whether it is still alive.
pub fn list() -> Vec<(Record, bool)> {
    let Ok(dir) = std::fs::read_dir(home().join("pids")) else { return Vec::new() };
    let mut out: Vec<(Record, bool)> = dir
        .filter_map(|e| read_record(&e.ok()?.path()))
        .map(|r| {
            let ok = alive(r.pid) && crate::cli::is_mounted(&r.mountpoint);
            (r, ok)
        })
        .collect();
    out.sort_by(|a, b| a.0.mountpoint.cmp(&b.0.mountpoint));
    out
}

/// `hf-mount status`: one line per mount.
pub fn status_text() -> String {
    let rows = list();
    if rows.is_empty() {
        return "no hf-mount mounts\n".into();
    }
    let mut out = format!(
        "{:<8} {:<6} {:<8} {:<10} {:<40} {:<16} {:<24} {}\n",
        "PID", "STATE", "BACKEND", "UPTIME", "SOURCE", "PENDING", "CACHE HIT/DISK/MISS", "MOUNTPOINT"
    );
    for (r, ok) in rows {
        let up = now_unix().saturating_sub(r.started_unix);
        let uptime = format!("{}h{:02}m{:02}s", up / 3600, up / 60 % 60, up % 60);
        let source = match &r.revision {
            Some(rev) => format!("{}@{rev}", r.source),
            None => r.source.clone(),
        };
        // Pending uploads, from the mount itself (its control socket).
        let answer = ok
            .then(|| crate::control::ask(&r.mountpoint, crate::control::Request::Status, Duration::from_secs(2)).ok())
            .flatten();
        let pending = match &answer {
            None if !ok => "-".to_string(),
            None => "?".to_string(),
            Some(a) => match &a.status {
                Some(s) if !s.failed.is_empty() => format!("{} ({} failed)", s.pending, s.failed.len()),
                Some(s) => s.pending.to_string(),
                None => "read-only".to_string(),
            },
        };
        let cache = match answer.as_ref().and_then(|a| a.cache.as_ref()) {
            Some(c) => format!("{}/{}/{}", c.mem_hits, c.disk_hits, c.misses),
            None => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<8} {:<6} {:<8} {:<10} {:<40} {:<16} {:<24} {}\n",
            r.pid,
            if ok { "alive" } else { "dead" },
            r.backend,
            uptime,
            source,
            pending,
            cache,
            r.mountpoint.display()
        ));
    }
    out
}

/// `hf-mount stop MOUNTPOINT`: unmount cleanly (bounded), clean up a dead one, remove the record.
pub fn stop(mountpoint: &Path) -> anyhow::Result<()> {
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let path = pid_file(&canon);
    let record =
        read_record(&path).ok_or_else(|| anyhow::anyhow!("no hf-mount mount is recorded at {}", canon.display()))?;
    if alive(record.pid) {
        // SAFETY: plain signals to the recorded process.
        unsafe { libc::kill(record.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_WAIT;
        while alive(record.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(record.pid) {
            tracing::warn!("pid {} did not stop within {STOP_WAIT:?}; killing it", record.pid);
            unsafe { libc::kill(record.pid as i32, libc::SIGKILL) };
        }
    }
    if crate::cli::is_mounted(&canon) {
        // A daemon that died leaves its mount behind ("transport endpoint is not connected").
        let fuse = Command::new("fusermount3").arg("-u").arg(&canon).status().map(|s| s.success()).unwrap_or(false);
        if !fuse {
            let _ = Command::new("umount").arg("-l").arg(&canon).status();
        }
    }
    std::fs::remove_file(&path)?;
    anyhow::ensure!(!crate::cli::is_mounted(&canon), "{} is still mounted", canon.display());
    Ok(())
}
