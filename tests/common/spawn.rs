//! Starting a mount binary as a child process (shared by tests and benchmarks).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Spawns a mount binary and returns once it announced "mounted at" on stderr (which
/// stays piped; the mount writes little more unless it fails).
pub fn spawn_mounted(cmd: &mut Command) -> Child {
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("mounted at"), "{line}");
    child
}
