//! READDIR paging from snapshots. A listing from the start (cookie 0) takes a
//! snapshot of the directory under a new cookie verifier; later pages are
//! slices of it, the cookie being the position after an entry, so each page
//! costs the same however deep in the directory it is (no re-listing, no
//! search). A verifier this server no longer has (evicted, or from an earlier
//! boot) gets a fresh snapshot and continues at the same position: entries
//! added or removed meanwhile may shift the page by as many, which a client
//! tolerates better than NFS3ERR_BAD_COOKIE (some abort the listing on it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::types::{DirEntry, Ino};

/// Snapshots kept at once; the least recently used goes first.
const MAX_SNAPSHOTS: usize = 256;
/// A snapshot unused this long is dropped.
const SNAPSHOT_IDLE: Duration = Duration::from_secs(300);

struct Snapshot {
    dir: Ino,
    entries: Arc<Vec<DirEntry>>,
    used: Instant,
}

pub struct Snapshots {
    inner: Mutex<Inner>,
}

struct Inner {
    next: u64,
    by_verifier: HashMap<u64, Snapshot>,
}

/// One page: the entries with their cookies, whether it ends the directory, the verifier.
pub struct Page<T> {
    pub entries: Vec<(u64, T)>,
    pub end: bool,
    pub verifier: u64,
}

impl Snapshots {
    /// `seed` starts the verifiers (the boot number: verifiers differ between boots).
    pub fn new(seed: u64) -> Self {
        Snapshots { inner: Mutex::new(Inner { next: seed.max(1), by_verifier: HashMap::new() }) }
    }

    /// The snapshot a page continues, if this server still has it.
    pub fn get(&self, dir: Ino, verifier: u64) -> Option<Arc<Vec<DirEntry>>> {
        let mut inner = self.inner.lock();
        let s = inner.by_verifier.get_mut(&verifier).filter(|s| s.dir == dir)?;
        s.used = Instant::now();
        Some(s.entries.clone())
    }

    /// Keeps a new snapshot of `dir`; answers its verifier.
    pub fn insert(&self, dir: Ino, entries: Arc<Vec<DirEntry>>) -> u64 {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        inner.by_verifier.retain(|_, s| now.duration_since(s.used) < SNAPSHOT_IDLE);
        if inner.by_verifier.len() >= MAX_SNAPSHOTS {
            let oldest = inner.by_verifier.iter().min_by_key(|(_, s)| s.used).map(|(v, _)| *v);
            if let Some(v) = oldest {
                inner.by_verifier.remove(&v);
            }
        }
        inner.next = inner.next.wrapping_add(1).max(1);
        let verifier = inner.next;
        inner.by_verifier.insert(verifier, Snapshot { dir, entries, used: now });
        verifier
    }
}

/// The page of `entries` after position `cookie` (0: the first), at most `max` entries.
pub fn page<T: Clone>(entries: &[T], cookie: u64, max: usize, verifier: u64) -> Page<T> {
    let start = usize::try_from(cookie).unwrap_or(usize::MAX).min(entries.len());
    let end = start.saturating_add(max.max(1)).min(entries.len());
    let out = entries[start..end].iter().enumerate().map(|(i, e)| ((start + i + 1) as u64, e.clone())).collect();
    Page { entries: out, end: end == entries.len(), verifier }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i:05}")).collect()
    }

    fn entries(n: usize) -> Vec<DirEntry> {
        Vec::with_capacity(n)
    }

    #[test]
    fn pages_follow_cookies_to_the_end() {
        let all = names(10);
        let mut cookie = 0;
        let mut seen = Vec::new();
        loop {
            let p = page(&all, cookie, 3, 9);
            seen.extend(p.entries.iter().map(|(_, e)| e.clone()));
            if p.end {
                break;
            }
            cookie = p.entries.last().unwrap().0;
        }
        assert_eq!(seen, all);
        assert!(page(&all, 99, 3, 9).entries.is_empty() && page(&all, u64::MAX, 3, 9).end);
    }

    #[test]
    fn snapshots_are_per_directory_and_bounded() {
        let s = Snapshots::new(5);
        let v = s.insert(2, Arc::new(entries(3)));
        assert!(s.get(2, v).is_some());
        assert!(s.get(3, v).is_none(), "a verifier names one directory");
        for _ in 0..MAX_SNAPSHOTS {
            s.insert(4, Arc::new(entries(1)));
        }
        assert!(s.get(2, v).is_none(), "the least recently used went");
        assert!(s.inner.lock().by_verifier.len() <= MAX_SNAPSHOTS);
    }
}
