//! Real programs writing to a bucket mount: `cp -r`, `rsync -a`, `tar x`,
//! `git init/add/commit`, `sqlite3` (transactions, remount, integrity check),
//! Python's `shutil.copytree`, write-temp-then-rename, `echo >> log`. Each
//! result is compared with the same program's output on a local directory,
//! and on the Hub once committed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{bytes, mount, sh, write_files, Hub, WRITE_TOKEN};

const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// Every regular file below `root`: relative path → bytes.
fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn run(cmd: &str) {
    let (ok, out, err) = sh(cmd);
    assert!(ok, "`{cmd}` failed:\n{out}\n{err}");
}

fn source_tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("sub{}/file {i}.bin", i % 4), bytes(i, 1000 + i as usize * 7919)))
        .chain([("top.txt".to_string(), b"top\n".to_vec()), ("deep/er/x #1.txt".to_string(), b"x".to_vec())])
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    write_files(d.path(), &refs);
    d
}

fn check_hub(hub: &Hub, bucket: &str, prefix: &str, want: &std::collections::BTreeMap<String, Vec<u8>>) {
    for (rel, b) in want {
        let path = format!("{prefix}{rel}");
        let got = hub.bucket_bytes(bucket, &path);
        assert!(
            got.as_deref() == Some(&b[..]),
            "{path}: {:?} bytes on the Hub, {} expected",
            got.map(|g| g.len()),
            b.len()
        );
    }
}

#[test]
fn copy_tools_in_the_default_mode() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let m = mount(&hub, &["bucket", "alice/b", "--hf-token", WRITE_TOKEN]);
    let src = source_tree();
    let want = tree(src.path());
    let mp = m.path().display().to_string();
    let s = src.path().display().to_string();
    run(&format!("cp -r '{s}' '{mp}/cp'"));
    assert_eq!(tree(&m.p("cp")), want);
    run(&format!("rsync -a '{s}/' '{mp}/rsync/'"));
    assert_eq!(tree(&m.p("rsync")), want);
    let tarball = tempfile::NamedTempFile::new().unwrap();
    run(&format!("tar -C '{s}' -cf '{}' .", tarball.path().display()));
    run(&format!("mkdir '{mp}/tar' && tar -C '{mp}/tar' -xf '{}'", tarball.path().display()));
    assert_eq!(tree(&m.p("tar")), want);
    run(&format!("python3 -c 'import shutil,sys; shutil.copytree(sys.argv[1], sys.argv[2])' '{s}' '{mp}/py'"));
    assert_eq!(tree(&m.p("py")), want);
    // Write a temporary file, then rename it over the real one (editors, atomic savers).
    run(&format!("printf v1 > '{mp}/config.json' && printf v2 > '{mp}/.config.json.tmp' && mv '{mp}/.config.json.tmp' '{mp}/config.json'"));
    assert_eq!(std::fs::read(m.p("config.json")).unwrap(), b"v2");
    // Appending to a log, line by line, in the default mode.
    for i in 0..20 {
        run(&format!("echo line {i} >> '{mp}/train.log'"));
    }
    let log: String = (0..20).map(|i| format!("line {i}\n")).collect();
    assert_eq!(std::fs::read_to_string(m.p("train.log")).unwrap(), log);
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    for prefix in ["cp/", "rsync/", "tar/", "py/"] {
        check_hub(&hub, "alice/b", prefix, &want);
    }
    assert_eq!(hub.bucket_bytes("alice/b", "config.json").as_deref(), Some(&b"v2"[..]));
    assert!(!hub.bucket_files("alice/b").contains_key(".config.json.tmp"));
    assert_eq!(hub.bucket_bytes("alice/b", "train.log").as_deref(), Some(log.as_bytes()));
    // rsync rewrites what changed, through temp files and renames.
    std::fs::write(src.path().join("top.txt"), b"top, changed\n").unwrap();
    run(&format!("rsync -a '{s}/' '{mp}/rsync/'"));
    assert_eq!(std::fs::read(m.p("rsync/top.txt")).unwrap(), b"top, changed\n");
    m.block_on(m.engine().wait_committed(COMMIT_WAIT)).unwrap();
    assert_eq!(hub.bucket_bytes("alice/b", "rsync/top.txt").as_deref(), Some(&b"top, changed\n"[..]));
}

#[test]
fn git_and_sqlite_in_advanced_mode() {
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    let args = [
        "bucket",
        "alice/b",
        "--hf-token",
        WRITE_TOKEN,
        "--advanced-writes",
        "--flush-debounce-ms",
        "300",
        "--cache-dir",
        &dir,
    ];
    {
        let m = mount(&hub, &args);
        let mp = m.path().display().to_string();
        let git = format!("git -C '{mp}/repo' -c user.name=t -c user.email=t@example.com");
        run(&format!("git init -q '{mp}/repo'"));
        run(&format!("printf 'hello\\n' > '{mp}/repo/a.txt' && {git} add a.txt && {git} commit -qm first"));
        run(&format!("printf 'more\\n' >> '{mp}/repo/a.txt' && {git} commit -qam second"));
        let (ok, log, _) = sh(&format!("{git} log --oneline"));
        assert!(ok && log.lines().count() == 2, "{log}");
        run(&format!("{git} fsck --no-progress"));
        // sqlite: a database with 1,000 rows inserted in transactions.
        let db = format!("{mp}/db.sqlite");
        let mut sql = String::from("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);\n");
        for batch in 0..10 {
            sql.push_str("BEGIN;\n");
            for i in 0..100 {
                sql.push_str(&format!("INSERT INTO t (v) VALUES ('row {}');\n", batch * 100 + i));
            }
            sql.push_str("COMMIT;\n");
        }
        let script = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(script.path(), sql).unwrap();
        run(&format!("sqlite3 '{db}' < '{}'", script.path().display()));
        let (ok, n, _) = sh(&format!("sqlite3 '{db}' 'SELECT count(*) FROM t'"));
        assert!(ok && n.trim() == "1000", "{n}");
    }
    // Unmounted (drained) and mounted again on the same cache dir: all there and consistent.
    let m = mount(&hub, &args);
    let mp = m.path().display().to_string();
    let (ok, out, err) = sh(&format!("sqlite3 '{mp}/db.sqlite' 'PRAGMA integrity_check; SELECT count(*) FROM t;'"));
    assert!(ok && out.split_whitespace().collect::<Vec<_>>() == ["ok", "1000"], "{out} {err}");
    let (ok, log, _) = sh(&format!("git -C '{mp}/repo' log --oneline"));
    assert!(ok && log.lines().count() == 2, "{log}");
    run(&format!("git -C '{mp}/repo' fsck --no-progress"));
    assert!(hub.bucket_files("alice/b").contains_key("db.sqlite"));
    assert!(hub.bucket_files("alice/b").keys().any(|k| k.starts_with("repo/.git/objects/")));
}
