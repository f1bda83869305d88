//! The value types every layer shares (hub, actors, engine, frontends): a
//! leaf module that imports nothing above it.

use std::time::SystemTime;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// Direct I/O alignment (buffers, offsets, lengths) for the chunk cache's segments and the
/// staging copies: a page, which covers every device's logical block size.
pub const DIRECT_ALIGN: usize = 4096;

/// Whether a file system refused direct I/O (`EINVAL` on an `O_DIRECT` open or transfer).
pub fn direct_io_refused(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// The longest name one directory entry may have, in bytes (as on Linux filesystems).
pub const NAME_MAX_BYTES: usize = 255;
/// The longest path inside a mount, in bytes (Linux's `PATH_MAX`): an entry deeper than
/// this could not be named by a program, nor committed as a Hub path.
pub const PATH_MAX_BYTES: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    /// Special files: local to the mount (a bucket cannot hold them), kept in the journal.
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// The name a special kind has in the journal.
    pub fn special_name(self) -> &'static str {
        match self {
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "char",
            FileKind::BlockDevice => "block",
            FileKind::Dir => "dir",
            FileKind::File => "file",
            FileKind::Symlink => "symlink",
        }
    }

    pub fn special_named(name: &str) -> Option<Self> {
        [FileKind::Fifo, FileKind::Socket, FileKind::CharDevice, FileKind::BlockDevice]
            .into_iter()
            .find(|k| k.special_name() == name)
    }

    /// The special file kind of a `mknod` mode (`S_IFIFO`, …); `None` for anything else.
    pub fn special_of_mode(mode: u32) -> Option<Self> {
        match mode & libc::S_IFMT {
            libc::S_IFIFO => Some(FileKind::Fifo),
            libc::S_IFSOCK => Some(FileKind::Socket),
            libc::S_IFCHR => Some(FileKind::CharDevice),
            libc::S_IFBLK => Some(FileKind::BlockDevice),
            _ => None,
        }
    }
}

/// What the frontends need to answer `stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    pub nlink: u32,
    /// Device number of a special file.
    pub rdev: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Attr {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

/// A directory entry with its attributes.
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

/// A time given to `setattr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

impl TimeSet {
    pub fn resolve(self, now: SystemTime) -> SystemTime {
        match self {
            TimeSet::Now => now,
            TimeSet::At(t) => t,
        }
    }
}

/// The changes one `setattr` asks for; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// How a file is being opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
    pub append: bool,
}

impl OpenMode {
    /// From the `flags` of `open(2)`.
    pub fn from_flags(flags: i32) -> Self {
        let acc = flags & libc::O_ACCMODE;
        Self {
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            truncate: flags & libc::O_TRUNC != 0,
            append: flags & libc::O_APPEND != 0,
        }
    }
}

/// A kernel cache entry that a change made stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The name no longer means what the kernel thinks (removed or replaced).
    Entry { parent: Ino, name: String },
    /// The file's content changed; drop its pages (only sent when no handle is open).
    Inode { ino: Ino },
}

/// Where a mount's writes stand, as `hf-mount status` and `hf-mount sync` report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteStatus {
    /// Paths with changes not yet committed to the Hub.
    pub pending: usize,
    /// Of those, being uploaded or committed right now.
    pub uploading: usize,
    /// Paths whose last attempt failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Commits made since the mount started.
    pub committed: u64,
}

/// A local staging file holding a file's bytes while they are not (yet) the Hub's.
pub type StagingId = u64;

/// How durable a write by inode (a stateless protocol's WRITE) is when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Written to the staging file and the journal, not synced: it survives the process
    /// dying (SIGKILL, a crash), not the machine losing power.
    Process,
    /// Also on stable storage: the staging file and the journal are synced.
    Disk,
}

/// What a lookup's answer holds of the node it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Nothing (the engine's own lookups).
    None,
    /// One kernel reference, given back by `forget` (FUSE).
    Count,
    /// The number stays valid at least this long (NFS: handles are never given back).
    For(std::time::Duration),
}
