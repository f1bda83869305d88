//! Kernel-facing adapters: they translate a protocol into engine calls and
//! hold no filesystem state of their own.

pub mod fuse;
pub mod nfs;
