//! A local Hugging Face Hub for offline use and tests.
//!
//! It serves the Hub API (repos, buckets, tokens) over HTTP and stores file
//! bytes in xet-core's own local CAS server, fronted so that tokens, faults
//! and fast ranged reads work as a mount needs them. One call starts it:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let hub = hf_hub_emulator::Emulator::start_temp().await?;
//! hub.seed_repo("alice/tiny", std::path::Path::new("./fixtures/tiny"), false).await?;
//! println!("HF_ENDPOINT={}", hub.endpoint());
//! hub.stop().await;
//! # Ok(()) }
//! ```

pub mod auth;
mod blobs;
pub mod cas;
pub mod error;
pub mod faults;
mod http;
pub mod model;
pub mod routes;
pub mod seed;
pub mod store;
pub mod testing;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use xet_runtime::core::XetContext;

pub use auth::TokenSpec;
pub use faults::{FaultKind, FaultSpec, Faults, RouteClass, Traffic};
pub use model::{RepoKind, RepoRef};
pub use seed::SeedReport;

use routes::{AppState, Shared};

/// How to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where metadata (`state.json`), git blobs and CAS data live; survives restarts.
    pub data_dir: PathBuf,
    pub host: String,
    /// 0 picks a free port.
    pub port: u16,
    pub tokens: Vec<TokenSpec>,
}

impl EmulatorConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self { data_dir: data_dir.into(), host: "127.0.0.1".into(), port: 0, tokens: Vec::new() }
    }

    pub fn token(mut self, user: &str, value: &str, write: bool) -> Self {
        self.tokens.push(TokenSpec { user: user.into(), value: value.into(), write });
        self
    }
}

/// A running emulator. Dropping it without [`Emulator::stop`] stops serving too.
pub struct Emulator {
    state: Shared,
    ctx: XetContext,
    addr: SocketAddr,
    server: Arc<http::Server>,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Emulator {
    /// Starts an emulator on `config` (inside a multi-threaded tokio runtime).
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Self> {
        Self::start_inner(config, None).await
    }

    /// Starts an emulator on a fresh temporary data dir and a free port, with no tokens.
    pub async fn start_temp() -> anyhow::Result<Self> {
        Self::start_temp_with(|c| c).await
    }

    /// Like [`Emulator::start_temp`], letting the caller adjust the config (tokens).
    pub async fn start_temp_with(f: impl FnOnce(EmulatorConfig) -> EmulatorConfig) -> anyhow::Result<Self> {
        let temp = tempfile::Builder::new().prefix("hf-hub-emulator-").tempdir()?;
        let config = f(EmulatorConfig::new(temp.path()));
        Self::start_inner(config, Some(temp)).await
    }

    async fn start_inner(config: EmulatorConfig, temp: Option<tempfile::TempDir>) -> anyhow::Result<Self> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
        let ctx = XetContext::default().context("cannot start the xet runtime")?;
        let store = store::Store::open(&data_dir)?;
        let cas = cas::Cas::start(ctx.clone(), &data_dir.join("cas")).await.context("cannot start the CAS server")?;
        let state = Arc::new(AppState {
            store,
            tokens: auth::Tokens::new(&config.tokens),
            faults: Faults::default(),
            cas,
            blob_dir: data_dir.join("blobs"),
        });
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        let server = http::Server::start(listener, routes::router(state.clone()))?;
        state.faults.serve_on(&server);
        let addr = server.addr();
        Ok(Self { state, ctx, addr, server, data_dir, _temp: temp })
    }

    /// `http://host:port`, the value for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The live fault table (the same one `/_emulator/faults` edits).
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    pub fn store(&self) -> &store::Store {
        &self.state.store
    }

    pub fn cas(&self) -> &cas::Cas {
        &self.state.cas
    }

    /// Seeds `[datasets/|spaces/]owner/name` from a folder: creates the repo if missing,
    /// else adds one commit on `main` with the folder's files.
    pub async fn seed_repo(&self, spec: &str, folder: &Path, private: bool) -> anyhow::Result<SeedReport> {
        let repo = RepoRef::parse(spec).map_err(anyhow::Error::msg)?;
        seed::seed_repo(&self.state, &self.ctx, &self.endpoint(), &repo, folder, private).await
    }

    /// Seeds bucket `ns/name` from a folder (created if missing).
    pub async fn seed_bucket(&self, id: &str, folder: &Path, private: bool) -> anyhow::Result<SeedReport> {
        seed::seed_bucket(&self.state, &self.ctx, &self.endpoint(), id, folder, private).await
    }

    /// Restarts as the emulator's process would be restarted: every connection dropped,
    /// connections refused for `down`, then served again on the same address, with
    /// everything stored kept (what was being uploaded when it went down is lost).
    /// Returns once it serves again. (The `restart` fault does the same from a request.)
    pub async fn restart(&self, down: std::time::Duration) {
        self.server.restart(down).await
    }

    /// Stops serving: every connection, stalled ones included, is dropped.
    pub async fn stop(self) {
        self.server.stop();
        self.state.cas.stop();
        // Let the accept loop and connection tasks observe the signal.
        tokio::task::yield_now().await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.stop();
        self.state.cas.stop();
    }
}
