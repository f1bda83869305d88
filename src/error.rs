//! The one error type of the filesystem and its errno mapping. Modules
//! below (the Hub client, the xet adapters, the journal and staging files)
//! have their own error types that keep their sources; they become an
//! `FsError` at the engine boundary, and the errno of every `FsError` is
//! chosen here, in one exhaustive `match`, for FUSE and NFS both.

use std::sync::Arc;
use std::time::Duration;

/// A lower-level cause, kept (not flattened into a string) so logs show the whole chain.
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("name too long: {0} bytes")]
    NameTooLong(usize),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("read-only file system")]
    ReadOnly,
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("stale handle")]
    Stale,
    /// A file or directory handle that was never opened here, or is closed.
    #[error("no such open handle")]
    BadHandle,
    #[error("no space: {0}")]
    NoSpace(String),
    #[error("file too large: {0}")]
    TooBig(String),
    #[error("timed out after {0:?}: {1}")]
    TimedOut(Duration, String),
    #[error("busy, try again: {0}")]
    Again(String),
    #[error("not supported")]
    NotSupported,
    #[error("I/O error: {0}")]
    Io(String),
    /// An I/O failure with its cause kept.
    #[error("{what}: {}", chain(.source.as_ref()))]
    Failed { what: String, source: Source },
}

/// `error: cause: cause's cause …`
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

impl FsError {
    /// An I/O failure of `what`, keeping `source`.
    pub fn io(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        FsError::Failed { what: what.into(), source: Arc::new(source) }
    }

    /// The errno for this error: every variant decided here.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NameTooLong(_) => libc::ENAMETOOLONG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::PermissionDenied(_) => libc::EACCES,
            FsError::Stale => libc::ESTALE,
            FsError::BadHandle => libc::EBADF,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::TooBig(_) => libc::EFBIG,
            FsError::TimedOut(..) | FsError::Io(_) => libc::EIO,
            FsError::Failed { source, .. } => {
                // Local disk trouble keeps its meaning, however deep in the causes: a full cache
                // disk is ENOSPC, one turned read-only (an ext4 error) EROFS, not EIO.
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
                while let Some(e) = cause {
                    match e.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()) {
                        Some(libc::ENOSPC) | Some(libc::EDQUOT) => return libc::ENOSPC,
                        Some(libc::EROFS) => return libc::EROFS,
                        Some(_) => return libc::EIO,
                        None => cause = e.source(),
                    }
                }
                libc::EIO
            }
            FsError::Again(_) => libc::EAGAIN,
            FsError::NotSupported => libc::ENOTSUP,
        }
    }

    /// Expected answers (a name that does not exist, one that does) are not worth a warning.
    pub fn is_expected(&self) -> bool {
        matches!(self, FsError::NotFound | FsError::Exists | FsError::NotEmpty | FsError::Stale)
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        FsError::io("local I/O", e)
    }
}

pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos() {
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(FsError::PermissionDenied("x".into()).errno(), libc::EACCES);
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(FsError::TimedOut(Duration::from_secs(1), "x".into()).errno(), libc::EIO);
        assert_eq!(FsError::NoSpace("q".into()).errno(), libc::ENOSPC);
        assert_eq!(FsError::NameTooLong(300).errno(), libc::ENAMETOOLONG);
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(FsError::io("staging write", full).errno(), libc::ENOSPC);
        #[derive(Debug, thiserror::Error)]
        #[error("journal: {0}")]
        struct Wrapped(#[source] std::io::Error);
        let ro = Wrapped(std::io::Error::from_raw_os_error(libc::EROFS));
        assert_eq!(FsError::io("journal write", ro).errno(), libc::EROFS);
        let reset = Wrapped(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(FsError::io("upload", reset).errno(), libc::EIO);
    }

    #[test]
    fn sources_are_kept_and_printed() {
        #[derive(Debug, thiserror::Error)]
        #[error("upload of xorb failed")]
        struct Outer(#[source] std::io::Error);
        let e = FsError::io("commit of a.bin", Outer(std::io::Error::other("connection reset")));
        assert_eq!(e.to_string(), "commit of a.bin: upload of xorb failed: connection reset");
        assert_eq!(e.errno(), libc::EIO);
    }
}
