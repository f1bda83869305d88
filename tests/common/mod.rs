//! Shared helpers for the mount tests: an emulator with seeded fixtures and
//! real FUSE mounts made in-process through the same code as the CLI.
#![allow(dead_code)]

pub mod model;
pub mod nfs;
pub mod spawn;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use hf_hub_emulator::{Emulator, EmulatorConfig};
use hf_mount::cli::{prepare, Prepared};
use hf_mount::config::MountArgs;
use hf_mount::frontends::fuse::{self, FuseMount};

pub const WRITE_TOKEN: &str = "hf_alice_write";
pub const READ_TOKEN: &str = "hf_alice_read";

/// `<cargo's test tmp dir>/cache-<pid>`, for mounts started without `--cache-dir`; the
/// directories of test processes no longer running are removed on the way.
fn test_cache_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hf-mount-test-cache");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let pid = e.file_name().to_string_lossy().strip_prefix("cache-").and_then(|p| p.parse::<i32>().ok());
            // SAFETY: signal 0 only asks whether the process exists.
            if pid.is_some_and(|p| p != std::process::id() as i32 && unsafe { libc::kill(p, 0) } != 0) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    root.join(format!("cache-{}", std::process::id()))
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The files of the main fixture repo: a Xet model, git blobs, awkward names, a subfolder.
pub fn fixture_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("config.json", br#"{"model_type": "tiny", "hidden": 8}"#.to_vec()),
        ("model.safetensors", bytes(1, 5 * 1024 * 1024 + 333)),
        ("README.md", b"# tiny\n\nA fixture with a needle: hf-mount-needle-42\n".to_vec()),
        ("nested dir/notes #1 100%.txt", b"hash, percent and spaces\n".to_vec()),
        ("nested dir/deeper/\u{fc}nic\u{f6}de.txt", "unicode \u{2713}\n".as_bytes().to_vec()),
        ("onnx/model.onnx", bytes(2, 700_000)),
        ("onnx/config.json", b"{\"onnx\": true}\n".to_vec()),
    ]
}

pub fn write_files(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (rel, content) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// An emulator on its own runtime, with `alice` tokens.
pub struct Hub {
    pub rt: tokio::runtime::Runtime,
    pub hub: Option<Emulator>,
    pub fixture: tempfile::TempDir,
}

impl Hub {
    /// Starts an emulator with `alice/tiny` (public) seeded from the fixture.
    pub fn start() -> Self {
        // SAFETY: set before the xet runtime reads them; tests in one binary set the same values.
        unsafe {
            std::env::set_var("HF_XET_CLIENT_RETRY_MAX_ATTEMPTS", "2");
            std::env::set_var("HF_XET_CLIENT_RETRY_BASE_DELAY", "50ms");
            // Mounts started without --cache-dir (the binaries' own tests) cache in this test
            // process's own directory under cargo's temporary dir for tests.
            std::env::set_var("HF_MOUNT_CACHE_DIR", test_cache_dir());
        }
        // Warnings of the emulator (a CAS backend failure says why) and of in-process mounts go
        // to the test's captured output, shown when it fails; `HF_MOUNT_TEST_LOG=<filter>` sets
        // another filter.
        let filter = std::env::var("HF_MOUNT_TEST_LOG").unwrap_or_else(|_| "hf_hub_emulator=warn,hf_mount=warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let hub = rt
            .block_on(Emulator::start_temp_with(|c: EmulatorConfig| {
                c.token("alice", WRITE_TOKEN, true).token("alice", READ_TOKEN, false)
            }))
            .unwrap();
        let fixture = tempfile::tempdir().unwrap();
        write_files(fixture.path(), &fixture_files());
        rt.block_on(hub.seed_repo("alice/tiny", fixture.path(), false)).unwrap();
        Self { rt, hub: Some(hub), fixture }
    }

    pub fn emulator(&self) -> &Emulator {
        self.hub.as_ref().unwrap()
    }

    pub fn endpoint(&self) -> String {
        self.emulator().endpoint()
    }

    pub fn seed_repo(&self, spec: &str, files: &[(&str, Vec<u8>)], private: bool) -> String {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), files);
        let r = self.rt.block_on(self.emulator().seed_repo(spec, dir.path(), private)).unwrap();
        r.commit.unwrap_or_default()
    }

    pub fn seed_bucket(&self, id: &str, files: &[(&str, Vec<u8>)]) {
        let dir = tempfile::tempdir().unwrap();
        write_files(dir.path(), files);
        self.rt.block_on(self.emulator().seed_bucket(id, dir.path(), false)).unwrap();
    }

    /// An HTTP call against the emulator (for commits and faults).
    pub fn http<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Posts an NDJSON commit (`lines`, header first) to `main` of `repo`, `query` appended
    /// (e.g. `?create_pr=1`), with the write token; returns the HTTP status.
    pub fn commit(&self, repo: &str, query: &str, lines: &[String]) -> reqwest::StatusCode {
        let url = format!("{}/api/models/{repo}/commit/main{query}", self.endpoint());
        let body = lines.join("\n");
        self.http(async {
            reqwest::Client::new().post(url).bearer_auth(WRITE_TOKEN).body(body).send().await.unwrap().status()
        })
    }
}

