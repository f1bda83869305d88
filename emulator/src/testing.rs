//! Reading Xet files from an emulator through xet-core's own download path,
//! for tests and benchmarks: CAS credentials come from the Hub token route
//! and are refreshed through it, as a real client does.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use xet_client::cas_client::auth::{AuthConfig, AuthError, TokenInfo, TokenRefresher};
use xet_data::processing::configurations::{SessionContext, TranslatorConfig};
use xet_data::processing::{FileDownloadSession, XetFileInfo};
use xet_runtime::core::XetContext;

const TOKEN_ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Fetches CAS credentials from a Hub `xet-read-token` route.
pub struct HubTokenRefresher {
    url: String,
    hf_token: Option<String>,
    http: reqwest::Client,
}

impl HubTokenRefresher {
    pub fn new(url: &str, hf_token: Option<&str>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(TOKEN_ROUTE_TIMEOUT).no_proxy().build()?;
        Ok(Self { url: url.into(), hf_token: hf_token.map(Into::into), http })
    }

    /// Returns `(casUrl, accessToken, exp)`.
    pub async fn fetch(&self) -> anyhow::Result<(String, String, u64)> {
        let mut req = self.http.get(&self.url);
        if let Some(t) = &self.hf_token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?.error_for_status()?;
        let body: serde_json::Value = resp.json().await?;
        let field = |k: &str| body.get(k).cloned().with_context(|| format!("token answer lacks {k}"));
        Ok((
            field("casUrl")?.as_str().context("casUrl")?.to_string(),
            field("accessToken")?.as_str().context("accessToken")?.to_string(),
            field("exp")?.as_u64().context("exp")?,
        ))
    }
}

#[async_trait::async_trait]
impl TokenRefresher for HubTokenRefresher {
    async fn refresh(&self) -> Result<TokenInfo, AuthError> {
        let (_, token, exp) = self.fetch().await.map_err(|e| AuthError::TokenRefreshFailure(e.to_string()))?;
        Ok((token, exp))
    }
}

/// A xet-core download session bound to one token route.
pub struct XetReader {
    session: Arc<FileDownloadSession>,
    _scratch: tempfile::TempDir,
}

impl XetReader {
    /// `token_url` is a repo's or bucket's `xet-read-token` URL.
    pub async fn connect(token_url: &str, hf_token: Option<&str>) -> anyhow::Result<Self> {
        let ctx = XetContext::default()?;
        let refresher = Arc::new(HubTokenRefresher::new(token_url, hf_token)?);
        let (cas_url, token, exp) = refresher.fetch().await?;
        let scratch = tempfile::tempdir()?;
        let session = SessionContext {
            endpoint: cas_url,
            auth: AuthConfig::maybe_new(Some(token), Some(exp), Some(refresher)),
            custom_headers: None,
            repo_paths: vec![String::new()],
            session_id: None,
            cache_root: Some(scratch.path().to_path_buf()),
        };
        let config = Arc::new(TranslatorConfig::new(&ctx, session)?);
        let session = FileDownloadSession::new(config, None).await?;
        Ok(Self { session, _scratch: scratch })
    }

    /// Bytes `range` of the Xet file `hash` of `size` bytes.
    pub async fn read(&self, hash: &str, size: u64, range: Range<u64>) -> anyhow::Result<Vec<u8>> {
        let info = XetFileInfo::new(hash.to_string(), size);
        let (_, mut stream) = self.session.download_stream_range(&info, range.clone()).await?;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        while let Some(chunk) = stream.next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Streams the whole file, calling `sink` on each piece; returns the byte count.
    pub async fn stream_all(&self, hash: &str, size: u64, mut sink: impl FnMut(&[u8])) -> anyhow::Result<u64> {
        let info = XetFileInfo::new(hash.to_string(), size);
        let (_, mut stream) = self.session.download_stream(&info, None).await?;
        let mut n = 0;
        while let Some(chunk) = stream.next().await? {
            n += chunk.len() as u64;
            sink(&chunk);
        }
        Ok(n)
    }
}
