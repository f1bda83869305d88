//! The on-disk format of the chunk cache: blocks in segment files of
//! `SEGMENT_BLOCKS` consecutive blocks of one content (one file per 16 MiB
//! rather than per block: creating inodes is what costs a file system most).
//! A file starts with a header per slot (magic, length, CRC32), then the slots'
//! data, page-aligned. A slot is valid once its header is written, which
//! happens after its data; evicting it zeroes the header and punches the data
//! out.
//!
//! Slot data moves with direct I/O (`O_DIRECT`, page-aligned buffers and
//! offsets): the cache's bytes already live in the chunk cache's memory, so a
//! second copy in the page cache only cost CPU (the copy, the dirty writeback,
//! the reclaim) and, on this kind of VM disk, ran at a third of the device's
//! speed. Headers stay buffered (16 bytes each, in the first page, which data
//! never shares). A file system that refuses direct I/O (`EINVAL`) is used
//! buffered from then on.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::BLOCK_BYTES;
use crate::types::{direct_io_refused, DIRECT_ALIGN};

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

/// Whether slot data still goes through direct I/O: cleared for good (this process) the first
/// time the cache's file system refuses it.
static DIRECT_IO: AtomicBool = AtomicBool::new(true);

/// Stops using direct I/O for slot data: the file system refused it.
fn disable_direct_io() {
    if DIRECT_IO.swap(false, Ordering::Relaxed) {
        tracing::info!("the cache's file system refuses direct I/O; cache blocks go through the page cache");
    }
}

fn direct_io() -> bool {
    DIRECT_IO.load(Ordering::Relaxed)
}

/// A heap buffer aligned for direct I/O; `len` bytes of it are initialised and visible.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
    len: usize,
}

