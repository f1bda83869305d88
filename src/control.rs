//! The control socket a running mount answers, beside its pid file
//! (`$HF_MOUNT_HOME/pids/<mountpoint>.sock`): `status` (pending uploads,
//! failures, block cache counters) and `sync` (wait until everything pending now is committed).
//! One JSON request line, one JSON answer line. `hf-mount status` and
//! `hf-mount sync` are its clients.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::engine::Engine;
use crate::types::WriteStatus;

/// Longest socket file name kept readable (a Unix socket path has at most 107 bytes).
const READABLE_NAME_MAX: usize = 60;

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Status,
    Sync,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Answer {
    pub ok: bool,
    pub source: String,
    pub writable: bool,
    #[serde(default)]
    pub status: Option<WriteStatus>,
    /// `sync`: the paths that could not be committed, with why.
    #[serde(default)]
    pub failed: Vec<(String, String)>,
    #[serde(default)]
    pub error: Option<String>,
    /// The block cache's counters (hits by tier, misses, skipped disk writes).
    #[serde(default)]
    pub cache: Option<crate::actors::chunk_cache::CacheStats>,
}

/// Where the control socket of the mount at `mountpoint` (canonical) lives.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let slug = crate::daemon::slug(mountpoint);
    let name = if slug.len() <= READABLE_NAME_MAX {
        slug
    } else {
        use sha1::{Digest, Sha1};
        hex::encode(&Sha1::digest(slug.as_bytes())[..10])
    };
    crate::daemon::home().join("pids").join(format!("{name}.sock"))
}

/// A listening control socket; removed when dropped.
pub struct ControlServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves the control socket of `engine`, mounted at `mountpoint`, on the current runtime.
pub fn serve(engine: Engine, mountpoint: &Path) -> anyhow::Result<ControlServer> {
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let path = socket_path(&canon);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a mount that died is in the way; a live one answers.
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        anyhow::bail!("another mount answers on {}", path.display());
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| anyhow::anyhow!("control socket {}: {e}", path.display()))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { continue };
            let engine = engine.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(engine, conn).await {
                    tracing::debug!("control connection: {e}");
                }
            });
        }
    });
    Ok(ControlServer { path, task })
}

async fn answer(engine: Engine, conn: UnixStream) -> anyhow::Result<()> {
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let req: Request = serde_json::from_str(line.trim())?;
    let mut a = Answer { source: engine.source().to_string(), writable: engine.writable(), ..Default::default() };
    if engine.writable() {
        if req == Request::Sync {
            match engine.sync_all().await {
                Ok(Ok(())) => {}
                Ok(Err(failed)) => a.failed = failed,
                Err(e) => a.error = Some(e.to_string()),
            }
        }
        match engine.write_status().await {
            Ok(s) => a.status = Some(s),
            Err(e) => a.error = a.error.or(Some(e.to_string())),
        }
    }
    a.cache = engine.cache_stats().await.ok();
    a.ok = a.failed.is_empty() && a.error.is_none();
    let mut out = serde_json::to_vec(&a)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// Asks the mount at `mountpoint` (blocking; within `timeout`).
pub fn ask(mountpoint: &Path, req: Request, timeout: Duration) -> anyhow::Result<Answer> {
    use std::io::{BufRead, Write};
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let path = socket_path(&canon);
    let mut conn = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| anyhow::anyhow!("no hf-mount answers for {} ({}: {e})", canon.display(), path.display()))?;
    conn.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(&req)?;
    line.push(b'\n');
    conn.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(conn)
        .read_line(&mut answer)
        .map_err(|e| anyhow::anyhow!("{}: no answer within {timeout:?}: {e}", canon.display()))?;
    Ok(serde_json::from_str(answer.trim())?)
}

/// The mountpoints that have a live control socket (for `hf-mount sync` without one).
pub fn mounts_with_sockets() -> Vec<PathBuf> {
    crate::daemon::list().into_iter().filter(|(_, alive)| *alive).map(|(r, _)| r.mountpoint).collect()
}
