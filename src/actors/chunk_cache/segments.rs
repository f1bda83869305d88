//! The on-disk format of the chunk cache: blocks in segment files of
//! `SEGMENT_BLOCKS` consecutive blocks of one content (one file per 16 MiB
//! rather than per block: creating inodes is what costs a file system most).
//! A file starts with a header per slot (magic, length, CRC32), then the slots'
//! data, page-aligned. A slot is valid once its header is written, which
//! happens after its data; evicting it zeroes the header and punches the data
//! out.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::BLOCK_BYTES;

const BLOCK_MAGIC: &[u8; 4] = b"HFMB";
/// Blocks per segment file.
pub const SEGMENT_BLOCKS: u64 = 64;
/// A slot header: magic, length, CRC32, reserved.
const SLOT_HEADER_BYTES: u64 = 16;
/// Headers come first; slot data starts page-aligned after them.
const SEGMENT_DATA_OFFSET: u64 = 4096;
const _: () = assert!(SEGMENT_BLOCKS * SLOT_HEADER_BYTES <= SEGMENT_DATA_OFFSET);

/// Where a block lives on disk: a slot of a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskLoc {
    pub path: PathBuf,
    pub slot: u64,
}

impl DiskLoc {
    /// The slot of block `name` (`<digest>-<index>`) under the cache's `dir`.
    pub(super) fn of(dir: &Path, name: &str) -> Option<Self> {
        let (digest, index) = name.rsplit_once('-')?;
        let index: u64 = index.parse().ok()?;
        let file = format!("{digest}-s{}", index / SEGMENT_BLOCKS);
        Some(Self { path: dir.join(digest.get(..2)?).join(file), slot: index % SEGMENT_BLOCKS })
    }

    fn header_at(&self) -> u64 {
        header_at(self.slot)
    }

    fn data_at(&self) -> u64 {
        data_at(self.slot)
    }
}

fn header_at(slot: u64) -> u64 {
    slot * SLOT_HEADER_BYTES
}

fn data_at(slot: u64) -> u64 {
    SEGMENT_DATA_OFFSET + slot * BLOCK_BYTES
}

/// Writes a block into its slot: the data, then the header that makes it valid.
pub(super) fn write_block(loc: &DiskLoc, data: &[u8]) -> std::io::Result<()> {
    // Only the segment's own directory is made: once the cache root is gone (the mount is
    // over, its cache dir removed), a late write fails instead of recreating the tree.
    if let Some(dir) = loc.path.parent() {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    let f = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&loc.path)?;
    f.write_all_at(&[0u8; SLOT_HEADER_BYTES as usize], loc.header_at())?;
    f.write_all_at(data, loc.data_at())?;
    let mut header = [0u8; SLOT_HEADER_BYTES as usize];
    header[..4].copy_from_slice(BLOCK_MAGIC);
    header[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
    header[8..12].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
    f.write_all_at(&header, loc.header_at())
}

/// Punches a slot out (header zeroed, data deallocated), or deletes the whole file.
pub(super) fn drop_block(loc: &DiskLoc, last: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    if last {
        return std::fs::remove_file(&loc.path);
    }
    let f = std::fs::OpenOptions::new().write(true).open(&loc.path)?;
    f.write_all_at(&[0u8; SLOT_HEADER_BYTES as usize], loc.header_at())?;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on an open descriptor; failure is reported, not unsafe.
    let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, loc.data_at() as i64, BLOCK_BYTES as i64) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()); // the header is zeroed: the slot is gone anyway
    }
    Ok(())
}

