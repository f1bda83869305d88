//! Starting a mount binary as a child process (shared by tests and benchmarks).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// How long a mount or server may take to come up.
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Spawns a mount binary and returns once it announced "mounted at" on stderr (which
/// stays piped and drained; the mount writes little more unless it fails). Log lines
/// before it are skipped. A child that exits or stays silent past the deadline fails the
/// caller and is killed.
pub fn spawn_mounted(cmd: &mut Command) -> Child {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let err = child.stderr.take().expect("piped");
    wait_for_line(Guard::new(child, None), BufReader::new(err), |l| l.contains("mounted at").then_some(())).0
}

/// Reads `out` on a thread of its own (draining it to the end) until `ready` picks a line;
/// the guard kills the child if that does not happen within [`READY_DEADLINE`].
fn wait_for_line<T: Send + 'static>(
    mut guard: Guard,
    out: impl BufRead + Send + 'static,
    ready: impl Fn(&str) -> Option<T> + Send + 'static,
) -> (Child, T) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut lines = out.lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(v) = ready(&line) {
                let _ = tx.send(Ok(v));
                // Keep draining: a child that writes more than a pipe holds must never block.
                lines.for_each(drop);
                return;
            }
            seen.push(line);
        }
        let _ = tx.send(Err(seen));
    });
    match rx.recv_timeout(READY_DEADLINE) {
        Ok(Ok(v)) => (guard.take(), v),
        Ok(Err(seen)) => panic!("the child exited before it was ready: {seen:?}"),
        // The guard, dropped as the panic unwinds, kills the child.
        Err(_) => panic!("the child was not ready within {READY_DEADLINE:?}"),
    }
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
/// address it serves on: the child and its port. Later output is drained; a child that
/// exits or stays silent past the deadline fails the caller and is killed.
pub fn spawn_serving(cmd: &mut Command) -> (Child, u16) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    wait_for_line(Guard::new(child, None), out, |line| {
        let (_, addr) = line.trim().split_once(" over NFSv3 at ")?;
        addr.rsplit_once(':')?.1.parse::<u16>().ok()
    })
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
