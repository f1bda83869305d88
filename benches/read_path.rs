//! The read path, measured through real FUSE mounts of `hf-mount-fuse`
//! against the in-process emulator, with baselines measured in the same run:
//!
//! - cold sequential read of a large Xet file vs a raw download of it through
//!   xet-core's client (target ≥ 0.9×); warm re-reads from the page cache and
//!   from the disk cache;
//! - 4 KiB random-read IOPS with 1 and 4 jobs, and how many bytes they fetched;
//! - 4 threads reading quarters of one file through one fd and four fds vs 1 thread;
//! - time to first byte vs one CAS round trip;
//! - `ls -l` of a 10k- and a 100k-entry directory, and the Hub requests it made;
//! - mount time and RSS on a 100k-file repo vs a 10-file repo;
//! - `peer`: side by side with the public hf-mount (`HF_MOUNT_PEER_FUSE`), both in their
//!   default configuration (disk cache on): mount ready, first 4 KiB, cold sequential read,
//!   re-read from the disk cache after `drop_caches`, random 4 KiB, 4 readers on one file,
//!   `ls -l` of 5,000 entries; with a raw xet-core download and a plain local file read as
//!   baselines in the same rounds (`BENCH_ROUNDS`, default 5). Skipped with a note when the
//!   variable is not set; `scripts/side-by-side.sh` runs it and regenerates the README table.
//!
//! - `faults`: a cold read with each CAS fault on (resets, 5xx, 429, latency) against the same
//!   read clean: time, throughput, failures, byte-exactness (`BENCH_FAULT_MIB`, `BENCH_FAULT_RUNS`).
//!
//! `cargo bench --bench read_path` (`BENCH_FILE_MIB`, default 1024; `BENCH_ONLY=seq,nfs,random,
//! quarters,ttfb,ls,mount,peer,faults` runs only those sections, `BENCH_REPEAT=N` repeats them).

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/common/spawn.rs"]
mod spawn;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hf_hub_emulator::store::CommitOp;
use hf_hub_emulator::testing::XetReader;
use hf_hub_emulator::{Emulator, FaultKind, FaultSpec, RepoRef, RouteClass};
use spawn::spawn_mounted;

const BIN: &str = env!("CARGO_BIN_EXE_hf-mount-fuse");

#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    mount: hf_mount::config::MountArgs,
}

