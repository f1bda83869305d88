//! Starting a mount binary as a child process (shared by tests and benchmarks).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Spawns a mount binary and returns once it announced "mounted at" on stderr (which
/// stays piped; the mount writes little more unless it fails). Log lines before it are skipped.
pub fn spawn_mounted(cmd: &mut Command) -> Child {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.as_mut().unwrap());
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).unwrap();
        assert!(n > 0, "the mount exited before it was ready: {seen:?}");
        if line.contains("mounted at") {
            break;
        }
        seen.push(line);
    }
    // Keep draining: a mount that logs more than a pipe holds must never block on stderr.
    let rest = child.stderr.take().expect("piped");
    std::thread::spawn(move || std::io::copy(&mut BufReader::new(rest), &mut std::io::sink()));
    child
}

/// Like [`spawn_mounted`], with everything the mount writes to stderr kept in `log`.
pub fn spawn_mounted_logged(cmd: &mut Command, log: &std::path::Path) -> Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let start = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let mut child = cmd.stderr(file).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read(log).unwrap_or_default();
        if String::from_utf8_lossy(&text[start as usize..]).contains("mounted at") {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the mount exited ({status}) before it was ready:\n{}",
                String::from_utf8_lossy(&text[start as usize..])
            );
        }
        assert!(std::time::Instant::now() < deadline, "the mount did not come up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Spawns `hf-mount-nfs … --serve-only` (stdout piped) and returns once it printed the
/// address it serves on: the child and its port. Later output is drained.
pub fn spawn_serving(cmd: &mut Command) -> (Child, u16) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let port = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the server exited before serving");
        if let Some((_, addr)) = line.trim().split_once(" over NFSv3 at ") {
            break addr.rsplit_once(':').unwrap().1.parse().unwrap();
        }
    };
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, port)
}

/// A child process killed (and its mount lazily unmounted) if a test fails before stopping it.
pub struct Guard {
    pub child: Option<Child>,
    pub mountpoint: Option<std::path::PathBuf>,
}

impl Guard {
    pub fn new(child: Child, mountpoint: Option<&std::path::Path>) -> Self {
        Self { child: Some(child), mountpoint: mountpoint.map(|p| p.to_path_buf()) }
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("not taken")
    }

    /// Takes the child: the caller stops it (and the guard no longer unmounts anything).
    pub fn take(&mut self) -> Child {
        self.mountpoint = None;
        self.child.take().expect("not taken")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(m) = &self.mountpoint {
            let _ = Command::new("fusermount3").arg("-uz").arg(m).stderr(Stdio::null()).status();
        }
    }
}
