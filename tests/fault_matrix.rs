//! The fault matrix: each route class of the emulator's fault injection × each fault kind ×
//! each operation, on FUSE and on NFS. Every cell runs on a fresh mount of its own bucket
//! and checks the promise: the operation ends within its deadline + 1 s (or succeeds after
//! retries), reads are byte-exact or fail with EIO, the mount keeps answering other
//! requests meanwhile, and once the fault is cleared every acknowledged write is on the Hub
//! whole (and nothing half-written ever is).
//!
//! `cargo test --test fault_matrix -- --nocapture` runs the short form (a sample of cells,
//! as CI does); `FAULT_MATRIX=full` runs every cell and prints the table the README shows
//! (`scripts/fault-matrix.sh` regenerates it).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{mount, Hub, WRITE_TOKEN};
use hf_hub_emulator::{FaultKind, FaultSpec, RouteClass};

/// The mounts' deadline for one Hub/CAS wait.
const DEADLINE_MS: u64 = 1500;
/// A close or fsync waits for the commit: 8 deadlines (the engine's rule).
const COMMIT_DEADLINE_MS: u64 = DEADLINE_MS * 8;
const BIG: usize = 3 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    ColdRead,
    CachedRead,
    Stat,
    Readdir,
    StreamingWrite,
    AdvancedWrite,
    Rename,
    Unlink,
    Mkdir,
}

const OPS: [Op; 9] = [
    Op::ColdRead,
    Op::CachedRead,
    Op::Stat,
    Op::Readdir,
    Op::StreamingWrite,
    Op::AdvancedWrite,
    Op::Rename,
    Op::Unlink,
    Op::Mkdir,
];

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::ColdRead => "cold read",
            Op::CachedRead => "cached read",
            Op::Stat => "stat",
            Op::Readdir => "readdir",
            Op::StreamingWrite => "write+close",
            Op::AdvancedWrite => "adv. write+fsync",
            Op::Rename => "rename",
            Op::Unlink => "unlink",
            Op::Mkdir => "mkdir",
        }
    }

    /// The operation's deadline: each of its requests may wait one deadline (an operation
    /// is a path walk, then its own request: up to three), a commit eight.
    fn deadline(self) -> Duration {
        match self {
            Op::StreamingWrite | Op::AdvancedWrite => Duration::from_millis(COMMIT_DEADLINE_MS + 2 * DEADLINE_MS),
            _ => Duration::from_millis(3 * DEADLINE_MS),
        }
    }

    fn writes(self) -> bool {
        matches!(self, Op::StreamingWrite | Op::AdvancedWrite | Op::Rename | Op::Unlink | Op::Mkdir)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Frontend {
    Fuse,
    Nfs,
}

fn kinds() -> Vec<(&'static str, FaultKind)> {
    vec![
        ("latency 300 ms", FaultKind::Latency { ms: 300 }),
        ("500", FaultKind::Error { status: 500 }),
        ("503", FaultKind::Error { status: 503 }),
        ("429 RateLimit 1 s", FaultKind::RateLimit { reset_secs: 1 }),
        ("stall", FaultKind::Stall),
        ("reset", FaultKind::Reset),
        ("expired token", FaultKind::ExpiredToken),
        ("throttle 256 KB/s", FaultKind::Throttle { bytes_per_sec: 256 << 10 }),
        ("body cut short", FaultKind::Truncate { keep_bytes: 100 }),
        ("corrupt body", FaultKind::Corrupt),
        ("malformed JSON", FaultKind::Replace { status: 200, body: "{\"oops\": [".into(), headers: Vec::new() }),
        // Once, at the first request of the class (see `run_cell`).
        ("restart 500 ms", FaultKind::Restart { down_ms: 500 }),
    ]
}

const CLASSES: [RouteClass; 7] = [
    RouteClass::HubMetadata,
    RouteClass::Tokens,
    RouteClass::HubWrite,
    RouteClass::BucketBatch,
    RouteClass::CasReconstruction,
    RouteClass::CasData,
    RouteClass::CasUpload,
];

/// What one cell showed.
#[derive(Debug)]
enum Outcome {
    /// The operation succeeded (after retries, if the fault hit it).
    Ok(Duration),
    /// It failed with this errno, within its deadline.
    Failed(i32, Duration),
    /// The promise was broken.
    Broken(String),
}

impl Outcome {
    fn cell(&self) -> String {
        match self {
            Outcome::Ok(d) => format!("ok {:.1}s", d.as_secs_f64()),
            Outcome::Failed(e, d) => format!("{} {:.1}s", errno_name(*e), d.as_secs_f64()),
            Outcome::Broken(why) => format!("**BROKEN: {why}**"),
        }
    }
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EIO => "EIO",
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENOSPC => "ENOSPC",
        libc::EAGAIN => "EAGAIN",
        libc::ESTALE => "ESTALE",
        _ => "errno?",
    }
}

