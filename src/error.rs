//! The one error type of the filesystem and its errno mapping. Modules
//! below (the Hub client, the xet adapter) have their own error types; they
//! become an `FsError` at the engine boundary, and only a frontend turns an
//! `FsError` into an errno or an `nfsstat3`.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("not found")]
    NotFound,
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("read-only file system")]
    ReadOnly,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("stale handle")]
    Stale,
    #[error("no space: {0}")]
    NoSpace(String),
    #[error("timed out after {0:?}: {1}")]
    TimedOut(Duration, String),
    #[error("busy, try again: {0}")]
    Again(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("not supported")]
    NotSupported,
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::PermissionDenied(_) => libc::EACCES,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::Stale => libc::ESTALE,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::TimedOut(..) | FsError::Io(_) => libc::EIO,
            FsError::Again(_) => libc::EAGAIN,
            FsError::NotSupported => libc::ENOTSUP,
            FsError::Invalid(_) => libc::EINVAL,
        }
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
    }
}
