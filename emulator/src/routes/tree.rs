//! Directory listings over a sorted key map, shared by repo and bucket trees.
//! One level is listed by skipping over each subdirectory's keys in one
//! seek, so listing a directory costs its own entries, not its subtree.

use std::collections::BTreeMap;
use std::ops::Bound;

/// One entry of a listing: a key of the map, or a directory made of keys.
pub enum Entry<'a, V> {
    File(&'a str, &'a V),
    Dir(String),
}

impl<V> Entry<'_, V> {
    pub fn path(&self) -> &str {
        match self {
            Entry::File(p, _) => p,
            Entry::Dir(p) => p,
        }
    }
}

/// The smallest key after every key that starts with `dir/`.
fn after_dir(dir: &str) -> String {
    format!("{dir}0") // '0' is the character right after '/'
}

/// Lists the entries one level below the raw string `prefix`: each key that
/// starts with it is a file, or contributes the directory it lies in. A key
/// continuing the prefix with `/` is grouped at the next `/` after that.
/// Returns at most `limit` entries and the cursor of the next page.
pub fn list_level<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &str,
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<Entry<'a, V>>, Option<String>) {
    let mut lower = match cursor {
        Some(c) if c.starts_with("d:") => Bound::Included(after_dir(&c[2..])),
        Some(c) if c.starts_with("f:") => Bound::Excluded(c[2..].to_string()),
        _ => Bound::Included(prefix.to_string()),
    };
    let mut out = Vec::new();
    loop {
        let Some((key, value)) = map.range((lower.clone(), Bound::Unbounded)).next() else {
            return (out, None);
        };
        if !key.starts_with(prefix) {
            return (out, None);
        }
        if out.len() == limit {
            let last = out.last().map(|e: &Entry<V>| match e {
                Entry::File(p, _) => format!("f:{p}"),
                Entry::Dir(p) => format!("d:{p}"),
            });
            return (out, last);
        }
        let from = if key[prefix.len()..].starts_with('/') { prefix.len() + 1 } else { prefix.len() };
        match key[from..].find('/') {
            Some(i) => {
                let dir = key[..from + i].to_string();
                lower = Bound::Included(after_dir(&dir));
                out.push(Entry::Dir(dir));
            }
            None => {
                lower = Bound::Excluded(key.clone());
                out.push(Entry::File(key, value));
            }
        }
    }
}

/// Lists everything below `prefix` (which ends with `/` or is empty): every
/// file and every directory, each directory just before its first file.
/// Pages by position (`i:<offset>` cursors).
pub fn list_recursive<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &str,
    cursor: Option<&str>,
    limit: usize,
) -> (Vec<Entry<'a, V>>, Option<String>) {
    let offset: usize = cursor.and_then(|c| c.strip_prefix("i:")).and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut all = Vec::new();
    let mut open_dirs: Vec<String> = Vec::new();
    for (key, value) in map.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)) {
        let rel = &key[prefix.len()..];
        open_dirs.retain(|d| key.starts_with(&format!("{d}/")));
        let mut end = 0;
        while let Some(i) = rel[end..].find('/') {
            let dir = format!("{prefix}{}", &rel[..end + i]);
            if !open_dirs.contains(&dir) {
                open_dirs.push(dir.clone());
                all.push(Entry::Dir(dir));
            }
            end += i + 1;
        }
        all.push(Entry::File(key, value));
    }
    let total = all.len();
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    let next = (offset + page.len() < total).then(|| format!("i:{}", offset + page.len()));
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> BTreeMap<String, ()> {
        keys.iter().map(|k| (k.to_string(), ())).collect()
    }

    fn paths<V>(entries: &[Entry<V>]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::File(p, _) => p.to_string(),
                Entry::Dir(p) => format!("{p}/"),
            })
            .collect()
    }

    #[test]
    fn one_level_groups_subdirectories() {
        let m = map(&["a-b/x", "a/1.manifest", "a/1.manifest#1", "a/y/z", "a/y/zz", "a0", "b"]);
        let (root, next) = list_level(&m, "", None, 100);
        assert_eq!(paths(&root), ["a-b/", "a/", "a0", "b"]);
        assert!(next.is_none());
        let (a, _) = list_level(&m, "a/", None, 100);
        assert_eq!(paths(&a), ["a/1.manifest", "a/1.manifest#1", "a/y/"]);
        // Raw prefix: a file name that continues the prefix is returned too.
        let (raw, _) = list_level(&m, "a/1.manifest", None, 100);
        assert_eq!(paths(&raw), ["a/1.manifest", "a/1.manifest#1"]);
        let (raw_dir, _) = list_level(&m, "a", None, 100);
        assert_eq!(paths(&raw_dir), ["a-b/", "a/1.manifest", "a/1.manifest#1", "a/y/", "a0"]);
    }

    #[test]
    fn one_level_pages_resume_exactly() {
        let m = map(&["a/1", "a/2", "b", "c/d/e", "c/f", "g"]);
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = list_level(&m, "", cursor.as_deref(), 2);
            seen.extend(paths(&page));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ["a/", "b", "c/", "g"]);
    }

    #[test]
    fn recursive_lists_dirs_before_their_files() {
        let m = map(&["a/b/c", "a/b/d", "a/e", "f"]);
        let (all, _) = list_recursive(&m, "", None, 100);
        assert_eq!(paths(&all), ["a/", "a/b/", "a/b/c", "a/b/d", "a/e", "f"]);
        let (page, next) = list_recursive(&m, "a/", None, 2);
        assert_eq!(paths(&page), ["a/b/", "a/b/c"]);
        let (rest, end) = list_recursive(&m, "a/", next.as_deref(), 10);
        assert_eq!(paths(&rest), ["a/b/d", "a/e"]);
        assert!(end.is_none());
    }
}