/// The errnos a failing operation may answer under a Hub fault.
fn documented(e: i32) -> bool {
    matches!(e, libc::EIO | libc::EACCES | libc::EAGAIN)
}

/// The files every cell's bucket starts with.
fn seed(hub: &Hub, id: &str) -> Vec<u8> {
    let big = common::bytes(11, BIG);
    hub.seed_bucket(
        id,
        &[
            ("big.bin", big.clone()),
            ("keep.txt", b"keep\n".to_vec()),
            ("d/a.txt", b"a".to_vec()),
            ("old.txt", b"old".to_vec()),
        ],
    );
    big
}

/// The operations as each frontend performs them; errors as errnos.
trait Fs {
    fn read(&self, path: &str) -> Result<Vec<u8>, i32>;
    fn stat(&self, path: &str) -> Result<u64, i32>;
    fn readdir(&self, path: &str) -> Result<Vec<String>, i32>;
    /// Writes a new file and closes it (NFS: FILE_SYNC writes and a COMMIT).
    fn write_close(&self, path: &str, data: &[u8]) -> Result<(), i32>;
    /// Writes a new file and fsyncs it.
    fn write_fsync(&self, path: &str, data: &[u8]) -> Result<(), i32>;
    fn rename(&self, from: &str, to: &str) -> Result<(), i32>;
    fn unlink(&self, path: &str) -> Result<(), i32>;
    fn mkdir(&self, path: &str) -> Result<(), i32>;
    /// Waits until everything pending is committed.
    fn sync(&self) -> Result<(), String>;
}

/// [`Fs::sync`] on an engine, from outside its runtime.
/// A path that failed during the fault is retried by the flusher (with backoff): `sync`
/// again until everything is committed, for up to 30 s.
fn sync_on(rt: &tokio::runtime::Runtime, engine: &hf_mount::engine::Engine) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), engine.sync_all()).await }) {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(failed))) => format!("not committed: {failed:?}"),
            Ok(Err(e)) => format!("sync: {e}"),
            Err(_) => "sync did not finish".into(),
        };
        if Instant::now() >= until {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn io_errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

struct FuseFs(common::Mounted);

impl Fs for FuseFs {
    fn read(&self, path: &str) -> Result<Vec<u8>, i32> {
        std::fs::read(self.0.p(path)).map_err(io_errno)
    }
    fn stat(&self, path: &str) -> Result<u64, i32> {
        std::fs::metadata(self.0.p(path)).map(|m| m.len()).map_err(io_errno)
    }
    fn readdir(&self, path: &str) -> Result<Vec<String>, i32> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(self.0.p(path)).map_err(io_errno)? {
            v.push(e.map_err(io_errno)?.file_name().to_string_lossy().into_owned());
        }
        Ok(v)
    }
    fn write_close(&self, path: &str, data: &[u8]) -> Result<(), i32> {
        common::write_and_close(&self.0.p(path), data).map_err(io_errno)
    }
    fn write_fsync(&self, path: &str, data: &[u8]) -> Result<(), i32> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.p(path)).map_err(io_errno)?;
        f.write_all(data).map_err(io_errno)?;
        f.sync_all().map_err(io_errno)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), i32> {
        std::fs::rename(self.0.p(from), self.0.p(to)).map_err(io_errno)
    }
    fn unlink(&self, path: &str) -> Result<(), i32> {
        std::fs::remove_file(self.0.p(path)).map_err(io_errno)
    }
    fn mkdir(&self, path: &str) -> Result<(), i32> {
        std::fs::create_dir(self.0.p(path)).map_err(io_errno)
    }
    fn sync(&self) -> Result<(), String> {
        sync_on(&self.0.prepared.as_ref().expect("mounted").runtime, self.0.engine())
    }
}

struct NfsFs {
    served: common::nfs::Served,
    conn: std::sync::Mutex<Option<common::nfs::Conn>>,
}