// SAFETY: the buffer is plain owned memory; no interior mutability once shared.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `cap` bytes (rounded up to `DIRECT_ALIGN`): zeroed and all visible when `zero`, else
    /// left uninitialised with none visible yet (a read fills them and sets `len`).
    fn new(cap: usize, zero: bool) -> Self {
        let cap = cap.max(DIRECT_ALIGN).next_multiple_of(DIRECT_ALIGN);
        let layout = std::alloc::Layout::from_size_align(cap, DIRECT_ALIGN).expect("valid layout");
        // SAFETY: a non-zero size; the null result is handled.
        let ptr = unsafe {
            if zero {
                std::alloc::alloc_zeroed(layout)
            } else {
                std::alloc::alloc(layout)
            }
        };
        let ptr = std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, cap, len: if zero { cap } else { 0 } }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len <= cap` bytes, initialised (zeroed at allocation or read into, then only written).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.cap, DIRECT_ALIGN).expect("valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// Opens `path` for slot data: with `O_DIRECT` when `direct` and the file system takes it, else
/// buffered. Returns the file and whether it is direct.
fn open_data(path: &Path, write: bool, direct: bool) -> std::io::Result<(std::fs::File, bool)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    if write {
        opts.write(true).create(true).truncate(false);
    }
    if direct {
        match opts.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => return Ok((f, true)),
            Err(e) if direct_io_refused(&e) => disable_direct_io(),
            Err(e) => return Err(e),
        }
    }
    Ok((opts.open(path)?, false))
}

thread_local! {
    /// The writer's staging buffer (direct writes need aligned memory), kept between writes.
    static WRITE_BUF: std::cell::RefCell<AlignedBuf> =
        std::cell::RefCell::new(AlignedBuf::new(BLOCK_BYTES as usize, true));
}

/// Writes the data of consecutive slots from `first` (every block but the last a whole
/// `BLOCK_BYTES`): direct, from one aligned copy padded with zeros to a whole page (the headers
/// keep the true lengths), or buffered.
fn write_data(path: &Path, first: u64, blocks: &[&[u8]], direct: bool) -> std::io::Result<()> {
    let (f, direct) = open_data(path, true, direct)?;
    let at = data_at(first);
    if direct {
        let total: usize = blocks.iter().map(|b| b.len()).sum();
        let written = WRITE_BUF.with_borrow_mut(|buf| {
            let padded = total.next_multiple_of(DIRECT_ALIGN);
            if buf.cap < padded {
                *buf = AlignedBuf::new(padded, true);
            }
            buf.len = padded;
            let out = buf.as_mut_slice();
            let mut n = 0;
            for b in blocks {
                out[n..n + b.len()].copy_from_slice(b);
                n += b.len();
            }
            out[n..].fill(0);
            f.write_all_at(out, at)
        });
        match written {
            Err(e) if direct_io_refused(&e) => disable_direct_io(),
            r => return r,
        }
        return write_data(path, first, blocks, false);
    }
    let mut n = 0;
    for b in blocks {
        f.write_all_at(b, at + n)?;
        n += b.len() as u64;
    }
    Ok(())
}

/// Reads `len` bytes at `offset` (page-aligned) of a segment file's data: direct into an
/// aligned buffer, or buffered. Shorter only at the end of the file.
fn read_data(path: &Path, offset: u64, len: usize, direct: bool) -> std::io::Result<Bytes> {
    let (f, direct) = open_data(path, false, direct)?;
    if !direct {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = f;
        f.seek(SeekFrom::Start(offset))?;
        let mut data = Vec::with_capacity(len);
        (&mut f).take(len as u64).read_to_end(&mut data)?;
        return Ok(Bytes::from(data));
    }
    let mut buf = AlignedBuf::new(len, false);
    // Into the uninitialised buffer; only what was read is ever visible.
    // SAFETY: `buf.cap` writable bytes, owned by `buf`.
    let got = match unsafe { read_full_raw(&f, buf.ptr.as_ptr(), buf.cap, offset) } {
        Ok(got) => got,
        Err(e) if direct_io_refused(&e) => {
            disable_direct_io();
            return read_data(path, offset, len, false);
        }
        Err(e) => return Err(e),
    };
    buf.len = got.min(len);
    Ok(Bytes::from_owner(buf))
}

/// Writes a block into its slot: the data, then the header that makes it valid.
#[cfg(test)]
pub(super) fn write_block(loc: &DiskLoc, data: &[u8]) -> std::io::Result<()> {
    write_blocks(&loc.path, loc.slot, &[data])
}

/// Writes blocks into consecutive slots of one segment file from `first` (every block but the
/// last a whole `BLOCK_BYTES`), in one write of their data: their headers are zeroed, the data
/// written, then the headers that make them valid.
pub(super) fn write_blocks(path: &Path, first: u64, blocks: &[&[u8]]) -> std::io::Result<()> {
    write_blocks_as(path, first, blocks, direct_io())
}

fn write_blocks_as(path: &Path, first: u64, blocks: &[&[u8]], direct: bool) -> std::io::Result<()> {
    let n = blocks.len() as u64;
    assert!(first + n <= SEGMENT_BLOCKS, "slots {first}+{n} past a segment");
    assert!(blocks.iter().rev().skip(1).all(|b| b.len() as u64 == BLOCK_BYTES), "a short block mid-run");
    // Only the segment's own directory is made: once the cache root is gone (the mount is
    // over, its cache dir removed), a late write fails instead of recreating the tree.
    if let Some(dir) = path.parent() {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    let f = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path)?;
    let mut headers = vec![0u8; (n * SLOT_HEADER_BYTES) as usize];
    f.write_all_at(&headers, header_at(first))?;
    write_data(path, first, blocks, direct)?;
    for (h, data) in headers.chunks_exact_mut(SLOT_HEADER_BYTES as usize).zip(blocks) {
        h[..4].copy_from_slice(BLOCK_MAGIC);
        h[4..8].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[8..12].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
    }
    f.write_all_at(&headers, header_at(first))
}

/// Punches a slot out (header zeroed, data deallocated), or deletes the whole file.
pub(super) fn drop_block(loc: &DiskLoc, last: bool) -> std::io::Result<()> {
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

/// Slot `slot`'s header in `headers` (header bytes from slot 0's on): the block's length and
/// CRC, or `None` when the slot is empty, invalid or cut off.
fn parse_header(headers: &[u8], slot: u64) -> Option<(usize, u32)> {
    let at = header_at(slot) as usize;
    let header = headers.get(at..at + SLOT_HEADER_BYTES as usize)?;
    if &header[..4] != BLOCK_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    (len as u64 <= BLOCK_BYTES).then_some((len, crc))
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
    read_run_as(path, first, count, direct_io())
}

fn read_run_as(
    path: &Path,
    first: u64,
    count: u64,
    direct: bool,
) -> std::io::Result<Vec<Option<(Bytes, usize, usize)>>> {
    let last = (first + count).min(SEGMENT_BLOCKS);
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![None; count as usize]),
        Err(e) => return Err(e),
    };
    // Every header in one read (they share the first page).
    let mut page = [0u8; SEGMENT_DATA_OFFSET as usize];
    let n = read_full_at(&f, &mut page, 0)?;
    let headers: Vec<Option<(usize, u32)>> = (first..last).map(|slot| parse_header(&page[..n], slot)).collect();
    // The data from the first slot to the end of the last valid one.
    let Some(end) =
        headers.iter().enumerate().rev().find_map(|(i, h)| h.map(|(len, _)| i as u64 * BLOCK_BYTES + len as u64))
    else {
        return Ok(vec![None; count as usize]);
    };
    drop(f);
    let data = read_data(path, data_at(first), (end as usize).next_multiple_of(DIRECT_ALIGN), direct)?;
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

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
fn read_full_at(f: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes.
    unsafe { read_full_raw(f, buf.as_mut_ptr(), buf.len(), offset) }
}

/// Reads up to `cap` bytes into `ptr` at `offset` until they are all read or the file ends;
/// returns the bytes read.
///
/// # Safety
/// `ptr` must be valid for `cap` bytes of writes (they need not be initialised).
unsafe fn read_full_raw(f: &std::fs::File, ptr: *mut u8, cap: usize, offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < cap {
        // SAFETY: `cap - got` writable bytes from `got`, by the caller's promise.
        let n =
            unsafe { libc::pread(f.as_raw_fd(), ptr.add(got).cast(), cap - got, (offset + got as u64) as libc::off_t) };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(got)
}

/// The blocks a segment file holds: (slot, data offset, length) of each valid header.
/// For tests and tools; the cache itself checks data when it reads it.
pub fn segment_blocks(path: &Path) -> std::io::Result<Vec<(u64, u64, u64)>> {
    let f = std::fs::File::open(path)?;
    let mut page = [0u8; SEGMENT_DATA_OFFSET as usize];
    let n = read_full_at(&f, &mut page, 0)?;
    let mut out = Vec::new();
    for slot in 0..SEGMENT_BLOCKS {
        if let Some((len, _)) = parse_header(&page[..n], slot) {
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
        assert_eq!(raw.len() as u64, data_at(1) + 4096, "data padded to a whole page");
        std::fs::write(&path, &raw[..raw.len() - 4096 + 3]).unwrap();
        assert!(read_block(&at(1)).unwrap().is_none(), "truncated");

        write_block(&at(1), b"second").unwrap();
        drop_block(&at(1), false).unwrap();
        assert!(read_block(&at(1)).unwrap().is_none(), "punched");
        drop_block(&at(0), true).unwrap();
        assert!(!path.exists());
        assert!(read_block(&at(0)).unwrap().is_none(), "deleted");
    }

    #[test]
    fn direct_and_buffered_slots_read_back_alike() {
        let dir = tempfile::tempdir().unwrap();
        let at = |i: u64| DiskLoc::of(dir.path(), &format!("cd34-{i}")).unwrap();
        let block = |seed: u8, len: usize| (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect::<Vec<u8>>();
        // Full blocks, a last block that ends mid-page, one that is a page exactly.
        let blocks = [block(1, BLOCK_BYTES as usize), block(2, BLOCK_BYTES as usize), block(3, 5000), block(4, 4096)];
        for (direct_write, direct_read) in [(true, true), (false, true), (true, false), (false, false)] {
            for (i, b) in blocks.iter().enumerate() {
                write_blocks_as(&at(i as u64).path, i as u64, &[b], direct_write).unwrap();
            }
            let run = read_run_as(&at(0).path, 0, 4, direct_read).unwrap();
            assert!(run.iter().all(|s| s.is_some()), "one at a time ({direct_write}, {direct_read})");
            // One write of a run: whole blocks, then a short last one.
            let all: Vec<&[u8]> = blocks[..3].iter().map(|b| &b[..]).collect();
            write_blocks_as(&at(0).path, 0, &all, direct_write).unwrap();
            let run = read_run_as(&at(0).path, 0, 4, direct_read).unwrap();
            for (i, b) in blocks.iter().enumerate() {
                let (buf, off, len) =
                    run[i].clone().unwrap_or_else(|| panic!("slot {i} ({direct_write}, {direct_read})"));
                assert_eq!(&buf[off..off + len], &b[..], "slot {i} ({direct_write}, {direct_read})");
            }
            for (i, b) in blocks.iter().enumerate().skip(2) {
                let run = read_run_as(&at(i as u64).path, i as u64, 1, direct_read).unwrap();
                let (buf, off, len) = run[0].clone().unwrap();
                assert_eq!(&buf[off..off + len], &b[..], "slot {i} alone");
            }
            std::fs::remove_file(at(0).path).unwrap();
        }
    }
}
