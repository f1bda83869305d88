//! How fast the emulator serves file bytes over loopback: the ceiling later
//! mount benchmarks compare against.
//!
//! Prints, in one run:
//! - sequential MB/s of one large Xet file streamed through xet-core's client;
//! - latency of 4 KiB ranged xorb fetches from the emulator's seeking data
//!   route vs xet-core `LocalServer`'s own term route (the baseline), and their ratio;
//! - latency of a 4 KiB read through the whole xet client path (token,
//!   reconstruction, data), i.e. a client's time to first byte.
//!
//! `cargo bench --bench emulator_throughput` (set `BENCH_FILE_MIB`, default 1024).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use hf_hub_emulator::testing::XetReader;
use hf_hub_emulator::Emulator;
use serde_json::Value;

const RANGE_BYTES: u64 = 4096;
const RANGE_SAMPLES: usize = 200;

fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::var("BENCH_FILE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(mib))
}

fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    (mean, ms(samples[samples.len() / 2]), ms(samples[samples.len() * 99 / 100]))
}

async fn run(mib: u64) -> anyhow::Result<()> {
    let hub = Emulator::start_temp().await?;
    let e = hub.endpoint();
    let src = tempfile::tempdir()?;
    let size = mib << 20;
    common::write_weights(&src.path().join("weights.safetensors"), mib)?;
    let t = Instant::now();
    hub.seed_repo("bench/big", src.path(), false).await?;
    let seed_secs = t.elapsed().as_secs_f64();
    drop(src);

    let http = reqwest::Client::builder().no_proxy().build()?;
    let head = http.head(format!("{e}/bench/big/resolve/main/weights.safetensors")).send().await?;
    let hash = head.headers()["x-xet-hash"].to_str()?.to_string();
    let token_url = format!("{e}/api/models/bench/big/xet-read-token/main");

    // Sequential read of the whole file through the xet client.
    let reader = XetReader::connect(&token_url, None).await?;
    let t = Instant::now();
    let n = reader.stream_all(&hash, size, |_| {}).await?;
    let seq = t.elapsed().as_secs_f64();
    anyhow::ensure!(n == size, "read {n} of {size} bytes");

    // 4 KiB ranged fetches: our route vs LocalServer's, same xorbs and offsets.
    let token: Value = http.get(&token_url).send().await?.json().await?;
    let cas_token = token["accessToken"].as_str().unwrap_or_default().to_string();
    let ours: Value =
        http.get(format!("{e}/cas/v2/reconstructions/{hash}")).bearer_auth(&cas_token).send().await?.json().await?;
    let theirs: Value =
        http.get(format!("{}/v2/reconstructions/{hash}", hub.cas().inner_url())).send().await?.json().await?;
    let mut targets = Vec::new();
    for (xorb, fetches) in ours["xorbs"].as_object().into_iter().flatten() {
        let inner_url = theirs["xorbs"][xorb][0]["url"].as_str().unwrap_or_default().to_string();
        for f in fetches.as_array().into_iter().flatten() {
            let r = &f["ranges"][0]["bytes"];
            let (start, end) = (r["start"].as_u64().unwrap_or(0), r["end"].as_u64().unwrap_or(0));
            if end > start + RANGE_BYTES {
                targets.push((f["url"].as_str().unwrap_or_default().to_string(), inner_url.clone(), start, end));
            }
        }
    }
    anyhow::ensure!(!targets.is_empty(), "no xorb fetches in the reconstruction");
    let mut x = 7u64;
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    for i in 0..RANGE_SAMPLES {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (url, inner, start, end) = &targets[i % targets.len()];
        let off = start + (x >> 16) % (end - start - RANGE_BYTES);
        let range = format!("bytes={off}-{}", off + RANGE_BYTES - 1);
        for (u, out) in [(url, &mut fast), (inner, &mut slow)] {
            let t = Instant::now();
            let body = http.get(u.as_str()).header("range", &range).send().await?.bytes().await?;
            out.push(t.elapsed());
            anyhow::ensure!(body.len() as u64 == RANGE_BYTES, "short range from {u}");
        }
    }

    // 4 KiB reads through the whole client path (reconstruction + data), fresh offsets.
    let mut e2e = Vec::new();
    for _ in 0..50 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 16) % (size - RANGE_BYTES);
        let t = Instant::now();
        let got = reader.read(&hash, size, off..off + RANGE_BYTES).await?;
        e2e.push(t.elapsed());
        anyhow::ensure!(got.len() as u64 == RANGE_BYTES);
    }

    let (f_mean, f_p50, f_p99) = stats(fast);
    let (s_mean, s_p50, s_p99) = stats(slow);
    let (c_mean, c_p50, c_p99) = stats(e2e);
    println!(
        "emulator throughput ({mib} MiB Xet file, {} xorbs, loopback)",
        theirs["xorbs"].as_object().map_or(0, |m| m.len())
    );
    println!("  seed (xet upload)             {:8.1} MB/s  ({seed_secs:.1} s)", size as f64 / seed_secs / 1e6);
    println!("  sequential read (xet client)  {:8.1} MB/s  ({seq:.1} s)", size as f64 / seq / 1e6);
    println!("  4 KiB xorb range, ms          mean     p50     p99");
    println!("    emulator seeking route   {f_mean:8.2} {f_p50:7.2} {f_p99:7.2}");
    println!("    xet-core LocalServer     {s_mean:8.2} {s_p50:7.2} {s_p99:7.2}");
    println!("    speed-up (mean)          {:8.1}x", s_mean / f_mean);
    println!("  4 KiB read via xet client    {c_mean:8.2} {c_p50:7.2} {c_p99:7.2}  (reconstruction + data)");
    hub.stop().await;
    Ok(())
}