fn nfs_errno(s: nfs3_types::nfs3::nfsstat3) -> i32 {
    use nfs3_types::nfs3::nfsstat3::*;
    match s {
        NFS3ERR_NOENT => libc::ENOENT,
        NFS3ERR_ACCES | NFS3ERR_PERM => libc::EACCES,
        NFS3ERR_JUKEBOX => libc::EAGAIN,
        NFS3ERR_STALE => libc::ESTALE,
        NFS3ERR_NOSPC => libc::ENOSPC,
        _ => libc::EIO,
    }
}

impl NfsFs {
    /// Runs `f` on the connection, or on one of its own while another request holds it.
    fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut common::nfs::Conn) -> Result<T, nfs3_types::nfs3::nfsstat3>,
    ) -> Result<T, i32> {
        match self.conn.try_lock() {
            Ok(mut slot) => {
                let conn = slot.get_or_insert_with(|| self.served.connect());
                self.served.rt.block_on(f(conn)).map_err(nfs_errno)
            }
            Err(_) => {
                let mut conn = self.served.connect();
                self.served.rt.block_on(f(&mut conn)).map_err(nfs_errno)
            }
        }
    }

    fn parent_and_name(path: &str) -> (&str, &str) {
        path.rsplit_once('/').unwrap_or(("", path))
    }
}

impl Fs for NfsFs {
    fn read(&self, path: &str) -> Result<Vec<u8>, i32> {
        self.with(async |c| {
            let fh = common::nfs::lookup_path(c, path).await?;
            common::nfs::try_read_all(c, &fh).await
        })
    }
    fn stat(&self, path: &str) -> Result<u64, i32> {
        self.with(async |c| {
            let fh = common::nfs::lookup_path(c, path).await?;
            Ok(common::nfs::getattr(c, &fh).await?.size)
        })
    }
    fn readdir(&self, path: &str) -> Result<Vec<String>, i32> {
        self.with(async |c| {
            let fh = common::nfs::lookup_path(c, path).await?;
            Ok(common::nfs::try_list_all(c, &fh, 8192).await?.0)
        })
    }
    fn write_close(&self, path: &str, data: &[u8]) -> Result<(), i32> {
        Fs::write_fsync(self, path, data)
    }
    fn write_fsync(&self, path: &str, data: &[u8]) -> Result<(), i32> {
        let (dir, name) = Self::parent_and_name(path);
        self.with(async |c| {
            let d = common::nfs::lookup_path(c, dir).await?;
            let attrs =
                nfs3_types::nfs3::sattr3 { mode: nfs3_types::nfs3::Nfs3Option::Some(0o644), ..Default::default() };
            let fh = common::nfs::create(c, &d, name, nfs3_types::nfs3::createhow3::UNCHECKED(attrs)).await?;
            common::nfs::write(c, &fh, 0, data, nfs3_types::nfs3::stable_how::UNSTABLE).await?;
            common::nfs::commit(c, &fh).await.map(drop)
        })
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), i32> {
        let ((fd, fname), (td, tname)) = (Self::parent_and_name(from), Self::parent_and_name(to));
        self.with(async |c| {
            let f = common::nfs::lookup_path(c, fd).await?;
            let t = common::nfs::lookup_path(c, td).await?;
            common::nfs::rename(c, &f, fname, &t, tname).await
        })
    }
    fn unlink(&self, path: &str) -> Result<(), i32> {
        let (dir, name) = Self::parent_and_name(path);
        self.with(async |c| {
            let d = common::nfs::lookup_path(c, dir).await?;
            common::nfs::remove(c, &d, name).await
        })
    }
    fn mkdir(&self, path: &str) -> Result<(), i32> {
        let (dir, name) = Self::parent_and_name(path);
        self.with(async |c| {
            let d = common::nfs::lookup_path(c, dir).await?;
            common::nfs::mkdir(c, &d, name).await.map(drop)
        })
    }
    fn sync(&self) -> Result<(), String> {
        sync_on(&self.served.rt, self.served.server.as_ref().expect("serving").engine())
    }
}

fn open(hub: &Hub, fe: Frontend, id: &str, op: Op) -> Box<dyn Fs + Sync> {
    let t = DEADLINE_MS.to_string();
    let mut args = vec!["bucket", id, "--hf-token", WRITE_TOKEN, "--read-timeout-ms", &t, "--no-disk-cache"];
    args.extend(["--flush-shutdown-timeout-ms", "3000", "--metadata-ttl-ms", "0", "--flush-debounce-ms", "50"]);
    if op == Op::AdvancedWrite {
        args.push("--advanced-writes");
    }
    match fe {
        Frontend::Fuse => Box::new(FuseFs(mount(hub, &args))),
        Frontend::Nfs => Box::new(NfsFs { served: common::nfs::serve(hub, &args), conn: std::sync::Mutex::new(None) }),
    }
}