impl Hub {
    /// The bucket's files as the Hub has them: path → (size, Xet hash).
    pub fn bucket_files(&self, id: &str) -> std::collections::BTreeMap<String, (u64, String)> {
        self.emulator().store().read(|st| {
            st.buckets
                .get(id)
                .map(|b| b.files.iter().map(|(p, f)| (p.clone(), (f.size, f.xet_hash.clone()))).collect())
                .unwrap_or_default()
        })
    }

    /// The bytes of a bucket file on the Hub (through the CAS), or `None` when it has no such file.
    pub fn bucket_bytes(&self, id: &str, path: &str) -> Option<Vec<u8>> {
        let (size, hash) = self.bucket_files(id).get(path).cloned()?;
        Some(self.rt.block_on(self.emulator().cas().read_file(&hash, 0, size)).unwrap().to_vec())
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, id: &str) {
        self.emulator().store().create_bucket(id, false).unwrap();
    }

    /// Requests (and body bytes) per route class so far.
    pub fn traffic(&self, class: hf_hub_emulator::RouteClass) -> hf_hub_emulator::Traffic {
        self.emulator().faults().traffic_of(class)
    }
}

/// Waits until `cond` holds, failing with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(h) = self.hub.take() {
            self.rt.block_on(h.stop());
        }
    }
}

#[derive(Parser)]
struct TestCli {
    #[command(flatten)]
    args: MountArgs,
}

/// A real FUSE mount, unmounted on drop.
pub struct Mounted {
    pub mount: Option<FuseMount>,
    pub prepared: Option<Prepared>,
    pub dir: tempfile::TempDir,
    /// The cache dir when the test gave none.
    pub cache: Option<tempfile::TempDir>,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn engine(&self) -> &hf_mount::engine::Engine {
        self.mount.as_ref().unwrap().engine()
    }

    pub fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.prepared.as_ref().unwrap().runtime.block_on(f)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            if m.unmount().is_err() {
                let _ = std::process::Command::new("fusermount3").arg("-u").arg(self.dir.path()).status();
            }
        }
        if let Some(p) = self.prepared.take() {
            p.runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Mounts with CLI-style arguments: `["repo", "alice/tiny", "--revision", "v1", …]` (mountpoint added).
pub fn mount(hub: &Hub, args: &[&str]) -> Mounted {
    try_mount(hub, args).unwrap()
}

pub fn try_mount(hub: &Hub, args: &[&str]) -> anyhow::Result<Mounted> {
    let dir = tempfile::Builder::new().prefix("hf-mount-test-").tempdir()?;
    let endpoint = hub.endpoint();
    let mut argv: Vec<String> = vec!["test".into(), args[0].into(), args[1].into(), dir.path().display().to_string()];
    argv.extend(args[2..].iter().map(|s| s.to_string()));
    argv.extend(["--hub-endpoint".to_string(), endpoint]);
    if !args.contains(&"--read-timeout-ms") {
        argv.extend(["--read-timeout-ms".into(), "10000".into()]);
    }
    let cache = (!args.contains(&"--cache-dir")).then(|| tempfile::Builder::new().prefix("hf-mount-cache-").tempdir());
    let cache = cache.transpose()?;
    if let Some(c) = &cache {
        argv.extend(["--cache-dir".into(), c.path().display().to_string()]);
    }
    let cli = TestCli::try_parse_from(&argv)?;
    let prepared = prepare(&cli.args)?;
    let m = fuse::mount(
        prepared.engine.clone(),
        prepared.runtime.handle().clone(),
        &prepared.mountpoint,
        prepared.options.clone(),
    )?;
    Ok(Mounted { mount: Some(m), prepared: Some(prepared), dir, cache })
}

/// Runs a shell command, returning (success, stdout, stderr).
pub fn sh(cmd: &str) -> (bool, String, String) {
    let out = std::process::Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Reads `len` bytes at `off` with pread.
/// Writes `data` to a new `path` and closes it, answering what close(2) answered (std's
/// `File` drops its close error, which is where a mount reports a failed commit).
pub fn write_and_close(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    close_checked(f)
}

/// Closes `f`, answering what `close(2)` said (dropping a `File` ignores it).
pub fn close_checked(f: std::fs::File) -> std::io::Result<()> {
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: the fd was just taken from the file, and is closed once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn pread(f: &std::fs::File, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mounted({})", self.dir.path().display())
    }
}

/// Parses CLI-style arguments (argv[0] included) into mount options.
pub fn parse_args(argv: &[String]) -> MountArgs {
    TestCli::try_parse_from(argv).unwrap().args
}
