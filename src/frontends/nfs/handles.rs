//! NFS file handles: the server's boot number and the engine's inode number
//! (16 bytes). A handle from this boot names its inode. A handle from an
//! earlier boot is stale, except the root's and those of files the journal
//! carried over with uncommitted writes (the engine maps them to their inodes
//! now), so a client can resend what a restart may have lost. The boot number
//! is also the write verifier: it changes with every start.

use nfsserve::nfs::{nfs_fh3, nfsstat3, writeverf3};

use crate::engine::Engine;
use crate::types::{Ino, ROOT_INO};

const HANDLE_BYTES: usize = 16;

pub struct Handles {
    boot: u64,
}

impl Handles {
    pub fn new(boot: u64) -> Self {
        Handles { boot }
    }

    pub fn handle(&self, ino: Ino) -> nfs_fh3 {
        let mut data = Vec::with_capacity(HANDLE_BYTES);
        data.extend_from_slice(&self.boot.to_be_bytes());
        data.extend_from_slice(&ino.to_be_bytes());
        nfs_fh3 { data }
    }

    pub fn ino(&self, fh: &nfs_fh3, engine: &Engine) -> Result<Ino, nfsstat3> {
        if fh.data.len() != HANDLE_BYTES {
            return Err(nfsstat3::NFS3ERR_BADHANDLE);
        }
        let word = |i: usize| u64::from_be_bytes(fh.data[i..i + 8].try_into().expect("8 bytes"));
        let (boot, ino) = (word(0), word(8));
        if boot == self.boot || ino == ROOT_INO {
            return Ok(ino);
        }
        engine.carried_handle(boot, ino).ok_or(nfsstat3::NFS3ERR_STALE)
    }

    /// Changes at every start: a client resends unstable writes answered under another.
    pub fn write_verifier(&self) -> writeverf3 {
        self.boot.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_carry_the_boot_and_the_inode() {
        let h = Handles::new(7);
        let fh = h.handle(42);
        assert_eq!(fh.data.len(), HANDLE_BYTES);
        assert_eq!(&fh.data[..8], &7u64.to_be_bytes());
        assert_eq!(&fh.data[8..], &42u64.to_be_bytes());
        assert_ne!(Handles::new(8).write_verifier(), h.write_verifier());
    }
}