/// One cell: a fresh bucket and mount, the fault on while `op` runs (with a stat of a
/// known entry meanwhile, which must answer), then cleared, then the Hub checked.
fn run_cell(hub: &Hub, n: usize, fe: Frontend, class: RouteClass, kind: &FaultKind, op: Op) -> Outcome {
    let id = format!("alice/m{n}");
    let big = seed(hub, &id);
    let fs = open(hub, fe, &id, op);
    let fs = fs.as_ref();
    // Warm what the operation does not itself test: the root listed, keep.txt known.
    if fs.stat("keep.txt").is_err() || fs.readdir("").is_err() {
        return Outcome::Broken("the mount did not answer before the fault".into());
    }
    if op == Op::CachedRead && fs.read("big.bin").ok().as_deref() != Some(&big[..]) {
        return Outcome::Broken("the warm-up read failed".into());
    }
    let payload = common::bytes(n as u64, 200_000);
    // A restart is one event (the emulator down for a moment, then back), not a state.
    let spec = match kind {
        FaultKind::Restart { .. } => FaultSpec::new(class, kind.clone()).times(1),
        _ => FaultSpec::new(class, kind.clone()),
    };
    let rule = hub.emulator().faults().add(spec).unwrap();
    let t = Instant::now();
    // The other request: a stat of a name the mount knows, answered meanwhile (it may
    // revalidate; a revalidation that fails serves the cached attributes).
    let result: Result<Option<Vec<u8>>, i32> = std::thread::scope(|s| {
        let probe = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            let r = fs.stat("keep.txt");
            (r, t.elapsed())
        });
        let r = match op {
            Op::ColdRead | Op::CachedRead => fs.read("big.bin").map(Some),
            Op::Stat => fs.stat("old.txt").map(|_| None),
            Op::Readdir => fs.readdir("d").map(|_| None),
            Op::StreamingWrite => fs.write_close("new.bin", &payload).map(|_| None),
            Op::AdvancedWrite => fs.write_fsync("new.bin", &payload).map(|_| None),
            Op::Rename => fs.rename("old.txt", "renamed.txt").map(|_| None),
            Op::Unlink => fs.unlink("old.txt").map(|_| None),
            Op::Mkdir => fs.mkdir("newdir").map(|_| None),
        };
        let (probed, took) = probe.join().unwrap();
        if probed.is_err() && took > Duration::from_millis(DEADLINE_MS + 1000) {
            return Err(-1);
        }
        r
    });
    let took = t.elapsed();
    hub.emulator().faults().remove(rule);
    let outcome = match &result {
        Err(-1) => return Outcome::Broken("another request waited past its deadline".into()),
        _ if took > op.deadline() + Duration::from_secs(1) => {
            return Outcome::Broken(format!("took {:.1}s (deadline {:?})", took.as_secs_f64(), op.deadline()))
        }
        Ok(Some(bytes)) if bytes != &big => return Outcome::Broken("wrong bytes".into()),
        Ok(_) => Outcome::Ok(took),
        Err(e) if documented(*e) => Outcome::Failed(*e, took),
        Err(e) => return Outcome::Broken(format!("errno {e}")),
    };
    // Cleared: the mount answers, and what was acknowledged is committed, whole.
    if fs.read("keep.txt").ok().as_deref() != Some(b"keep\n") {
        common::wait_until(Duration::from_secs(3), "the mount answers again", || {
            fs.read("keep.txt").ok().as_deref() == Some(b"keep\n")
        });
    }
    if op.writes() {
        if let Err(why) = fs.sync() {
            if result.is_ok() {
                return Outcome::Broken(format!("acknowledged, then {why}"));
            }
        }
        let on_hub = |p: &str| hub.bucket_bytes(&id, p);
        let acked = result.is_ok();
        let bad = match op {
            // A failed write sequence may leave what landed before the failure (a prefix, as on
            // any file system: the create itself succeeded); anything else is torn.
            Op::StreamingWrite | Op::AdvancedWrite => match on_hub("new.bin") {
                Some(b) if b != payload && (acked || !payload.starts_with(&b)) => {
                    return Outcome::Broken(format!("a torn file on the Hub ({} of {} bytes)", b.len(), payload.len()))
                }
                None if acked => Some("an acknowledged write is not on the Hub"),
                _ => None,
            },
            Op::Rename
                if acked && (on_hub("renamed.txt").as_deref() != Some(b"old") || on_hub("old.txt").is_some()) =>
            {
                Some("an acknowledged rename is not on the Hub")
            }
            Op::Unlink if acked && on_hub("old.txt").is_some() => Some("an acknowledged unlink is not on the Hub"),
            _ => None,
        };
        if let Some(bad) = bad {
            return Outcome::Broken(bad.into());
        }
    }
    outcome
}

