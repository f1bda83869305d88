//! The cost of tracing on cached reads: the same mount with and without OTLP
//! export (to an in-process collector), reading a file already in hf-mount's
//! memory cache (the kernel page cache is dropped before each pass, so every
//! read is a FUSE request). Prints both and their ratio.
//!
//! `cargo bench --bench tracing_cost`

#[path = "../tests/common/spawn.rs"]
mod spawn;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hf_hub_emulator::Emulator;

const BIN: &str = env!("CARGO_BIN_EXE_hf-mount-fuse");
const FILE_BYTES: usize = 64 << 20;
const PASSES: usize = 5;
const RANDOM_READS: usize = 2000;

fn mount(endpoint: &str, dir: &Path, otlp: Option<&str>) -> Child {
    let mut c = Command::new(BIN);
    c.args(["repo", "bench/traced"]).arg(dir).args(["--no-disk-cache", "--memory-cache-size", "512M"]);
    if let Some(o) = otlp {
        c.args(["--otlp-endpoint", o]);
    }
    spawn::spawn_mounted(c.env("HF_ENDPOINT", endpoint))
}

fn drop_page_cache(f: &std::fs::File) {
    // SAFETY: advisory call on an open fd.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Sequential MB/s and mean µs per random 4 KiB read, from hf-mount's cache.
fn measure(path: &Path) -> (f64, f64) {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 128 << 10];
    // Warm hf-mount's memory cache.
    let mut off = 0;
    while off < FILE_BYTES {
        off += f.read_at(&mut buf, off as u64).unwrap();
    }
    let mut seq = Duration::ZERO;
    for _ in 0..PASSES {
        drop_page_cache(&f);
        let t = Instant::now();
        let mut off = 0;
        while off < FILE_BYTES {
            off += f.read_at(&mut buf, off as u64).unwrap();
        }
        seq += t.elapsed();
    }
    let mut x = 17u64;
    let mut small = [0u8; 4096];
    drop_page_cache(&f);
    let t = Instant::now();
    for _ in 0..RANDOM_READS {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 16) % (FILE_BYTES as u64 - 4096);
        f.read_exact_at(&mut small, off).unwrap();
        drop_page_cache(&f);
    }
    let random_us = t.elapsed().as_secs_f64() * 1e6 / RANDOM_READS as f64;
    ((FILE_BYTES * PASSES) as f64 / seq.as_secs_f64() / 1e6, random_us)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let hub = rt.block_on(Emulator::start_temp()).unwrap();
    let src = tempfile::tempdir().unwrap();
    let mut x = 0x1234_5678u64;
    let data: Vec<u8> = (0..FILE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.path().join("w.safetensors"), &data).unwrap();
    rt.block_on(hub.seed_repo("bench/traced", src.path(), false)).unwrap();
    let collector = rt.block_on(fake_opentelemetry_collector::FakeCollectorServer::start()).unwrap();
    let endpoint = collector.endpoint();

    println!("tracing cost on cached reads ({} MiB file in hf-mount's memory cache, FUSE)", FILE_BYTES >> 20);
    let mut results = Vec::new();
    for (label, otlp) in [("tracing off", None), ("tracing on (OTLP export)", Some(endpoint.as_str()))] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = mount(&hub.endpoint(), dir.path(), otlp);
        let (mbps, us) = measure(&dir.path().join("w.safetensors"));
        println!("  {label:<26} {mbps:8.1} MB/s sequential   {us:7.1} µs per random 4 KiB read");
        results.push((mbps, us));
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
    let (off, on) = (results[0], results[1]);
    println!("  on/off                     {:8.2}x throughput        {:7.2}x latency", on.0 / off.0, on.1 / off.1);
    collector.abort();
    rt.block_on(hub.stop());
}
