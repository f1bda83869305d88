//! Where the HF token comes from: `--hf-token`, `HF_TOKEN`, or `--token-file`
//! (re-read when it changes, so credentials can rotate under a running mount).
//! The token is never formatted into logs or errors: `Debug` redacts it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;

/// How often a token file's modification time is checked (on a thread of its own: requests
/// only read the token last loaded).
const TOKEN_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct TokenSource {
    fixed: Option<Arc<str>>,
    file: Option<Arc<TokenFile>>,
}

struct TokenFile {
    path: PathBuf,
    token: RwLock<Option<Arc<str>>>,
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

    /// Reads the token from `path` now (failing if it cannot, or if the file does not hold a
    /// token), and again whenever the file changes. A later read that fails or finds garbage
    /// keeps the token it had, with a warning.
    pub fn file(path: PathBuf) -> std::io::Result<Self> {
        let token = read_token(&path)?;
        let tf = Arc::new(TokenFile { path, token: RwLock::new(token) });
        watch(Arc::downgrade(&tf), mtime(&tf.path));
        Ok(Self { fixed: None, file: Some(tf) })
    }

    /// The current token, if any (never touches the disk).
    pub fn current(&self) -> Option<Arc<str>> {
        match (&self.fixed, &self.file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => f.token.read().clone(),
            (None, None) => None,
        }
    }
}

impl TokenFile {
    /// Loads the file again if its modification time moved from `seen`.
    fn check(&self, seen: &mut Option<SystemTime>) {
        let now = mtime(&self.path);
        if now.is_some() && now == *seen {
            return;
        }
        match read_token(&self.path) {
            Ok(t) => {
                *self.token.write() = t;
                *seen = now;
            }
            Err(e) => {
                tracing::warn!("cannot re-read token file {}: {e}; keeping the previous token", self.path.display())
            }
        }
    }
}

/// Checks the file every interval while anyone holds it.
fn watch(file: Weak<TokenFile>, mut seen: Option<SystemTime>) {
    let spawned = std::thread::Builder::new().name("hf-mount-token".into()).spawn(move || loop {
        std::thread::sleep(TOKEN_FILE_CHECK_INTERVAL);
        let Some(f) = file.upgrade() else { return };
        f.check(&mut seen);
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the token file watcher ({e}); the token will not follow the file");
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

/// The token a file holds (`None`: empty, anonymous). What is not printable ASCII without
/// spaces is not a token (a file rotated to garbage, a binary), and is refused unquoted.
fn read_token(path: &Path) -> std::io::Result<Option<Arc<str>>> {
    let bytes = std::fs::read(path)?;
    let t = bytes.trim_ascii();
    if t.is_empty() {
        return Ok(None);
    }
    if !t.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} does not hold a token ({} bytes, not all printable ASCII without spaces)",
                path.display(),
                t.len()
            ),
        ));
    }
    Ok(Some(Arc::from(std::str::from_utf8(t).expect("ASCII"))))
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
        std::fs::write(&path, "hf_second").unwrap();
        let tf = src.file.as_ref().unwrap();
        let mut seen = None;
        tf.check(&mut seen);
        assert_eq!(src.current().as_deref(), Some("hf_second"));
        // Rotated to garbage, or unreadable: the previous token stays.
        std::fs::write(&path, b"hf_\xff\x00 broken\n").unwrap();
        tf.check(&mut None);
        assert_eq!(src.current().as_deref(), Some("hf_second"));
        std::fs::remove_file(&path).unwrap();
        tf.check(&mut None);
        assert_eq!(src.current().as_deref(), Some("hf_second"));
        // A garbage file at the start is refused, without its bytes in the message.
        std::fs::write(&path, b"hf_secret\x01tail").unwrap();
        let err = TokenSource::file(path.clone()).err().unwrap().to_string();
        assert!(err.contains("does not hold a token") && !err.contains("hf_secret"), "{err}");
        let fixed = TokenSource::fixed("hf_secret_value");
        assert!(!format!("{fixed:?}").contains("hf_secret_value"));
        assert!(TokenSource::fixed("  ").current().is_none());
        assert!(TokenSource::file(dir.path().join("missing")).is_err());
    }
}