/// Serves `source` over NFS in-process and reads `path` whole through nfs3_client,
/// with `streams` connections reading interleaved 1 MiB READs; returns MB/s.
fn nfs_read(endpoint: &str, source: &str, path: &str, size: u64, streams: u64) -> f64 {
    use clap::Parser;
    use nfs3_client::tokio::TokioConnector;
    use nfs3_types::nfs3::{diropargs3, filename3, LOOKUP3args, Nfs3Result, READ3args};
    use nfs3_types::xdr_codec::Opaque;
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let args =
        Args::parse_from(["bench", "repo", source, "--hub-endpoint", endpoint, "--no-disk-cache", "--cache-dir", &dir]);
    let (rt, engine, _dir) = hf_mount::cli::prepare_engine(&args.mount, hf_mount::config::Frontend::Nfs).unwrap();
    let server = rt.block_on(hf_mount::frontends::nfs::NfsServer::start(engine, "127.0.0.1:0")).unwrap();
    let port = server.addr.port();
    let rate = rt.block_on(async move {
        let t = Instant::now();
        let tasks: Vec<_> = (0..streams)
            .map(|s| {
                let path = path.to_string();
                tokio::spawn(async move {
                    let mut c = nfs3_client::Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/")
                        .connect_from_privileged_port(false)
                        .mount_port(port)
                        .nfs3_port(port)
                        .mount()
                        .await
                        .unwrap();
                    let what =
                        diropargs3 { dir: c.root_nfs_fh3(), name: filename3(Opaque::owned(path.as_bytes().to_vec())) };
                    let Nfs3Result::Ok(ok) = c.nfs3_client.lookup(&LOOKUP3args { what }).await.unwrap() else {
                        panic!()
                    };
                    let mut off = s << 20;
                    while off < size {
                        let args = READ3args { file: ok.object.clone(), offset: off, count: 1 << 20 };
                        let Nfs3Result::Ok(r) = c.nfs3_client.read(&args).await.unwrap() else { panic!("read failed") };
                        assert!(!r.data.0.is_empty());
                        off += streams << 20;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        mbps(size, t.elapsed())
    });
    server.stop();
    rate
}

struct Mount {
    child: Child,
    dir: tempfile::TempDir,
    took: Duration,
    /// The mount's cache dir when the caller gave none (never the user's own).
    _cache: Option<tempfile::TempDir>,
}

impl Mount {
    fn start(endpoint: &str, source: &str, extra: &[&str]) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let cache = (!extra.contains(&"--cache-dir")).then(|| tempfile::tempdir().unwrap());
        let t = Instant::now();
        let mut cmd = Command::new(BIN);
        cmd.args(["repo", source]).arg(dir.path()).args(extra).env("HF_ENDPOINT", endpoint);
        if let Some(c) = &cache {
            cmd.arg("--cache-dir").arg(c.path());
        }
        let child = spawn_mounted(&mut cmd);
        let took = t.elapsed();
        Mount { child, dir, took, _cache: cache }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn read_all(path: &Path) -> (u64, Duration) {
    let t = Instant::now();
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    (n, t.elapsed())
}

fn random_reads(path: &Path, jobs: usize, per_job: usize, size: u64) -> Duration {
    let t = Instant::now();
    let handles: Vec<_> = (0..jobs)
        .map(|j| {
            let path = path.to_path_buf();
            std::thread::spawn(move || {
                let f = std::fs::File::open(path).unwrap();
                let mut x = 0x9e37_79b9u64 + j as u64;
                let mut buf = vec![0u8; 4096];
                for _ in 0..per_job {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let off = ((x >> 16) % (size - 4096)) & !4095;
                    f.read_exact_at(&mut buf, off).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    t.elapsed()
}

fn quarters(path: &Path, size: u64, threads: u64, shared_fd: bool) -> Duration {
    let shared = Arc::new(std::fs::File::open(path).unwrap());
    let t = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let f = if shared_fd { shared.clone() } else { Arc::new(std::fs::File::open(path).unwrap()) };
            std::thread::spawn(move || {
                let part = size / threads;
                let (start, end) = (i * part, if i + 1 == threads { size } else { (i + 1) * part });
                let mut buf = vec![0u8; 1 << 20];
                let mut off = start;
                while off < end {
                    let want = ((end - off) as usize).min(buf.len());
                    let n = f.read_at(&mut buf[..want], off).unwrap();
                    assert!(n > 0);
                    off += n as u64;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    t.elapsed()
}

/// A repo whose `dir/` holds `n` small git-blob files, committed straight into the store.
fn wide_repo(hub: &Emulator, rt: &tokio::runtime::Runtime, id: &str, n: usize) {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("seed.txt"), b"x").unwrap();
    rt.block_on(hub.seed_repo(id, src.path(), false)).unwrap();
    let repo = RepoRef::parse(id).unwrap();
    let file = hub.store().read(|st| st.repos[id].head().files["seed.txt"].clone());
    let ops = (0..n).map(|i| CommitOp::Put { path: format!("dir/f{i:06}.txt"), file: file.clone() }).collect();
    hub.store().commit(&repo, "main", "wide", None, false, ops).unwrap();
}

/// Reads `path` whole; answers its length, a CRC of its bytes, and the time taken (an error
/// instead when a read fails).
fn read_checked(path: &Path) -> std::io::Result<(u64, u32, Duration)> {
    let t = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut crc) = (0u64, crc32fast::Hasher::new());
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        crc.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, crc.finalize(), t.elapsed()))
}

/// `faults`: a cold read of one Xet file (`BENCH_FAULT_MIB`, default 256) on a fresh mount
/// (no disk cache, default deadline) with each CAS fault on, against the same read clean:
/// median time of `BENCH_FAULT_RUNS` (default 3), throughput, failures, and whether every
/// successful read was byte-exact.
fn faults_section(hub: &Emulator, rt: &tokio::runtime::Runtime, e: &str) {
    let mib: u64 = std::env::var("BENCH_FAULT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let runs: usize = std::env::var("BENCH_FAULT_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let src = tempfile::tempdir().unwrap();
    common::write_weights(&src.path().join("w.safetensors"), mib).unwrap();
    rt.block_on(hub.seed_repo("bench/faulted", src.path(), false)).unwrap();
    let want = read_checked(&src.path().join("w.safetensors")).unwrap();
    let cases: Vec<(&str, Option<FaultSpec>)> = vec![
        ("clean", None),
        (
            "CAS data: 20% connections reset",
            Some(FaultSpec::new(RouteClass::CasData, FaultKind::Reset).probability(0.2, 7)),
        ),
        (
            "CAS data: 20% answered 503",
            Some(FaultSpec::new(RouteClass::CasData, FaultKind::Error { status: 503 }).probability(0.2, 7)),
        ),
        (
            "CAS reconstruction: 50% answered 500",
            Some(FaultSpec::new(RouteClass::CasReconstruction, FaultKind::Error { status: 500 }).probability(0.5, 7)),
        ),
        (
            "CAS data: 20% answered 429 (RateLimit 0 s)",
            Some(FaultSpec::new(RouteClass::CasData, FaultKind::RateLimit { reset_secs: 0 }).probability(0.2, 7)),
        ),
        ("CAS data: +50 ms latency", Some(FaultSpec::new(RouteClass::CasData, FaultKind::Latency { ms: 50 }))),
    ];
    println!("  cold {mib} MiB read under CAS faults (fresh mount, no disk cache, 30 s deadline; {runs} runs):");
    println!("  | fault | median | MB/s | vs clean | failed | byte-exact |");
    println!("  |---|---|---|---|---|---|");
    let mut clean = f64::NAN;
    for (name, spec) in cases {
        let rule = spec.map(|s| hub.faults().add(s).unwrap());
        let (mut times, mut failed, mut exact) = (Vec::new(), 0, true);
        for _ in 0..runs {
            let m = Mount::start(e, "bench/faulted", &["--no-disk-cache"]);
            match read_checked(&m.p("w.safetensors")) {
                Ok((n, crc, d)) => {
                    exact &= (n, crc) == (want.0, want.1);
                    times.push(d.as_secs_f64());
                }
                Err(_) => failed += 1,
            }
        }
        if let Some(id) = rule {
            hub.faults().remove(id);
        }
        times.sort_by(f64::total_cmp);
        let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
        if name == "clean" {
            clean = median;
        }
        let rate = (mib << 20) as f64 / 1e6 / median;
        println!(
            "  | {name} | {median:.2} s | {rate:.0} | {:.2}× | {failed}/{runs} | {} |",
            clean / median,
            if exact { "yes" } else { "NO" }
        );
    }
}

/// Whether the section `name` was asked for (`BENCH_ONLY`, comma-separated; all by default).
fn wanted(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

fn main() {
    let repeat: usize = std::env::var("BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mib: u64 = std::env::var("BENCH_FILE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let size = mib << 20;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let hub = rt.block_on(Emulator::start_temp()).unwrap();
    let e = hub.endpoint();
    let src = tempfile::tempdir().unwrap();
    common::write_weights(&src.path().join("weights.safetensors"), mib).unwrap();
    rt.block_on(hub.seed_repo("bench/big", src.path(), false)).unwrap();
    drop(src);
    if wanted("ls") || wanted("mount") {
        wide_repo(&hub, &rt, "bench/wide10k", 10_000);
        wide_repo(&hub, &rt, "bench/wide100k", 100_000);
    }
    let tiny = tempfile::tempdir().unwrap();
    for i in 0..10 {
        std::fs::write(tiny.path().join(format!("f{i}.txt")), b"x").unwrap();
    }
    rt.block_on(hub.seed_repo("bench/ten", tiny.path(), false)).unwrap();
    let hash = rt.block_on(async {
        let h = reqwest::Client::new()
            .head(format!("{e}/bench/big/resolve/main/weights.safetensors"))
            .send()
            .await
            .unwrap();
        h.headers()["x-xet-hash"].to_str().unwrap().to_string()
    });
    let token_url = format!("{e}/api/models/bench/big/xet-read-token/main");

    println!("hf-mount read path ({mib} MiB Xet file over FUSE, emulator on loopback, 2 cores)");
    let mut cold = f64::NAN;
    for _ in 0..repeat {
        // Baseline: raw download through the xet client, the median of 3 (one slow run on this
        // noisy machine would flatter every ratio below).
        let mut raws: Vec<f64> = (0..3)
            .map(|_| {
                let took = rt.block_on(async {
                    let reader = XetReader::connect(&token_url, None).await.unwrap();
                    let t = Instant::now();
                    reader.stream_all(&hash, size, |_| {}).await.unwrap();
                    t.elapsed()
                });
                mbps(size, took)
            })
            .collect();
        raws.sort_by(f64::total_cmp);
        let raw_mbps = raws[1];
        println!(
            "  raw download (xet client)            {raw_mbps:8.1} MB/s   (median of {:.0} / {:.0} / {:.0})",
            raws[0], raws[1], raws[2]
        );
        if wanted("seq") {
            let cache = tempfile::tempdir().unwrap();
            let cache_dir = cache.path().display().to_string();
            cold = {
                let m = Mount::start(&e, "bench/big", &["--no-disk-cache"]);
                let (n, d) = read_all(&m.p("weights.safetensors"));
                assert_eq!(n, size);
                println!(
                    "  cold sequential read (FUSE, no disk cache) {:5.1} MB/s   {:.2}x raw",
                    mbps(n, d),
                    mbps(n, d) / raw_mbps
                );
                drop(m);
                let m = Mount::start(&e, "bench/big", &["--cache-dir", &cache_dir]);
                let (n, d) = read_all(&m.p("weights.safetensors"));
                assert_eq!(n, size);
                let cold = mbps(n, d);
                println!(
                    "  cold sequential read (FUSE)          {cold:8.1} MB/s   {:.2}x raw (target >= 0.9x)",
                    cold / raw_mbps
                );
                let (n, d) = read_all(&m.p("weights.safetensors"));
                println!("  warm re-read (page cache)            {:8.1} MB/s", mbps(n, d));
                cold
            };
            {
                std::thread::sleep(Duration::from_secs(1));
                let m = Mount::start(&e, "bench/big", &["--cache-dir", &cache_dir]);
                let (n, d) = read_all(&m.p("weights.safetensors"));
                println!("  warm re-read (disk cache, new mount) {:8.1} MB/s", mbps(n, d));
            }
        }
        if wanted("nfs") {
            // The NFS frontend on the same engine, read by nfs3_client (1 MiB READs).
            for streams in [1u64, 4] {
                let rate = nfs_read(&e, "bench/big", "weights.safetensors", size, streams);
                println!(
                    "  cold sequential read (NFS, {streams} stream{}) {rate:8.1} MB/s   {:.2}x raw, {:.2}x FUSE",
                    if streams == 1 { " " } else { "s" },
                    rate / raw_mbps,
                    rate / cold
                );
            }
        }
        if wanted("faults") {
            faults_section(&hub, &rt, &e);
        }
        if wanted("random") {
            // Random 4 KiB reads, cold mounts; count the bytes the CAS served.
            for jobs in [1usize, 4] {
                let counter =
                    hub.faults().add(FaultSpec::new(RouteClass::CasData, FaultKind::Latency { ms: 0 })).unwrap();
                let m = Mount::start(&e, "bench/big", &["--no-disk-cache"]);
                let per_job = 400;
                let d = random_reads(&m.p("weights.safetensors"), jobs, per_job, size);
                let fetches = hub.faults().list().into_iter().find(|r| r.id == counter).map_or(0, |r| r.hits);
                hub.faults().remove(counter);
                let iops = (jobs * per_job) as f64 / d.as_secs_f64();
                println!(
                "  4 KiB random reads, {jobs} job(s)          {iops:8.0} IOPS  ({fetches} CAS data fetches for {} reads)",
                jobs * per_job
            );
            }
        }
        if wanted("quarters") {
            // Quarters of one file: 1 thread, 4 threads on one fd, 4 threads on four fds (cold each
            // time); on loopback (CPU-bound here), then as over a network: 10 ms per plan query and
            // each data response paced to 100 MB/s, where parallel streams are what lifts throughput.
            for network in [false, true] {
                let faults: Vec<u64> = if network {
                    [
                        FaultSpec::new(RouteClass::CasReconstruction, FaultKind::Latency { ms: 10 }),
                        FaultSpec::new(RouteClass::CasData, FaultKind::Throttle { bytes_per_sec: 100_000_000 }),
                    ]
                    .into_iter()
                    .map(|f| hub.faults().add(f).unwrap())
                    .collect()
                } else {
                    Vec::new()
                };
                let link = if network { "100 MB/s" } else { "loopback" };
                let mut base = 0.0;
                for (threads, shared, label) in
                    [(1, true, "1 thread"), (4, true, "4 threads, one fd"), (4, false, "4 threads, four fds")]
                {
                    let m = Mount::start(&e, "bench/big", &["--no-disk-cache"]);
                    let d = quarters(&m.p("weights.safetensors"), size, threads, shared);
                    let rate = mbps(size, d);
                    if threads == 1 {
                        base = rate;
                    }
                    println!("  quarters, {label:<19} {link:>8} {rate:8.1} MB/s   {:.2}x 1 thread", rate / base);
                }
                for id in faults {
                    hub.faults().remove(id);
                }
            }
        }
        if wanted("ttfb") {
            // Time to first byte vs one CAS round trip (a reconstruction query): a fresh mount
            // (its CAS session warmed in the background at mount), open, then one 4 KiB read.
            {
                let m = Mount::start(&e, "bench/big", &["--no-disk-cache"]);
                std::thread::sleep(Duration::from_millis(500));
                let t = Instant::now();
                let f = std::fs::File::open(m.p("weights.safetensors")).unwrap();
                let open = t.elapsed();
                let mut buf = [0u8; 4096];
                let t = Instant::now();
                f.read_exact_at(&mut buf, size / 2).unwrap();
                let ttfb = t.elapsed();
                let rtt = rt.block_on(async {
                    let c = reqwest::Client::new();
                    let tok: serde_json::Value = c.get(&token_url).send().await.unwrap().json().await.unwrap();
                    let mut best = Duration::MAX;
                    for _ in 0..5 {
                        let t = Instant::now();
                        c.get(format!("{e}/cas/v2/reconstructions/{hash}"))
                            .bearer_auth(tok["accessToken"].as_str().unwrap())
                            .header("range", "bytes=0-4095")
                            .send()
                            .await
                            .unwrap()
                            .bytes()
                            .await
                            .unwrap();
                        best = best.min(t.elapsed());
                    }
                    best
                });
                println!(
                "  time to first byte                   {:8.2} ms    {:.1} CAS round trips ({:.2} ms each); open took {:.2} ms",
                ttfb.as_secs_f64() * 1e3,
                ttfb.as_secs_f64() / rtt.as_secs_f64(),
                rtt.as_secs_f64() * 1e3,
                open.as_secs_f64() * 1e3
            );
            }
        }
        if wanted("ls") {
            // ls -l of wide directories; count the Hub metadata requests made.
            for (id, n) in [("bench/wide10k", 10_000), ("bench/wide100k", 100_000)] {
                let m = Mount::start(&e, id, &[]);
                std::thread::sleep(Duration::from_millis(700)); // the CAS session set-up settles
                let rss_before = m.rss_kib();
                let counter =
                    hub.faults().add(FaultSpec::new(RouteClass::HubMetadata, FaultKind::Latency { ms: 0 })).unwrap();
                let t = Instant::now();
                let out = Command::new("ls").arg("-l").arg(m.p("dir")).output().unwrap();
                let d = t.elapsed();
                let per_entry = (m.rss_kib().saturating_sub(rss_before) * 1024) as f64 / n as f64;
                let requests = hub.faults().list().into_iter().find(|r| r.id == counter).map_or(0, |r| r.hits);
                hub.faults().remove(counter);
                let lines = String::from_utf8_lossy(&out.stdout).lines().count() - 1;
                assert_eq!(lines, n);
                println!("  ls -l of {n:>6} entries              {:8.2} s     {requests} Hub requests (target <= 2 s, no per-entry request); {per_entry:.0} B of RSS per entry", d.as_secs_f64());
            }
        }
    }

    // Mount time and RSS: 100k-file repo vs 10-file repo.
    if wanted("mount") {
        // Median of 7 mounts each, alternating, so one slow start does not decide.
        let (mut took, mut rss) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _ in 0..7 {
            for (i, id) in ["bench/ten", "bench/wide100k"].into_iter().enumerate() {
                let m = Mount::start(&e, id, &[]);
                std::fs::metadata(m.dir.path()).unwrap();
                took[i].push(m.took.as_secs_f64() * 1e3);
                // RSS once the background CAS session set-up (started at mount) has settled.
                std::thread::sleep(Duration::from_millis(700));
                rss[i].push(m.rss_kib() as f64);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (t10, t100k) = (median(&mut took[0]), median(&mut took[1]));
        let (r10, r100k) = (median(&mut rss[0]), median(&mut rss[1]));
        println!(
            "  mount time, 10 files / 100k files    {t10:8.1} ms / {t100k:.1} ms   ({:+.0}%, medians of 7)",
            (t100k / t10 - 1.0) * 100.0
        );
        println!(
            "  RSS after mount, 10 / 100k files     {r10:8} KiB / {r100k} KiB ({:+.0}%)",
            (r100k / r10 - 1.0) * 100.0
        );
        // What of the difference is the emulator's: its answer to the root listing a mount asks for.
        let root_listing = |id: &str| {
            let url = format!("{e}/api/models/{id}/tree/main");
            let mut t: Vec<f64> = (0..7)
                .map(|_| {
                    let s = Instant::now();
                    rt.block_on(async { reqwest::get(&url).await.unwrap().bytes().await.unwrap() });
                    s.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            median(&mut t)
        };
        println!(
            "  emulator's root listing, 10 / 100k   {:8.1} ms / {:.1} ms",
            root_listing("bench/ten"),
            root_listing("bench/wide100k")
        );
    }
    if wanted("peer") {
        match common::side::peer_binary() {
            Ok(peer) => side_by_side(&hub, &rt, &peer, mib),
            Err(why) => println!("  side by side with the public hf-mount: skipped ({why})"),
        }
    }
    rt.block_on(hub.stop());
}

/// Both tools' FUSE mounts through the same read workloads, alternating rounds (see the top).
fn side_by_side(hub: &Emulator, rt: &tokio::runtime::Runtime, peer: &Path, mib: u64) {
    use common::side::{self, drop_caches, Better, Row, Spec};
    let e = hub.endpoint();
    let size = mib << 20;
    let half = size / 2;
    let src = tempfile::tempdir().unwrap();
    common::write_seeded(&src.path().join("weights.safetensors"), mib, 11).unwrap();
    common::write_seeded(&src.path().join("half.bin"), mib / 2, 12).unwrap();
    common::write_seeded(&src.path().join("first.bin"), 64, 13).unwrap();
    rt.block_on(hub.seed_repo("side/model", src.path(), false)).unwrap();
    // The plain-file baseline: the same bytes in a local file, on the disk the caches use.
    let local = src.path().join("weights.safetensors");
    wide_repo(hub, rt, "side/wide5k", 5_000);
    let token_url = format!("{e}/api/models/side/model/xet-read-token/main");
    let hash = rt.block_on(async {
        let h = reqwest::Client::new().head(format!("{e}/side/model/resolve/main/weights.safetensors")).send().await;
        h.unwrap().headers()["x-xet-hash"].to_str().unwrap().to_string()
    });
    let spec = Spec { ours: Path::new(BIN), peer, endpoint: &e, token: None, kind: "repo", id: "side/model" };
    let wide = Spec { id: "side/wide5k", ..spec };
    let mut ready = Row::new("mount ready", "s", Better::Lower);
    let mut first = Row::new("first 4 KiB read right after mount", "ms", Better::Lower);
    let mut cold = Row::new(&format!("cold sequential read, {mib} MiB"), "MB/s", Better::Higher);
    let mut disk = Row::new("re-read after `drop_caches` (disk cache, new mount)", "MB/s", Better::Higher);
    let mut random = Row::new("4 KiB random reads (cold, 1 job)", "IOPS", Better::Higher);
    let mut one = Row::new(&format!("1 reader, one {} MiB file", mib / 2), "MB/s", Better::Higher);
    let mut four = Row::new(&format!("4 readers, own fds, one {} MiB file", mib / 2), "MB/s", Better::Higher);
    let mut ls = Row::new("`ls -l`, 5,000 entries", "s", Better::Lower);
    let (mut raw, mut plain) = (vec![], vec![]);
    let (mut disk_fetches, mut our_hits, mut our_skipped, mut peer_fetches) = (vec![], vec![], vec![], vec![]);
    let counter = || hub.faults().add(FaultSpec::new(RouteClass::CasData, FaultKind::Latency { ms: 0 })).unwrap();
    let hits = |id: u64| {
        let n = hub.faults().list().into_iter().find(|r| r.id == id).map_or(0, |r| r.hits);
        hub.faults().remove(id);
        n
    };
    let rounds = side::rounds();
    for r in 0..rounds {
        println!("  side by side: round {}/{rounds}", r + 1);
        let took = rt.block_on(async {
            let reader = XetReader::connect(&token_url, None).await.unwrap();
            let t = Instant::now();
            reader.stream_all(&hash, size, |_| {}).await.unwrap();
            t.elapsed()
        });
        raw.push(mbps(size, took));
        drop_caches();
        let (n, d) = read_all(&local);
        assert_eq!(n, size);
        plain.push(mbps(n, d));
        for tool in side::order(r) {
            // Mount, first byte, a whole cold read; then a new mount reading it from its disk cache.
            let cache = tempfile::tempdir().unwrap();
            let m = spec.mount(tool, cache.path(), &[]);
            ready.push(tool, m.ready.as_secs_f64());
            let t = Instant::now();
            let f = std::fs::File::open(m.p("first.bin")).unwrap();
            let mut buf = [0u8; 4096];
            f.read_exact_at(&mut buf, 32 << 20).unwrap();
            first.push(tool, t.elapsed().as_secs_f64() * 1e3);
            let (n, d) = read_all(&m.p("weights.safetensors"));
            assert_eq!(n, size);
            cold.push(tool, mbps(n, d));
            m.unmount();
            drop_caches();
            let m = spec.mount(tool, cache.path(), &[]);
            let id = counter();
            let (n, d) = read_all(&m.p("weights.safetensors"));
            assert_eq!(n, size);
            disk.push(tool, mbps(n, d));
            match tool {
                side::Tool::Ours => {
                    disk_fetches.push(hits(id) as f64);
                    let a = hf_mount::control::ask(
                        m.dir.path(),
                        hf_mount::control::Request::Status,
                        Duration::from_secs(5),
                    );
                    let c = a.ok().and_then(|a| a.cache).unwrap_or_default();
                    our_hits.push(c.disk_hits as f64);
                    our_skipped.push(c.skipped_writes as f64);
                }
                side::Tool::Peer => peer_fetches.push(hits(id) as f64),
            }
            m.unmount();
            drop(cache);
            // Random 4 KiB reads on a cold mount.
            let cache = tempfile::tempdir().unwrap();
            let m = spec.mount(tool, cache.path(), &[]);
            let per_job = 300;
            let d = random_reads(&m.p("weights.safetensors"), 1, per_job, size);
            random.push(tool, per_job as f64 / d.as_secs_f64());
            m.unmount();
            // One reader, then four, on one file (cold mounts each).
            for (threads, row) in [(1, &mut one), (4, &mut four)] {
                let cache = tempfile::tempdir().unwrap();
                let m = spec.mount(tool, cache.path(), &[]);
                let d = quarters(&m.p("half.bin"), half, threads, false);
                row.push(tool, mbps(half, d));
                m.unmount();
            }
            let cache = tempfile::tempdir().unwrap();
            let m = wide.mount(tool, cache.path(), &[]);
            let t = Instant::now();
            let out = Command::new("ls").arg("-l").arg(m.p("dir")).output().unwrap();
            ls.push(tool, t.elapsed().as_secs_f64());
            assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count() - 1, 5_000);
            m.unmount();
        }
    }
    let (raw_m, plain_m) = (side::stats(&raw).0, side::stats(&plain).0);
    let (cold_o, disk_o) = (side::stats(&cold.ours).0, side::stats(&disk.ours).0);
    cold.note =
        format!("ours {:.2}× raw xet-core download ({raw_m:.0} MB/s; target ≥ 0.9× and ≥ 1.5× peer)", cold_o / raw_m);
    disk.note = format!(
        "ours {:.2}× a plain local file after `drop_caches` ({plain_m:.0} MB/s; target ≥ 0.8×, ≥ 1.2× peer); CAS data fetches during it: ours {:.0}, peer {:.0}; our disk hits {:.0}, skipped cache writes {:.0}",
        disk_o / plain_m,
        side::stats(&disk_fetches).0,
        side::stats(&peer_fetches).0,
        side::stats(&our_hits).0,
        side::stats(&our_skipped).0
    );
    first.note = "64 MiB file, 4 KiB at 32 MiB (target ≤ 0.5× peer)".into();
    random.note = "300 reads (target ≥ 2× peer)".into();
    four.note = format!(
        "ours {:.2}× our own single reader (target ≥ 1×)",
        side::stats(&four.ours).0 / side::stats(&one.ours).0
    );
    side::print_table(
        &format!(
            "Reads, {rounds} alternating rounds, medians (min–max); both tools with default flags plus a `--cache-dir` of their own; emulator on loopback, 2 cores. \"ours vs peer\" is how many times better ours is (rates: ours ÷ peer; times: peer ÷ ours)."
        ),
        &[ready, first, cold, disk, random, one, four, ls],
    );
}
