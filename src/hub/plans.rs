//! Reconstruction plans cached across reads. xet-core asks the CAS for a
//! plan (which xorb ranges make up a byte range, and signed URLs to fetch
//! them) before every fetch; a mount re-reads the same ranges (evicted
//! blocks, retried reads), so plans are kept until shortly before their
//! URLs expire. This wraps xet-core's CAS client and changes nothing else:
//! every other call goes straight through, and a 403 on a fetch (a URL that
//! expired early) drops the cached plans before xet-core asks again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use xet_client::cas_client::adaptive_concurrency::ConnectionPermit;
use xet_client::cas_client::{Client, ProgressCallback, ShardUploadProgressCallback, URLProvider};
use xet_client::cas_types::{
    BatchQueryReconstructionResponse, FileChunkHashesResponse, FileRange, HttpRange, QueryReconstructionResponseV2,
};
use xet_client::error::Result;
use xet_core_structures::merklehash::MerkleHash;
use xet_core_structures::metadata_shard::file_structs::MDBFileInfo;
use xet_core_structures::xorb_object::SerializedXorbObject;

/// A plan is never kept longer than this, even when its URLs say nothing of their expiry.
const PLAN_TTL_MAX: Duration = Duration::from_secs(600);
/// A plan is dropped this long before its URLs expire, so a fetch never starts on a dying URL.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Plans kept at most (a plan is a few KiB: terms and URLs of one byte range).
const MAX_PLANS: usize = 4096;

type PlanKey = (MerkleHash, Option<(u64, u64)>);

/// Plans by file and queried range, with when each must be asked for again.
type Plans = HashMap<PlanKey, (QueryReconstructionResponseV2, Instant)>;

/// xet-core's CAS client with reconstruction plans cached until their URLs expire.
pub struct PlanCachingClient {
    inner: Arc<dyn Client>,
    plans: Arc<Mutex<Plans>>,
}

impl PlanCachingClient {
    pub fn new(inner: Arc<dyn Client>) -> Self {
        Self { inner, plans: Arc::default() }
    }
}

/// When a plan must be asked for again: shortly before the first of its URLs expires.
fn plan_deadline(plan: &QueryReconstructionResponseV2, now: Instant) -> Instant {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let earliest = plan.xorbs.values().flatten().filter_map(|f| url_expiry(&f.url)).min();
    let ttl = match earliest {
        Some(exp) => Duration::from_secs(exp.saturating_sub(wall)).saturating_sub(EXPIRY_MARGIN).min(PLAN_TTL_MAX),
        None => PLAN_TTL_MAX,
    };
    now + ttl
}

/// The unix time a presigned URL expires at, from the forms in use: `exp=` or `Expires=`
/// (unix seconds; the Hub's CAS and CloudFront) or `X-Amz-Date` + `X-Amz-Expires` (S3).
pub fn url_expiry(url: &str) -> Option<u64> {
    let url = reqwest::Url::parse(url).ok()?;
    let (mut amz_date, mut amz_expires) = (None, None);
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "exp" | "Expires" => return v.parse().ok(),
            "X-Amz-Date" => amz_date = parse_amz_date(&v),
            "X-Amz-Expires" => amz_expires = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    Some(amz_date? + amz_expires?)
}

/// `20261126T105500Z` → unix seconds.
fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), as in Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Passes a fetch's URL through; a refresh (the URL got a 403) first drops every cached plan,
/// so xet-core's re-query reaches the CAS.
struct ForgetOnRefresh {
    inner: Box<dyn URLProvider>,
    plans: Arc<Mutex<Plans>>,
}

#[async_trait::async_trait]
impl URLProvider for ForgetOnRefresh {
    async fn retrieve_url(&self) -> Result<(String, Vec<HttpRange>)> {
        self.inner.retrieve_url().await
    }

    async fn refresh_url(&self) -> Result<()> {
        self.plans.lock().clear();
        self.inner.refresh_url().await
    }
}

#[async_trait::async_trait]
impl Client for PlanCachingClient {
    async fn get_file_reconstruction_info(
        &self,
        file_hash: &MerkleHash,
    ) -> Result<Option<(MDBFileInfo, Option<MerkleHash>)>> {
        self.inner.get_file_reconstruction_info(file_hash).await
    }

