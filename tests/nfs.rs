//! The NFS frontend, spoken to by real NFSv3 clients: the `nfs3_client`
//! crate, and Debian's libnfs-utils (`nfs-ls`, `nfs-cat`, `nfs-cp`).

mod common;

use std::time::Duration;

use common::nfs::*;
use common::{bytes, fixture_files, Hub};
use nfs3_types::nfs3::{diropargs3, filename3, nfs_fh3, nfsstat3, GETATTR3args, Nfs3Result, REMOVE3args};
use nfs3_types::xdr_codec::Opaque;

/// Runs `$op` (a lookup and a use of the handle, giving a `Result<_, nfsstat3>`) again when the
/// server answers STALE, as an NFS client does: an entry nobody holds can be unloaded by the
/// inode cap between the LOOKUP and its use (NFS reports no lookups to hold it by).
macro_rules! again_if_stale {
    ($op:expr) => {{
        let mut tries = 0;
        loop {
            match $op {
                Err(nfsstat3::NFS3ERR_STALE) if tries < 3 => tries += 1,
                done => break done,
            }
        }
    }};
}

#[test]
fn nfs3_client_reads_lists_and_gets_the_right_errors() {
    let hub = Hub::start();
    let s = serve(&hub, &["repo", "alice/tiny"]);
    let mut c = s.connect();
    s.rt.block_on(async {
        for (name, content) in fixture_files() {
            let fh = lookup_path(&mut c, name).await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(read_all(&mut c, &fh).await == content, "{name}");
        }
        // Random ranges of the Xet file.
        let want = fixture_files().into_iter().find(|(n, _)| *n == "model.safetensors").unwrap().1;
        let fh = lookup_path(&mut c, "model.safetensors").await.unwrap();
        let mut x = 3u64;
        for _ in 0..300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let off = (x >> 17) % want.len() as u64;
            let (data, _) = read_range(&mut c, &fh, off, 50_000).await.unwrap();
            assert!(data == want[off as usize..(off as usize + 50_000).min(want.len())], "range at {off}");
        }
        // A lookup in a directory never listed, then the listing of the root.
        let deep = lookup_path(&mut c, "nested dir/deeper/\u{fc}nic\u{f6}de.txt").await.unwrap();
        assert_eq!(read_all(&mut c, &deep).await, "unicode \u{2713}\n".as_bytes());
        let root = c.root_nfs_fh3();
        let (mut names, _) = list_all(&mut c, &root, 4096).await;
        names.sort();
        assert_eq!(names, ["README.md", "config.json", "model.safetensors", "nested dir", "onnx"]);
        // Errors: ENOENT, ROFS, STALE.
        assert_eq!(lookup_path(&mut c, "nope").await.unwrap_err(), nfsstat3::NFS3ERR_NOENT);
        let rm = REMOVE3args {
            object: diropargs3 { dir: root.clone(), name: filename3(Opaque::owned(b"config.json".to_vec())) },
        };
        let Nfs3Result::Err((stat, _)) = c.nfs3_client.remove(&rm).await.unwrap() else { panic!("remove succeeded") };
        assert_eq!(stat, nfsstat3::NFS3ERR_ROFS);
        let mut stale = fh.data.0.to_vec();
        stale[0] ^= 0xff; // an older server generation
        let stale = nfs_fh3 { data: Opaque::owned(stale) };
        let got = c.nfs3_client.getattr(&GETATTR3args { object: stale }).await.unwrap();
        assert!(matches!(got, Nfs3Result::Err((nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE, _))), "{got:?}");
        let unknown = nfs_fh3 { data: Opaque::owned([&fh.data.0[..8], &987654321u64.to_le_bytes()[..]].concat()) };
        let got = c.nfs3_client.getattr(&GETATTR3args { object: unknown }).await.unwrap();
        assert!(matches!(got, Nfs3Result::Err((nfsstat3::NFS3ERR_STALE, _))), "{got:?}");
        let attrs = c.nfs3_client.getattr(&GETATTR3args { object: fh.clone() }).await.unwrap().unwrap();
        assert_eq!(attrs.obj_attributes.size, want.len() as u64);
    });
}