/// Reads a slot's header: the block's length and CRC, or `None` when the slot is empty.
fn read_header(f: &std::fs::File, slot: u64) -> std::io::Result<Option<(usize, u32)>> {
    let mut header = [0u8; SLOT_HEADER_BYTES as usize];
    if f.read_exact_at(&mut header, header_at(slot)).is_err() || &header[..4] != BLOCK_MAGIC {
        return Ok(None);
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    Ok((len as u64 <= BLOCK_BYTES).then_some((len, crc)))
}

/// Reads a disk block back, checking its header; `None` when it is missing, corrupt or truncated.
pub fn read_block(loc: &DiskLoc) -> std::io::Result<Option<Bytes>> {
    let run = read_run(&loc.path, loc.slot, 1)?;
    Ok(run.into_iter().next().flatten().map(|(buf, at, len)| buf.slice(at..at + len)))
}

/// Reads slots `first..first + count` of one segment file back in one read (their data lies
/// side by side), checking each against its header: per slot, `(buffer, offset, length)` of
/// its bytes in the one buffer they share, or `None` when it is missing, corrupt or truncated.
/// The buffer is never zeroed first: the read fills it.
pub fn read_run(path: &Path, first: u64, count: u64) -> std::io::Result<Vec<Option<(Bytes, usize, usize)>>> {
    use std::io::{Read, Seek, SeekFrom};
    let last = (first + count).min(SEGMENT_BLOCKS);
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![None; count as usize]),
        Err(e) => return Err(e),
    };
    let headers: Vec<Option<(usize, u32)>> =
        (first..last).map(|slot| read_header(&f, slot)).collect::<std::io::Result<_>>()?;
    // The data from the first slot to the end of the last valid one.
    let Some(end) =
        headers.iter().enumerate().rev().find_map(|(i, h)| h.map(|(len, _)| i as u64 * BLOCK_BYTES + len as u64))
    else {
        return Ok(vec![None; count as usize]);
    };
    f.seek(SeekFrom::Start(data_at(first)))?;
    let mut data = Vec::with_capacity(end as usize);
    (&mut f).take(end).read_to_end(&mut data)?;
    let data = Bytes::from(data);
    let mut out: Vec<_> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (len, crc) = (*h)?;
            let at = i * BLOCK_BYTES as usize;
            let bytes = data.get(at..at + len)?;
            (crc32fast::hash(bytes) == crc).then(|| (data.clone(), at, len))
        })
        .collect();
    out.resize(count as usize, None);
    Ok(out)
}

/// The blocks a segment file holds: (slot, data offset, length) of each valid header.
/// For tests and tools; the cache itself checks data when it reads it.
pub fn segment_blocks(path: &Path) -> std::io::Result<Vec<(u64, u64, u64)>> {
    let f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for slot in 0..SEGMENT_BLOCKS {
        if let Some((len, _)) = read_header(&f, slot)? {
            out.push((slot, data_at(slot), len as u64));
        }
    }
    Ok(out)
}

/// Every block on disk: (name, slot, length), from the segment headers.
pub(super) fn scan_disk(dir: &Path) -> std::io::Result<Vec<(String, DiskLoc, u64)>> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(dir)? {
        let sub = sub?.path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub)? {
            let path = f?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let Some((digest, segment)) = name.rsplit_once("-s").and_then(|(d, s)| Some((d, s.parse::<u64>().ok()?)))
            else {
                let _ = std::fs::remove_file(&path); // not ours (or an older layout): the cache is a cache
                continue;
            };
            let blocks = segment_blocks(&path)?;
            if blocks.is_empty() {
                let _ = std::fs::remove_file(&path);
            }
            for (slot, _, len) in blocks {
                let name = format!("{digest}-{}", segment * SEGMENT_BLOCKS + slot);
                out.push((name, DiskLoc { path: path.clone(), slot }, len));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_blocks_detect_corruption_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let at = |i: u64| DiskLoc::of(dir.path(), &format!("ab12-{i}")).unwrap();
        assert_eq!(at(SEGMENT_BLOCKS + 2).slot, 2);
        assert_ne!(at(SEGMENT_BLOCKS).path, at(0).path);
        write_block(&at(0), b"hello block").unwrap();
        write_block(&at(1), b"second").unwrap();
        assert_eq!(read_block(&at(0)).unwrap().unwrap(), "hello block");
        assert_eq!(read_block(&at(1)).unwrap().unwrap(), "second");
        assert!(read_block(&at(2)).unwrap().is_none(), "empty slot");
        let run = read_run(&at(0).path, 0, 3).unwrap();
        let (buf, at1, len1) = run[1].clone().unwrap();
        assert_eq!(&buf[at1..at1 + len1], b"second");
        assert_eq!(at1, BLOCK_BYTES as usize, "one buffer, slots at their distance");
        assert!(run[0].as_ref().is_some_and(|(b, _, _)| b.as_ptr() == buf.as_ptr()));
        assert!(run[2].is_none());
        let found = scan_disk(dir.path()).unwrap();
        assert_eq!(found.len(), 2);

        let path = at(0).path;
        let mut raw = std::fs::read(&path).unwrap();
        raw[SEGMENT_DATA_OFFSET as usize] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        assert!(read_block(&at(0)).unwrap().is_none(), "flipped byte");
        assert_eq!(read_block(&at(1)).unwrap().unwrap(), "second", "its neighbour is untouched");
        std::fs::write(&path, &raw[..raw.len() - 3]).unwrap();
        assert!(read_block(&at(1)).unwrap().is_none(), "truncated");

        write_block(&at(1), b"second").unwrap();
        drop_block(&at(1), false).unwrap();
        assert!(read_block(&at(1)).unwrap().is_none(), "punched");
        drop_block(&at(0), true).unwrap();
        assert!(!path.exists());
        assert!(read_block(&at(0)).unwrap().is_none(), "deleted");
    }
}