/// Which cells to run: every one (`FAULT_MATRIX=full`), or CI's sample: every class × kind
/// once, each on one operation and frontend picked in turn.
fn cells() -> Vec<(Frontend, RouteClass, (&'static str, FaultKind), Op)> {
    // `FAULT_MATRIX_ONLY="Fuse/Tokens/malformed JSON/write+close"`: the cells matching every
    // given part (frontend, class, fault, operation), out of the full matrix.
    if let Ok(only) = std::env::var("FAULT_MATRIX_ONLY") {
        let want: Vec<String> = only.split('/').map(str::to_string).collect();
        let mut out = Vec::new();
        for class in CLASSES {
            for kind in kinds() {
                for fe in [Frontend::Fuse, Frontend::Nfs] {
                    for op in OPS {
                        let parts =
                            [format!("{fe:?}"), format!("{class:?}"), kind.0.to_string(), op.label().to_string()];
                        if want.iter().zip(&parts).all(|(w, p)| w.is_empty() || w == p) {
                            out.push((fe, class, kind.clone(), op));
                        }
                    }
                }
            }
        }
        return out;
    }
    let full = std::env::var("FAULT_MATRIX").is_ok_and(|v| v == "full");
    let mut out = Vec::new();
    let mut i = 0usize;
    for class in CLASSES {
        for kind in kinds() {
            if full {
                for fe in [Frontend::Fuse, Frontend::Nfs] {
                    for op in OPS {
                        out.push((fe, class, kind.clone(), op));
                    }
                }
            } else {
                // Operations that use the class, in turn.
                let ops: Vec<Op> = match class {
                    RouteClass::HubMetadata => vec![Op::Stat, Op::Readdir, Op::Rename, Op::CachedRead],
                    RouteClass::Tokens | RouteClass::CasReconstruction | RouteClass::CasData => {
                        vec![Op::ColdRead, Op::CachedRead]
                    }
                    RouteClass::HubWrite | RouteClass::BucketBatch | RouteClass::CasUpload => {
                        vec![Op::StreamingWrite, Op::AdvancedWrite, Op::Unlink, Op::Mkdir]
                    }
                };
                let fe = if i.is_multiple_of(2) { Frontend::Fuse } else { Frontend::Nfs };
                out.push((fe, class, kind, ops[i % ops.len()]));
                i += 1;
            }
        }
    }
    out
}

#[test]
fn the_fault_matrix() {
    let hub = Hub::start();
    let cells = cells();
    let mut table: BTreeMap<(Frontend, RouteClass, String), BTreeMap<Op, String>> = BTreeMap::new();
    let mut broken = Vec::new();
    let started = Instant::now();
    for (n, (fe, class, (kind_name, kind), op)) in cells.iter().cloned().enumerate() {
        let outcome = run_cell(&hub, n, fe, class, &kind, op);
        eprintln!("{fe:?} {class:?} {kind_name} {}: {outcome:?}", op.label());
        if let Outcome::Broken(why) = &outcome {
            broken.push(format!("{fe:?} / {class:?} / {kind_name} / {}: {why}", op.label()));
        }
        table.entry((fe, class, kind_name.to_string())).or_default().insert(op, outcome.cell());
    }
    println!("\nFault matrix ({} cells in {:.0} s; deadline {DEADLINE_MS} ms per wait, {COMMIT_DEADLINE_MS} ms per commit):\n", cells.len(), started.elapsed().as_secs_f64());
    let ops: Vec<Op> = OPS.iter().copied().filter(|o| table.values().any(|r| r.contains_key(o))).collect();
    println!("| frontend | route class | fault | {} |", ops.iter().map(|o| o.label()).collect::<Vec<_>>().join(" | "));
    println!("|---|---|---|{}", "---|".repeat(ops.len()));
    for ((fe, class, kind), row) in &table {
        let cells: Vec<String> = ops.iter().map(|o| row.get(o).cloned().unwrap_or_else(|| "·".into())).collect();
        println!("| {fe:?} | {class:?} | {kind} | {} |", cells.join(" | "));
    }
    assert!(broken.is_empty(), "{} cell(s) broke the promise:\n{}", broken.len(), broken.join("\n"));
}