#[test]
fn a_10k_entry_directory_pages_completely_and_remote_changes_show() {
    let hub = Hub::start();
    let files: Vec<(String, Vec<u8>)> = (0..10_000).map(|i| (format!("wide/f{i:05}.txt"), b"x".to_vec())).collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    hub.seed_repo("alice/wide", &refs, false);
    let s = serve(&hub, &["repo", "alice/wide", "--metadata-ttl-ms", "300", "--poll-interval-secs", "1"]);
    let mut c = s.connect();
    let e = hub.endpoint();
    s.rt.block_on(async {
        let dir = lookup_path(&mut c, "wide").await.unwrap();
        let (names, pages) = list_all(&mut c, &dir, 8192).await;
        assert!(pages > 10, "{pages} pages");
        assert_eq!(names.len(), 10_000);
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10_000, "no duplicates across pages");

        // A remote change: size and content both, no stale data behind a fresh attribute.
        let fh = lookup_path(&mut c, "wide/f00007.txt").await.unwrap();
        assert_eq!(read_all(&mut c, &fh).await, b"x");
        let body = "{\"key\":\"header\",\"value\":{\"summary\":\"c\"}}\n{\"key\":\"file\",\"value\":{\"path\":\"wide/f00007.txt\",\"content\":\"Y2hhbmdlZCE=\",\"encoding\":\"base64\"}}\n";
        let st = reqwest::Client::new()
            .post(format!("{e}/api/models/alice/wide/commit/main"))
            .bearer_auth(common::WRITE_TOKEN)
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        assert!(st.is_success());
        let mut seen = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let attrs = c.nfs3_client.getattr(&GETATTR3args { object: fh.clone() }).await.unwrap().unwrap();
            if attrs.obj_attributes.size == 8 {
                assert_eq!(read_all(&mut c, &fh).await, b"changed!");
                seen = true;
                break;
            }
        }
        assert!(seen, "the change did not show");
    });
}

#[test]
fn buckets_serve_read_only_and_libnfs_utils_agree() {
    let hub = Hub::start();
    hub.seed_bucket(
        "alice/b",
        &[("a/one.bin", bytes(11, 2_000_000)), ("a/two.txt", b"two\n".to_vec()), ("top #1.txt", b"top".to_vec())],
    );
    let s = serve(&hub, &["bucket", "alice/b"]);
    let mut c = s.connect();
    s.rt.block_on(async {
        let fh = lookup_path(&mut c, "a/one.bin").await.unwrap();
        assert!(read_all(&mut c, &fh).await == bytes(11, 2_000_000));
        let root = c.root_nfs_fh3();
        let (mut names, _) = list_all(&mut c, &root, 4096).await;
        names.sort();
        assert_eq!(names, ["a", "top #1.txt"]);
    });
    // The outside client: Debian's libnfs-utils.
    if std::process::Command::new("nfs-ls").arg("--help").output().is_err() {
        panic!("nfs-ls (libnfs-utils) is not installed; .ci/run installs it");
    }
    let port = s.port();
    let url = |path: &str| format!("nfs://127.0.0.1/{path}?nfsport={port}&mountport={port}&version=3");
    let ls = std::process::Command::new("nfs-ls").args(["-R", &url("/")]).output().unwrap();
    let out = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{out}{}", String::from_utf8_lossy(&ls.stderr));
    for name in ["one.bin", "two.txt", "top #1.txt"] {
        assert!(out.contains(name), "nfs-ls -R lacks {name}:\n{out}");
    }
    let cat = std::process::Command::new("nfs-cat").arg(url("/a/two.txt")).output().unwrap();
    assert_eq!(cat.stdout, b"two\n");
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("one.bin");
    let cp = std::process::Command::new("nfs-cp").arg(url("/a/one.bin")).arg(&target).output().unwrap();
    assert!(cp.status.success(), "{}", String::from_utf8_lossy(&cp.stderr));
    assert!(std::fs::read(&target).unwrap() == bytes(11, 2_000_000));
}

