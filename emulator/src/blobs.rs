//! Plain git blobs (small text files of repos), stored by their git oid.

use std::path::{Path, PathBuf};

use crate::model::git_blob_oid;

pub fn blob_path(dir: &Path, oid: &str) -> PathBuf {
    dir.join(oid)
}

/// Stores `content` (write to a temp file, fsync, rename) and returns its git oid.
pub fn put_blob(dir: &Path, content: &[u8]) -> std::io::Result<String> {
    use std::io::Write;
    let oid = git_blob_oid(content);
    let path = blob_path(dir, &oid);
    if !path.exists() {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{oid}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(oid)
}
