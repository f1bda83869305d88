//! Where the HF token comes from: `--hf-token`, `HF_TOKEN`, or `--token-file`
//! (re-read when it changes, so credentials can rotate under a running mount).
//! The token is never formatted into logs or errors: `Debug` redacts it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// How often a token file's modification time is checked.
const TOKEN_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct TokenSource {
    fixed: Option<Arc<str>>,
    file: Option<Arc<TokenFile>>,
}

/// The token last read, the file's modification time then, and when it was last checked.
type Cached = (Option<Arc<str>>, Option<SystemTime>, Option<Instant>);

struct TokenFile {
    path: PathBuf,
    cached: Mutex<Cached>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match (&self.fixed, &self.file) {
            (Some(_), _) => "token (redacted)".to_string(),
            (None, Some(f)) => format!("token file {}", f.path.display()),
            (None, None) => "anonymous".to_string(),
        };
        f.write_str(&kind)
    }
}

impl TokenSource {
    pub fn anonymous() -> Self {
        Self::default()
    }

    pub fn fixed(token: &str) -> Self {
        let t = token.trim();
        Self { fixed: (!t.is_empty()).then(|| Arc::from(t)), file: None }
    }

    /// Reads the token from `path` now (failing if it cannot) and again whenever it changes.
    pub fn file(path: PathBuf) -> std::io::Result<Self> {
        let tf = TokenFile { path, cached: Mutex::new((None, None, None)) };
        tf.reload()?;
        Ok(Self { fixed: None, file: Some(Arc::new(tf)) })
    }

    /// The current token, if any.
    pub fn current(&self) -> Option<Arc<str>> {
        if let Some(t) = &self.fixed {
            return Some(t.clone());
        }
        let f = self.file.as_ref()?;
        let due = f.cached.lock().2.is_none_or(|at| at.elapsed() >= TOKEN_FILE_CHECK_INTERVAL);
        if due {
            if let Err(e) = f.reload() {
                tracing::warn!("cannot re-read token file {}: {e}; keeping the previous token", f.path.display());
            }
        }
        f.cached.lock().0.clone()
    }
}

impl TokenFile {
    fn reload(&self) -> std::io::Result<()> {
        let mtime = std::fs::metadata(&self.path)?.modified().ok();
        let mut cached = self.cached.lock();
        cached.2 = Some(Instant::now());
        if cached.1.is_some() && cached.1 == mtime {
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.path)?;
        let t = text.trim();
        cached.0 = (!t.is_empty()).then(|| Arc::from(t));
        cached.1 = mtime;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_rotates_and_debug_redacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "hf_first\n").unwrap();
        let src = TokenSource::file(path.clone()).unwrap();
        assert_eq!(src.current().as_deref(), Some("hf_first"));
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "hf_second").unwrap();
        // Force the next check.
        src.file.as_ref().unwrap().cached.lock().2 = None;
        assert_eq!(src.current().as_deref(), Some("hf_second"));
        let fixed = TokenSource::fixed("hf_secret_value");
        assert!(!format!("{fixed:?}").contains("hf_secret_value"));
        assert!(TokenSource::fixed("  ").current().is_none());
        assert!(TokenSource::file(dir.path().join("missing")).is_err());
    }
}
