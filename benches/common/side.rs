//! Side by side with the public hf-mount: the same workload through our `hf-mount-fuse` and
//! the peer's (the binary `HF_MOUNT_PEER_FUSE` names, e.g. `../shared/peer/hf-mount-fuse`),
//! each its own process on the same emulator, default flags plus a `--cache-dir` of its own,
//! in alternating rounds; every row is the median with min–max and the ratio ours/peer.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a mount may take to appear, or to go away after an unmount.
const MOUNT_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tool {
    Ours,
    Peer,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Ours => "hf-mount (ours)",
            Tool::Peer => "public hf-mount",
        }
    }
}

/// The peer's binary, or why there is none (the side-by-side section is then skipped).
pub fn peer_binary() -> Result<PathBuf, String> {
    let Some(p) = std::env::var_os("HF_MOUNT_PEER_FUSE") else {
        return Err("HF_MOUNT_PEER_FUSE is not set (e.g. HF_MOUNT_PEER_FUSE=../shared/peer/hf-mount-fuse)".into());
    };
    let p = PathBuf::from(p);
    let p = std::fs::canonicalize(&p).map_err(|e| format!("HF_MOUNT_PEER_FUSE={}: {e}", p.display()))?;
    Ok(p)
}

/// Rounds of each side-by-side workload (`BENCH_ROUNDS`, default 5).
pub fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

/// The order of the two tools in round `r`: alternating, so neither always runs first.
pub fn order(r: usize) -> [Tool; 2] {
    if r.is_multiple_of(2) {
        [Tool::Ours, Tool::Peer]
    } else {
        [Tool::Peer, Tool::Ours]
    }
}

/// What a mount is started with; both tools take the same flags, in their own places.
#[derive(Clone, Copy)]
pub struct Spec<'a> {
    pub ours: &'a Path,
    pub peer: &'a Path,
    pub endpoint: &'a str,
    pub token: Option<&'a str>,
    /// `repo` or `bucket`.
    pub kind: &'a str,
    pub id: &'a str,
}

/// A FUSE mount of either tool, unmounted (and its process reaped) when dropped.
pub struct Mounted {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// From spawn until the mountpoint answered `stat` as a mount.
    pub ready: Duration,
    pub tool: Tool,
}

impl Spec<'_> {
    /// Starts `tool` on a new mountpoint with `cache` as its cache dir and `extra` flags; returns
    /// once the kernel lists the mount and its root answers.
    pub fn mount(&self, tool: Tool, cache: &Path, extra: &[&str]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        let mut flags: Vec<String> = vec!["--hub-endpoint".into(), self.endpoint.into()];
        if let Some(t) = self.token {
            flags.extend(["--hf-token".into(), t.into()]);
        }
        flags.extend(["--cache-dir".into(), cache.display().to_string()]);
        flags.extend(extra.iter().map(|s| s.to_string()));
        let target = [self.kind.to_string(), self.id.to_string(), dir.path().display().to_string()];
        let mut cmd = match tool {
            // Ours takes its flags after the source; the peer's clap wants them before it.
            Tool::Ours => {
                let mut c = Command::new(self.ours);
                c.args(&target).args(&flags);
                c
            }
            Tool::Peer => {
                let mut c = Command::new(self.peer);
                c.args(&flags).args(&target);
                c
            }
        };
        cmd.env_remove("HF_TOKEN").env_remove("HF_ENDPOINT").stdout(Stdio::null()).stderr(Stdio::null());
        let t = Instant::now();
        let mut child = cmd.spawn().unwrap();
        loop {
            if is_mounted(dir.path()) && std::fs::metadata(dir.path()).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{} exited ({status}) before it mounted", tool.name());
            }
            assert!(t.elapsed() < MOUNT_LIMIT, "{} did not mount within {MOUNT_LIMIT:?}", tool.name());
            std::thread::sleep(Duration::from_millis(1));
        }
        Mounted { child: Some(child), ready: t.elapsed(), dir, tool }
    }
}

impl Mounted {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Unmounts (both tools flush what they hold and exit) and waits for the process.
    pub fn unmount(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("fusermount3").arg("-u").arg(self.dir.path()).stderr(Stdio::null()).status();
        let t = Instant::now();
        while child.try_wait().ok().flatten().is_none() && t.elapsed() < MOUNT_LIMIT {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        if is_mounted(self.dir.path()) {
            let _ = Command::new("fusermount3").arg("-uz").arg(self.dir.path()).status();
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(target.as_str())))
}

/// Page cache dropped (clean pages), so the next read comes from where the tool keeps its bytes.
pub fn drop_caches() {
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop_caches needs root");
}

/// How a row's figures compare: higher is better (rates) or lower is (times).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One workload: every round's figure for each tool, and a note (baselines, targets, counts).
pub struct Row {
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    pub ours: Vec<f64>,
    pub peer: Vec<f64>,
    pub note: String,
}

impl Row {
    pub fn new(label: &str, unit: &'static str, better: Better) -> Row {
        Row { label: label.into(), unit, better, ours: vec![], peer: vec![], note: String::new() }
    }

    pub fn push(&mut self, tool: Tool, v: f64) {
        match tool {
            Tool::Ours => self.ours.push(v),
            Tool::Peer => self.peer.push(v),
        }
    }

    /// How many times better ours is (> 1: ours wins), from the medians.
    pub fn advantage(&self) -> f64 {
        let (o, p) = (stats(&self.ours).0, stats(&self.peer).0);
        match self.better {
            Better::Higher => o / p,
            Better::Lower => p / o,
        }
    }
}

/// (median, min, max).
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn figure(v: &[f64], unit: &str) -> String {
    let (m, lo, hi) = stats(v);
    let f = |x: f64| {
        if x >= 100.0 {
            format!("{x:.0}")
        } else if x >= 10.0 {
            format!("{x:.1}")
        } else {
            format!("{x:.2}")
        }
    };
    format!("{} {unit} ({}–{})", f(m), f(lo), f(hi))
}

/// The rows as a Markdown table (what the README pastes), also written to the file
/// `SIDE_BY_SIDE_OUT` names, if any (appended, so two benches fill one file).
pub fn print_table(title: &str, rows: &[Row]) {
    let mut out =
        format!("{title}\n\n| Workload | ours | public hf-mount | ours vs peer | notes |\n|---|---|---|---|---|\n");
    for r in rows {
        let adv = r.advantage();
        let sense = match r.better {
            Better::Higher => "",
            Better::Lower => " (time)",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {adv:.2}×{sense} | {} |\n",
            r.label,
            figure(&r.ours, r.unit),
            figure(&r.peer, r.unit),
            r.note
        ));
    }
    println!("\n{out}");
    if let Some(path) = std::env::var_os("SIDE_BY_SIDE_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        writeln!(f, "{out}").unwrap();
    }
}