/// The model test of `fuse_model.rs`, spoken over NFS: random reads, whole reads, sizes,
/// READDIRPLUS listings and remote commits, on a server with tiny caches and inode table,
/// checked against a map of the repo after every step.
#[test]
fn random_operations_over_nfs_match_a_model_of_the_repo() {
    use common::model::{children, random_commit, seed_from_env, seed_model_repo, tight_options, Rng};
    let seed = seed_from_env(0x00f5_2026);
    let hub = Hub::start();
    let mut model = seed_model_repo(&hub);
    let cache = tempfile::tempdir().unwrap();
    let opts = tight_options(&cache.path().display().to_string());
    let s = serve(&hub, &opts.iter().map(String::as_str).collect::<Vec<_>>());
    let mut c = s.connect();
    let mut rng = Rng(seed);
    let mut log: Vec<String> = Vec::new();
    for step in 0..150 {
        let paths: Vec<String> = model.keys().cloned().collect();
        let path = paths[rng.below(paths.len() as u64) as usize].clone();
        let want = model[&path].clone();
        let fail = |what: String, log: &[String]| -> ! {
            panic!("seed {seed}, step {step}: {what}\noperations so far:\n  {}", log.join("\n  "))
        };
        match rng.below(100) {
            0..=39 => {
                let off = rng.below(want.len() as u64 + 10);
                let count = 1 + rng.below(1 << 20) as u32;
                log.push(format!("READ {path} @{off} +{count}"));
                let got = s.rt.block_on(async {
                    again_if_stale!(
                        async {
                            let fh = lookup_path(&mut c, &path).await?;
                            read_range(&mut c, &fh, off, count).await
                        }
                        .await
                    )
                });
                let (data, eof) = got.unwrap_or_else(|e| fail(format!("{e:?}"), &log));
                let start = (off as usize).min(want.len());
                let expect = &want[start..(start + count as usize).min(want.len())];
                if data != expect || eof != (start + data.len() >= want.len()) {
                    fail(format!("{} bytes (eof {eof}), {} expected", data.len(), expect.len()), &log);
                }
            }
            40..=59 => {
                log.push(format!("read all {path}"));
                let got = s.rt.block_on(async {
                    again_if_stale!(
                        async {
                            let fh = lookup_path(&mut c, &path).await?;
                            try_read_all(&mut c, &fh).await
                        }
                        .await
                    )
                });
                let got = got.unwrap_or_else(|e| fail(format!("{e:?}"), &log));
                if got != want {
                    fail(format!("{} bytes, {} expected", got.len(), want.len()), &log);
                }
            }
            60..=74 => {
                log.push(format!("GETATTR {path}"));
                let size = s.rt.block_on(async {
                    again_if_stale!(
                        async {
                            let fh = lookup_path(&mut c, &path).await?;
                            match c.nfs3_client.getattr(&GETATTR3args { object: fh }).await.unwrap() {
                                Nfs3Result::Ok(ok) => Ok(ok.obj_attributes.size),
                                Nfs3Result::Err((stat, _)) => Err(stat),
                            }
                        }
                        .await
                    )
                });
                let size = size.unwrap_or_else(|e| fail(format!("{e:?}"), &log));
                if size != want.len() as u64 {
                    fail(format!("size {size}, model {}", want.len()), &log);
                }
            }
            75..=89 => {
                let d = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
                log.push(format!("READDIRPLUS {d:?}"));
                let names = s.rt.block_on(async {
                    again_if_stale!(
                        async {
                            let fh = lookup_path(&mut c, &d).await?;
                            try_list_all(&mut c, &fh, 1024).await
                        }
                        .await
                    )
                });
                let mut names = names.unwrap_or_else(|e| fail(format!("{e:?}"), &log)).0;
                names.sort();
                if names != children(&model, &d) {
                    fail(format!("listing {names:?}, model {:?}", children(&model, &d)), &log);
                }
            }
            _ => {
                let (changed, added, deleted) = random_commit(&hub, &mut model, &mut rng, step, &path);
                log.push(format!("commit: change {path}, add {added}, delete {deleted}"));
                let start = std::time::Instant::now();
                let visible = loop {
                    let ok = s.rt.block_on(async {
                        let now = again_if_stale!(
                            async {
                                let fh = lookup_path(&mut c, &path).await?;
                                try_read_all(&mut c, &fh).await
                            }
                            .await
                        )
                        .is_ok_and(|got| got == changed);
                        let new = lookup_path(&mut c, &added).await.is_ok();
                        let gone = lookup_path(&mut c, &deleted).await == Err(nfsstat3::NFS3ERR_NOENT);
                        now && new && gone
                    });
                    if ok || start.elapsed() > Duration::from_secs(10) {
                        break ok;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                };
                if !visible {
                    fail("the commit never became visible".into(), &log);
                }
            }
        }
    }
}

/// NFS lookups are not counted as kernel references (NFS never gives them back): a node
/// handed out stays loaded for the grace period, then `--max-inodes` reclaims it.
#[test]
fn nfs_lookups_hold_entries_for_a_grace_period_then_the_inode_cap_reclaims_them() {
    let hub = Hub::start();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for d in ["a", "b", "c"] {
        files.extend((0..200).map(|i| (format!("{d}/f{i:03}"), b"x".to_vec())));
    }
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    hub.seed_repo("alice/dirs", &refs, false);
    let opts = hf_mount::frontends::nfs::NfsOptions { handle_grace: Duration::from_secs(3) };
    let s = serve_with(&hub, &["repo", "alice/dirs", "--max-inodes", "300"], &opts);
    let engine = s.server.as_ref().unwrap().engine().clone();
    let mut c = s.connect();
    s.rt.block_on(async {
        let mut last = None;
        for d in ["a", "b"] {
            for i in 0..200 {
                last = Some((std::time::Instant::now(), lookup_path(&mut c, &format!("{d}/f{i:03}")).await.unwrap()));
            }
        }
        // Within the grace period a handle stays good, however far past the cap the table is.
        let (at, fh) = last.unwrap();
        let count = engine.inode_count().await.unwrap();
        let good = getattr(&mut c, &fh).await.is_ok();
        if at.elapsed() < Duration::from_secs(2) {
            assert!(good, "a handle within its grace period");
            assert!(count > 300, "held entries were dropped early: {count}");
        }
        // After it, listing another directory brings the table back under the cap (it never
        // did while every LOOKUP counted as a reference nobody would forget).
        let start = std::time::Instant::now();
        loop {
            let dir = lookup_path(&mut c, "c").await.unwrap();
            let (names, _) = list_all(&mut c, &dir, 4096).await;
            assert_eq!(names.len(), 200);
            let n = engine.inode_count().await.unwrap();
            if n <= 330 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the table stayed at {n} inodes");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Pages continue from the snapshot their cookie verifier names: removing the entry a
/// cookie points at neither fails the listing (BAD_COOKIE) nor skips or repeats entries.
#[test]
fn readdir_pages_from_a_snapshot_whatever_changes_meanwhile() {
    use nfs3_types::nfs3::{cookieverf3, READDIR3args, READDIRPLUS3args};
    let hub = Hub::start();
    let files: Vec<(String, Vec<u8>)> = (0..3000).map(|i| (format!("d/f{i:04}"), b"x".to_vec())).collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    hub.seed_bucket("alice/many", &refs);
    let s = serve(&hub, &["bucket", "alice/many", "--hf-token", common::WRITE_TOKEN]);
    let mut c = s.connect();
    s.rt.block_on(async {
        let dir = lookup_path(&mut c, "d").await.unwrap();
        let args = |cookie, cookieverf| READDIRPLUS3args {
            dir: dir.clone(),
            cookie,
            cookieverf,
            dircount: 4096,
            maxcount: 4096,
        };
        let first = c.nfs3_client.readdirplus(&args(0, cookieverf3::default())).await.unwrap().unwrap();
        let page: Vec<_> = first.reply.entries.0.iter().collect();
        assert!(page.len() > 10 && !first.reply.eof);
        let last = page.last().unwrap();
        let last_name = String::from_utf8(last.name.0.to_vec()).unwrap();
        let mut names: Vec<String> = page.iter().map(|e| String::from_utf8(e.name.0.to_vec()).unwrap()).collect();
        // The entry the cookie names goes away, then the listing continues.
        let Nfs3Result::Ok(_) = c
            .nfs3_client
            .remove(&REMOVE3args {
                object: diropargs3 { dir: dir.clone(), name: filename3(Opaque::owned(last_name.into_bytes())) },
            })
            .await
            .unwrap()
        else {
            panic!("remove failed")
        };
        let (mut cookie, verf) = (last.cookie, first.cookieverf);
        loop {
            let ok = match c.nfs3_client.readdirplus(&args(cookie, verf)).await.unwrap() {
                Nfs3Result::Ok(ok) => ok,
                Nfs3Result::Err((stat, _)) => panic!("continuing the listing: {stat:?}"),
            };
            for e in &ok.reply.entries.0 {
                names.push(String::from_utf8(e.name.0.to_vec()).unwrap());
                cookie = e.cookie;
            }
            if ok.reply.eof {
                break;
            }
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((names.len(), sorted.len()), (3000, 3000), "the snapshot's entries, each once");
        // Plain READDIR pages by cookie too (it used to list from the start every time).
        let (mut cookie, mut verf, mut seen) = (0, cookieverf3::default(), 0);
        loop {
            let a = READDIR3args { dir: dir.clone(), cookie, cookieverf: verf, count: 4096 };
            let ok = c.nfs3_client.readdir(&a).await.unwrap().unwrap();
            verf = ok.cookieverf;
            for e in &ok.reply.entries.0 {
                seen += 1;
                cookie = e.cookie;
            }
            assert!(seen <= 3000, "READDIR repeats entries");
            if ok.reply.eof {
                break;
            }
        }
        assert_eq!(seen, 2999, "a new listing, without the removed entry");
    });
}

#[test]
fn reads_near_the_largest_offset_answer_eof_and_nfs_keeps_no_invalidation_queue() {
    let hub = Hub::start();
    let s = serve(&hub, &["repo", "alice/tiny"]);
    let mut c = s.connect();
    let engine = s.server.as_ref().unwrap().engine().clone();
    assert!(engine.take_invalidations().is_none(), "the NFS server let go of the kernel-invalidation queue");
    s.rt.block_on(async {
        let fh = lookup_path(&mut c, "model.safetensors").await.unwrap();
        for offset in [u64::MAX, u64::MAX - 5, u64::MAX - (1 << 20)] {
            let (data, eof) = read_range(&mut c, &fh, offset, 1 << 20).await.unwrap();
            assert!(data.is_empty() && eof, "at {offset}");
        }
        assert!(!read_all(&mut c, &fh).await.is_empty(), "the server still serves");
    });
}