    async fn get_reconstruction(
        &self,
        file_id: &MerkleHash,
        bytes_range: Option<FileRange>,
    ) -> Result<Option<QueryReconstructionResponseV2>> {
        let key = (*file_id, bytes_range.map(|r| (r.start, r.end)));
        let now = Instant::now();
        if let Some((plan, until)) = self.plans.lock().get(&key) {
            if *until > now {
                crate::metrics::get().plans.add(1, &[crate::metrics::kv("result", "hit")]);
                return Ok(Some(plan.clone()));
            }
        }
        crate::metrics::get().plans.add(1, &[crate::metrics::kv("result", "miss")]);
        let plan = self.inner.get_reconstruction(file_id, bytes_range).await?;
        if let Some(plan) = &plan {
            let until = plan_deadline(plan, now);
            let mut p = self.plans.lock();
            if p.len() >= MAX_PLANS {
                p.retain(|_, (_, u)| *u > now);
                if p.len() >= MAX_PLANS {
                    p.clear();
                }
            }
            if until > now {
                p.insert(key, (plan.clone(), until));
            }
        }
        Ok(plan)
    }

    async fn batch_get_reconstruction(&self, file_ids: &[MerkleHash]) -> Result<BatchQueryReconstructionResponse> {
        self.inner.batch_get_reconstruction(file_ids).await
    }

    async fn acquire_download_permit(&self) -> Result<ConnectionPermit> {
        self.inner.acquire_download_permit().await
    }

    async fn get_file_term_data(
        &self,
        url_info: Box<dyn URLProvider>,
        download_permit: ConnectionPermit,
        progress_callback: Option<ProgressCallback>,
        uncompressed_size_if_known: Option<usize>,
    ) -> Result<(Bytes, Vec<u32>)> {
        let url_info = Box::new(ForgetOnRefresh { inner: url_info, plans: self.plans.clone() });
        self.inner.get_file_term_data(url_info, download_permit, progress_callback, uncompressed_size_if_known).await
    }

    async fn query_for_global_dedup_shard(&self, prefix: &str, chunk_hash: &MerkleHash) -> Result<Option<Bytes>> {
        self.inner.query_for_global_dedup_shard(prefix, chunk_hash).await
    }

    async fn acquire_upload_permit(&self) -> Result<ConnectionPermit> {
        self.inner.acquire_upload_permit().await
    }

    async fn upload_shard(
        &self,
        shard_data: Bytes,
        upload_permit: ConnectionPermit,
        progress_callback: Option<ShardUploadProgressCallback>,
    ) -> Result<Option<MerkleHash>> {
        self.inner.upload_shard(shard_data, upload_permit, progress_callback).await
    }

    async fn upload_xorb(
        &self,
        prefix: &str,
        serialized_xorb_object: SerializedXorbObject,
        progress_callback: Option<ProgressCallback>,
        upload_permit: ConnectionPermit,
    ) -> Result<u64> {
        self.inner.upload_xorb(prefix, serialized_xorb_object, progress_callback, upload_permit).await
    }

    async fn get_file_chunk_hashes(
        &self,
        file_id: &MerkleHash,
        dirty_ranges: Vec<FileRange>,
    ) -> Result<FileChunkHashesResponse> {
        self.inner.get_file_chunk_hashes(file_id, dirty_ranges).await
    }

    fn transfer_telemetry(&self) -> Option<Arc<xet_client::cas_client::TransferTelemetry>> {
        self.inner.transfer_telemetry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_expiry_forms() {
        assert_eq!(url_expiry("http://127.0.0.1:1/cas/xorb-data/ab?exp=1790000000"), Some(1_790_000_000));
        assert_eq!(url_expiry("https://cdn.example/x?Expires=1790000001&Signature=s"), Some(1_790_000_001));
        // 2026-11-26T10:55:00Z = 1795690500; plus 3600 s.
        assert_eq!(
            url_expiry("https://s3.example/x?X-Amz-Date=20261126T105500Z&X-Amz-Expires=3600&X-Amz-Signature=s"),
            Some(1_795_690_500 + 3600)
        );
        assert_eq!(url_expiry("https://s3.example/x?X-Amz-Date=2026-11-26&X-Amz-Expires=3600"), None);
        assert_eq!(url_expiry("https://s3.example/x"), None);
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20000301T000001Z"), Some(951_868_801));
    }
}
