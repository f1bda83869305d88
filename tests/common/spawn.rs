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
    child
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
