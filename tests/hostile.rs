//! Hostile inputs, one test each: names and paths from the kernel and handed straight to the
//! engine, NFS handles and offsets, malformed Hub answers, bad CLI values, config and token
//! files. Each must be answered with a clear error (the documented errno), never a panic,
//! with nothing lost: after every case the mount still answers, and a file written before
//! it still reads back whole.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::{mount, Hub, Mounted, WRITE_TOKEN};
use hf_hub_emulator::{FaultKind, FaultSpec, RouteClass};
use hf_mount::types::Hold;

const KEEP: &[u8] = b"written before the hostile input\n";

fn errno<T>(r: std::io::Result<T>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

/// A writable bucket mount holding `keep.txt` (committed) and a directory `d`.
fn bucket() -> (Hub, Mounted) {
    let hub = Hub::start();
    hub.seed_bucket("alice/h", &[("keep.txt", KEEP.to_vec()), ("d/inner.txt", b"i".to_vec())]);
    let m = mount(&hub, &["bucket", "alice/h", "--hf-token", WRITE_TOKEN]);
    (hub, m)
}

/// What every case ends with: the mount answers and nothing written is lost.
fn still_whole(hub: &Hub, m: &Mounted) {
    assert_eq!(std::fs::read(m.p("keep.txt")).unwrap(), KEEP, "the mount still reads");
    let names: Vec<_> = std::fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().any(|n| n == "keep.txt"), "{names:?}");
    assert_eq!(hub.bucket_bytes("alice/h", "keep.txt").as_deref(), Some(KEEP), "the Hub still has it");
}

fn long(n: usize) -> String {
    "n".repeat(n)
}

fn bad_utf8(m: &Mounted) -> std::path::PathBuf {
    m.path().join(OsStr::from_bytes(b"bad\xff\xfename"))
}

/// A FUSE case on the bucket: `$body` gets the hub and the mount.
macro_rules! fuse_case {
    ($name:ident, |$hub:ident, $m:ident| $body:block) => {
        #[test]
        fn $name() {
            let ($hub, $m) = bucket();
            $body
            still_whole(&$hub, &$m);
        }
    };
}

// ---- names and paths from the kernel (FUSE) ----

fuse_case!(create_with_a_256_byte_name_is_enametoolong, |hub, m| {
    assert_eq!(errno(std::fs::write(m.p(&long(256)), b"x")), libc::ENAMETOOLONG);
});

fuse_case!(mkdir_with_a_256_byte_name_is_enametoolong, |hub, m| {
    assert_eq!(errno(std::fs::create_dir(m.p(&long(256)))), libc::ENAMETOOLONG);
});

fuse_case!(stat_of_a_256_byte_name_is_enametoolong, |hub, m| {
    assert_eq!(errno(std::fs::metadata(m.p(&long(256)))), libc::ENAMETOOLONG);
});

fuse_case!(rename_to_a_256_byte_name_is_enametoolong, |hub, m| {
    std::fs::write(m.p("r.txt"), b"r").unwrap();
    assert_eq!(errno(std::fs::rename(m.p("r.txt"), m.p(&long(256)))), libc::ENAMETOOLONG);
    assert_eq!(std::fs::read(m.p("r.txt")).unwrap(), b"r", "the source stays");
});

fuse_case!(symlink_named_256_bytes_is_enametoolong, |hub, m| {
    assert_eq!(errno(std::os::unix::fs::symlink("keep.txt", m.p(&long(256)))), libc::ENAMETOOLONG);
});

fuse_case!(a_255_byte_name_is_fine, |hub, m| {
    std::fs::write(m.p(&long(255)), b"ok").unwrap();
    assert_eq!(std::fs::read(m.p(&long(255))).unwrap(), b"ok");
});

fuse_case!(a_path_past_path_max_is_enametoolong, |hub, m| {
    // 17 levels of 250-byte names: 4,267 bytes, past PATH_MAX (4,096) at the 17th.
    let mut dir = m.path().to_path_buf();
    let mut made = 0;
    let last = loop {
        dir.push(long(250));
        // Relative to the previous level, so the kernel's own PATH_MAX on the whole string
        // does not answer before we do.
        let r = std::fs::create_dir(&dir);
        if r.is_err() {
            break errno(r);
        }
        made += 1;
        assert!(made < 20, "no limit on path length");
    };
    assert!(last == libc::ENAMETOOLONG, "errno {last} after {made} levels");
    assert!(made >= 15, "refused too early: {made}");
});

fuse_case!(create_with_an_invalid_utf8_name_is_einval, |hub, m| {
    assert_eq!(errno(std::fs::write(bad_utf8(&m), b"x")), libc::EINVAL);
});

fuse_case!(mkdir_with_an_invalid_utf8_name_is_einval, |hub, m| {
    assert_eq!(errno(std::fs::create_dir(bad_utf8(&m))), libc::EINVAL);
});

fuse_case!(an_invalid_utf8_name_never_matches_a_file_named_with_u_fffd, |hub, m| {
    // The lossy form of b"bad\xff\xfename".
    std::fs::write(m.p("bad\u{fffd}\u{fffd}name"), b"replacement").unwrap();
    assert_eq!(errno(std::fs::read(bad_utf8(&m))), libc::EINVAL);
    assert_eq!(std::fs::read(m.p("bad\u{fffd}\u{fffd}name")).unwrap(), b"replacement");
});

fuse_case!(rename_to_an_invalid_utf8_name_is_einval, |hub, m| {
    std::fs::write(m.p("u.txt"), b"u").unwrap();
    assert_eq!(errno(std::fs::rename(m.p("u.txt"), bad_utf8(&m))), libc::EINVAL);
    assert_eq!(std::fs::read(m.p("u.txt")).unwrap(), b"u");
});

fuse_case!(a_symlink_target_past_path_max_is_enametoolong, |hub, m| {
    let target = "t/".repeat(2100);
    assert_eq!(errno(std::os::unix::fs::symlink(&target, m.p("far"))), libc::ENAMETOOLONG);
});

fuse_case!(a_write_at_an_offset_past_the_largest_file_fails_cleanly, |hub, m| {
    let f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(m.p("w.bin")).unwrap();
    let e = errno(f.write_at(b"x", i64::MAX as u64 - 1));
    assert!(e == libc::EFBIG || e == libc::EINVAL, "errno {e}");
});

fuse_case!(a_truncate_to_an_absurd_size_fails_cleanly, |hub, m| {
    let f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(m.p("t.bin")).unwrap();
    let e = errno(f.set_len(1 << 62));
    assert!(e == libc::EFBIG || e == libc::EINVAL, "errno {e}");
});

fuse_case!(a_read_far_past_the_end_is_end_of_file, |hub, m| {
    let f = std::fs::File::open(m.p("keep.txt")).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(f.read_at(&mut buf, 1 << 62).unwrap(), 0);
});

fuse_case!(removing_a_non_empty_directory_is_enotempty, |hub, m| {
    assert_eq!(errno(std::fs::remove_dir(m.p("d"))), libc::ENOTEMPTY);
    assert_eq!(std::fs::read(m.p("d/inner.txt")).unwrap(), b"i");
});

fuse_case!(unlinking_a_directory_is_refused, |hub, m| {
    let e = errno(std::fs::remove_file(m.p("d")));
    assert!(e == libc::EISDIR || e == libc::EPERM, "errno {e}");
});

fuse_case!(moving_a_directory_into_itself_is_einval, |hub, m| {
    assert_eq!(errno(std::fs::rename(m.p("d"), m.p("d/inside"))), libc::EINVAL);
    assert!(m.p("d/inner.txt").exists());
});

fuse_case!(creating_over_an_existing_directory_is_eisdir, |hub, m| {
    assert_eq!(errno(std::fs::write(m.p("d"), b"x")), libc::EISDIR);
});

fuse_case!(a_file_used_as_a_directory_is_enotdir, |hub, m| {
    assert_eq!(errno(std::fs::write(m.p("keep.txt/child"), b"x")), libc::ENOTDIR);
});

// ---- names the kernel never sends, handed straight to the engine ----

macro_rules! engine_case {
    ($name:ident, $raw:expr, $errno:expr) => {
        #[test]
        fn $name() {
            let (hub, m) = bucket();
            let e = m.engine();
            let raw: &[u8] = $raw;
            let got = m.block_on(e.lookup_holding(1, raw, Hold::None)).map(|a| a.ino);
            assert_eq!(got.map_err(|e| e.errno()), Err($errno), "lookup {raw:?}");
            let got = m.block_on(e.mkdir(1, raw, 0o755, 0, 0)).map(|a| a.ino);
            assert_eq!(got.map_err(|e| e.errno()), Err($errno), "mkdir {raw:?}");
            let got = m.block_on(e.create_closed(1, raw, 0o644, 0, 0)).map(|a| a.ino);
            assert_eq!(got.map_err(|e| e.errno()), Err($errno), "create {raw:?}");
            still_whole(&hub, &m);
        }
    };
}

engine_case!(engine_name_with_a_slash_is_einval, b"a/b", libc::EINVAL);
engine_case!(engine_name_dot_dot_is_einval, b"..", libc::EINVAL);
engine_case!(engine_name_dot_is_einval, b".", libc::EINVAL);
engine_case!(engine_empty_name_is_einval, b"", libc::EINVAL);
engine_case!(engine_name_with_nul_is_einval, b"a\0b", libc::EINVAL);
engine_case!(engine_name_of_invalid_utf8_is_einval, b"\xc3\x28", libc::EINVAL);
engine_case!(engine_name_of_300_bytes_is_enametoolong, &[b'x'; 300], libc::ENAMETOOLONG);

#[test]
fn engine_rename_with_a_slash_in_the_new_name_is_einval_and_keeps_the_file() {
    let (hub, m) = bucket();
    let e = m.engine();
    let r = m.block_on(e.rename(1, b"keep.txt", 1, b"x/../../y", Default::default()));
    assert_eq!(r.map_err(|e| e.errno()), Err(libc::EINVAL));
    still_whole(&hub, &m);
}

#[test]
fn engine_calls_on_an_inode_that_never_existed_are_estale() {
    let (hub, m) = bucket();
    let e = m.engine();
    assert_eq!(m.block_on(e.getattr(987_654_321)).map(|a| a.ino).map_err(|e| e.errno()), Err(libc::ESTALE));
    let got = m.block_on(e.lookup_holding(987_654_321, b"x", Hold::None)).map(|a| a.ino);
    assert_eq!(got.map_err(|e| e.errno()), Err(libc::ESTALE));
    still_whole(&hub, &m);
}

#[test]
fn engine_read_on_a_handle_never_opened_is_ebadf() {
    let (hub, m) = bucket();
    let r = m.block_on(m.engine().read(424_242, 0, 4096));
    assert_eq!(r.map(|b| b.len()).map_err(|e| e.errno()), Err(libc::EBADF));
    still_whole(&hub, &m);
}

// ---- NFS: handles, offsets, counts ----

mod nfs {
    use super::*;
    use common::nfs::{self as n, serve};
    use nfs3_types::nfs3::{
        nfs_fh3, nfsstat3, sattr3, sattrguard3, set_size3, GETATTR3args, Nfs3Option, Nfs3Result, READ3args,
        READDIR3args, SETATTR3args,
    };
    use nfs3_types::xdr_codec::Opaque;

    fn getattr_of(c: &mut n::Conn, rt: &tokio::runtime::Runtime, fh: nfs_fh3) -> Result<(), nfsstat3> {
        rt.block_on(async {
            match c.nfs3_client.getattr(&GETATTR3args { object: fh }).await.unwrap() {
                Nfs3Result::Ok(_) => Ok(()),
                Nfs3Result::Err((s, _)) => Err(s),
            }
        })
    }

    /// An NFS case on the bucket served in-process; `$body` gets the connection, runtime and hub.
    macro_rules! nfs_case {
        ($name:ident, |$c:ident, $rt:ident, $root:ident| $body:block) => {
            #[test]
            fn $name() {
                let hub = Hub::start();
                hub.seed_bucket("alice/h", &[("keep.txt", KEEP.to_vec())]);
                let served = serve(&hub, &["bucket", "alice/h", "--hf-token", WRITE_TOKEN]);
                let mut $c = served.connect();
                let $rt = &served.rt;
                let $root = $c.root_nfs_fh3();
                $body
                // The server still answers, and the file reads whole.
                let fh = $rt.block_on(n::lookup_path(&mut $c, "keep.txt")).unwrap();
                assert_eq!($rt.block_on(n::read_all(&mut $c, &fh)), KEEP);
            }
        };
    }

    fn unchecked() -> nfs3_types::nfs3::createhow3 {
        nfs3_types::nfs3::createhow3::UNCHECKED(sattr3 { mode: Nfs3Option::Some(0o644), ..Default::default() })
    }

    fn forged(bytes: &[u8]) -> nfs_fh3 {
        nfs_fh3 { data: Opaque::owned(bytes.to_vec()) }
    }

    nfs_case!(a_forged_handle_is_badhandle_or_stale, |c, rt, root| {
        let _ = root;
        let got = getattr_of(&mut c, rt, forged(&[0xab; 16]));
        assert!(matches!(got, Err(nfsstat3::NFS3ERR_BADHANDLE | nfsstat3::NFS3ERR_STALE)), "{got:?}");
    });

    nfs_case!(a_truncated_handle_is_badhandle, |c, rt, root| {
        let short = forged(&root.data.as_ref()[..2]);
        let got = getattr_of(&mut c, rt, short);
        assert!(matches!(got, Err(nfsstat3::NFS3ERR_BADHANDLE | nfsstat3::NFS3ERR_STALE)), "{got:?}");
    });

    nfs_case!(an_empty_handle_is_badhandle, |c, rt, root| {
        let _ = root;
        let got = getattr_of(&mut c, rt, forged(&[]));
        assert!(matches!(got, Err(nfsstat3::NFS3ERR_BADHANDLE | nfsstat3::NFS3ERR_STALE)), "{got:?}");
    });

    nfs_case!(a_handle_of_a_removed_file_never_brings_its_name_back, |c, rt, root| {
        let fh = rt.block_on(n::create(&mut c, &root, "gone.txt", unchecked())).unwrap();
        rt.block_on(n::remove(&mut c, &root, "gone.txt")).unwrap();
        // The handle may still answer during its grace period (as an open, unlinked file
        // does), or be STALE; writing through it never brings the name back.
        let got = getattr_of(&mut c, rt, fh.clone());
        assert!(matches!(got, Ok(()) | Err(nfsstat3::NFS3ERR_STALE)), "{got:?}");
        let _ = rt.block_on(n::write(&mut c, &fh, 0, b"late", nfs3_types::nfs3::stable_how::FILE_SYNC));
        assert_eq!(rt.block_on(n::lookup_path(&mut c, "gone.txt")).err(), Some(nfsstat3::NFS3ERR_NOENT));
    });

    nfs_case!(a_read_at_offset_u64_max_is_end_of_file, |c, rt, root| {
        let _ = root;
        let fh = rt.block_on(n::lookup_path(&mut c, "keep.txt")).unwrap();
        let (data, eof) = rt.block_on(n::read_range(&mut c, &fh, u64::MAX, 4096)).unwrap();
        assert!(data.is_empty() && eof);
    });

    nfs_case!(a_read_with_a_huge_count_is_capped, |c, rt, root| {
        let _ = root;
        let fh = rt.block_on(n::lookup_path(&mut c, "keep.txt")).unwrap();
        let got = rt.block_on(async {
            match c.nfs3_client.read(&READ3args { file: fh.clone(), offset: 0, count: u32::MAX }).await.unwrap() {
                Nfs3Result::Ok(ok) => Ok(ok.data.as_ref().to_vec()),
                Nfs3Result::Err((s, _)) => Err(s),
            }
        });
        assert_eq!(got.unwrap(), KEEP);
    });

    nfs_case!(a_write_near_u64_max_is_fbig_or_inval, |c, rt, root| {
        let fh = rt.block_on(n::create(&mut c, &root, "far.bin", unchecked())).unwrap();
        let got = rt.block_on(n::write(&mut c, &fh, u64::MAX - 2, b"xyz", nfs3_types::nfs3::stable_how::UNSTABLE));
        assert!(matches!(got, Err(nfsstat3::NFS3ERR_FBIG | nfsstat3::NFS3ERR_INVAL)), "{:?}", got.map(|r| r.0));
    });

    nfs_case!(a_setattr_to_an_absurd_size_is_fbig_or_inval, |c, rt, root| {
        let fh = rt.block_on(n::create(&mut c, &root, "huge.bin", unchecked())).unwrap();
        let attrs = sattr3 { size: set_size3::Some(u64::MAX), ..Default::default() };
        let got = rt.block_on(async {
            match c
                .nfs3_client
                .setattr(&SETATTR3args { object: fh, new_attributes: attrs, guard: sattrguard3::None })
                .await
                .unwrap()
            {
                Nfs3Result::Ok(_) => Ok(()),
                Nfs3Result::Err((s, _)) => Err(s),
            }
        });
        assert!(matches!(got, Err(nfsstat3::NFS3ERR_FBIG | nfsstat3::NFS3ERR_INVAL)), "{got:?}");
    });

    nfs_case!(a_create_with_a_256_byte_name_is_nametoolong, |c, rt, root| {
        let got = rt.block_on(n::create(&mut c, &root, &long(256), unchecked()));
        assert_eq!(got.err(), Some(nfsstat3::NFS3ERR_NAMETOOLONG));
    });

    nfs_case!(a_create_with_a_slash_in_the_name_is_inval, |c, rt, root| {
        let got = rt.block_on(n::create(&mut c, &root, "a/b", unchecked()));
        assert!(matches!(got.err(), Some(nfsstat3::NFS3ERR_INVAL | nfsstat3::NFS3ERR_ACCES)), "refused");
    });

    nfs_case!(a_lookup_of_a_name_with_a_slash_is_refused, |c, rt, root| {
        let got = rt.block_on(async {
            match c
                .nfs3_client
                .lookup(&nfs3_types::nfs3::LOOKUP3args { what: n::dirop(&root, "d/../keep.txt") })
                .await
                .unwrap()
            {
                Nfs3Result::Ok(_) => Ok(()),
                Nfs3Result::Err((s, _)) => Err(s),
            }
        });
        assert!(matches!(got, Err(nfsstat3::NFS3ERR_INVAL | nfsstat3::NFS3ERR_NOENT)), "{got:?}");
    });

    nfs_case!(a_readdir_with_a_bogus_cookie_fails_cleanly, |c, rt, root| {
        let got = rt.block_on(async {
            let args = READDIR3args {
                dir: root.clone(),
                cookie: 0xdead_beef_dead_beef,
                cookieverf: Default::default(),
                count: 4096,
            };
            match c.nfs3_client.readdir(&args).await.unwrap() {
                Nfs3Result::Ok(_) => Ok(()),
                Nfs3Result::Err((s, _)) => Err(s),
            }
        });
        assert!(matches!(got, Ok(()) | Err(nfsstat3::NFS3ERR_BAD_COOKIE | nfsstat3::NFS3ERR_INVAL)), "{got:?}");
    });

    nfs_case!(an_invalid_utf8_name_is_inval, |c, rt, root| {
        let got = rt.block_on(async {
            let what = nfs3_types::nfs3::diropargs3 {
                dir: root.clone(),
                name: nfs3_types::nfs3::filename3(Opaque::owned(b"bad\xffname".to_vec())),
            };
            let how = unchecked();
            match c.nfs3_client.create(&nfs3_types::nfs3::CREATE3args { where_: what, how }).await.unwrap() {
                Nfs3Result::Ok(_) => Ok(()),
                Nfs3Result::Err((s, _)) => Err(s),
            }
        });
        assert_eq!(got, Err(nfsstat3::NFS3ERR_INVAL));
    });
}

// ---- malformed Hub answers (repo mounts) ----

/// A repo mount with `top.txt`, `d/x.txt` and a bigger Xet file; `$fault` set before the
/// first listing; `$body` gets the hub and the mount; after it the fault is cleared and the
/// mount must list and read again.
macro_rules! hub_case {
    ($name:ident, $fault:expr, |$hub:ident, $m:ident| $body:block) => {
        #[test]
        fn $name() {
            let $hub = Hub::start();
            let big = common::bytes(3, 300_000);
            $hub.seed_repo(
                "alice/hostile",
                &[("top.txt", b"top\n".to_vec()), ("d/x.txt", b"x".to_vec()), ("big.bin", big.clone())],
                false,
            );
            let $m = mount(&$hub, &["repo", "alice/hostile", "--read-timeout-ms", "3000", "--no-disk-cache", "--metadata-ttl-ms", "0"]);
            let spec: FaultSpec = $fault;
            $hub.emulator().faults().add(spec).unwrap();
            $body
            $hub.emulator().faults().clear();
            // A failed read is remembered for the kernel's immediate retry (250 ms), no longer.
            common::wait_until(std::time::Duration::from_secs(2), "reads work again", || {
                std::fs::read($m.p("top.txt")).ok().as_deref() == Some(b"top\n")
            });
            common::wait_until(std::time::Duration::from_secs(2), "byte-exact once the fault is gone", || {
                std::fs::read($m.p("big.bin")).ok().as_deref() == Some(&big[..])
            });
        }
    };
}

fn replace_tree(body: &str) -> FaultSpec {
    let kind = FaultKind::Replace { status: 200, body: body.into(), headers: Vec::new() };
    FaultSpec::new(RouteClass::HubMetadata, kind).path_contains("/tree/")
}

fn listing(m: &Mounted, dir: &str) -> std::io::Result<Vec<String>> {
    let mut v: Vec<String> =
        std::fs::read_dir(m.p(dir))?.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    Ok(v)
}

hub_case!(a_listing_of_bad_json_is_eio, replace_tree("{not json"), |hub, m| {
    assert_eq!(errno(listing(&m, "d")), libc::EIO);
});

hub_case!(
    a_listing_entry_whose_path_climbs_out_is_skipped,
    replace_tree(
        r#"[{"type":"file","path":"d/../../etc/passwd","size":4,"oid":"a"},{"type":"file","path":"d/ok.txt","size":1,"oid":"b"}]"#
    ),
    |hub, m| {
        assert_eq!(listing(&m, "d").unwrap(), ["ok.txt"]);
    }
);

hub_case!(
    a_listing_entry_with_an_absolute_path_is_skipped,
    replace_tree(
        r#"[{"type":"file","path":"/d/abs.txt","size":4,"oid":"a"},{"type":"file","path":"d/ok.txt","size":1,"oid":"b"}]"#
    ),
    |hub, m| {
        assert_eq!(listing(&m, "d").unwrap(), ["ok.txt"]);
    }
);

hub_case!(
    a_listing_entry_with_empty_parts_is_skipped,
    replace_tree(
        r#"[{"type":"file","path":"d//twice.txt","size":4,"oid":"a"},{"type":"file","path":"d/ok.txt","size":1,"oid":"b"}]"#
    ),
    |hub, m| {
        assert_eq!(listing(&m, "d").unwrap(), ["ok.txt"]);
    }
);

hub_case!(
    a_listing_entry_with_a_negative_size_is_eio,
    replace_tree(r#"[{"type":"file","path":"d/neg.txt","size":-5,"oid":"a"}]"#),
    |hub, m| {
        assert_eq!(errno(listing(&m, "d")), libc::EIO);
    }
);

hub_case!(
    a_listing_entry_with_an_absurd_size_is_skipped,
    replace_tree(
        r#"[{"type":"file","path":"d/huge.txt","size":18446744073709551615,"oid":"a"},{"type":"file","path":"d/ok.txt","size":1,"oid":"b"}]"#
    ),
    |hub, m| {
        assert_eq!(listing(&m, "d").unwrap(), ["ok.txt"]);
    }
);

hub_case!(
    a_listing_whose_link_header_loops_is_eio_not_endless,
    {
        // The next page is the page itself.
        let link = format!("<{}/api/models/alice/hostile/tree/main/d?limit=1000>; rel=\"next\"", hub.endpoint());
        let kind = FaultKind::Replace { status: 200, body: "[]".into(), headers: vec![("link".into(), link)] };
        // Only d's listing (the root's path has no "/d").
        FaultSpec::new(RouteClass::HubMetadata, kind).path_contains("/d")
    },
    |hub, m| {
        let t = std::time::Instant::now();
        let e = errno(listing(&m, "d"));
        assert!(e == libc::EIO || e == libc::ETIMEDOUT, "errno {e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    }
);

hub_case!(a_listing_answered_with_an_object_is_eio, replace_tree(r#"{"error":"surprise"}"#), |hub, m| {
    assert_eq!(errno(listing(&m, "d")), libc::EIO);
});

hub_case!(
    a_git_file_served_short_is_eio_not_short_bytes,
    FaultSpec::new(RouteClass::HubMetadata, FaultKind::Truncate { keep_bytes: 2 }).path_contains("/resolve/"),
    |hub, m| {
        let r = std::fs::read(m.p("top.txt"));
        assert!(r.is_err() || r.as_deref().ok() == Some(b"top\n"), "never a short file: {r:?}");
    }
);

hub_case!(
    a_git_file_served_corrupt_is_eio_not_wrong_bytes,
    FaultSpec::new(RouteClass::HubMetadata, FaultKind::Corrupt).path_contains("/resolve/"),
    |hub, m| {
        let r = std::fs::read(m.p("top.txt"));
        assert!(r.is_err() || r.as_deref().ok() == Some(b"top\n"), "never wrong bytes: {r:?}");
    }
);

hub_case!(
    cas_data_served_corrupt_is_eio_not_wrong_bytes,
    FaultSpec::new(RouteClass::CasData, FaultKind::Corrupt),
    |hub, m| {
        let want = common::bytes(3, 300_000);
        let r = std::fs::read(m.p("big.bin"));
        assert!(r.as_ref().is_err() || r.as_deref().ok() == Some(&want[..]), "never wrong bytes");
    }
);

hub_case!(
    cas_data_cut_short_is_retried_or_eio_never_short,
    FaultSpec::new(RouteClass::CasData, FaultKind::Truncate { keep_bytes: 1000 }).times(3),
    |hub, m| {
        let want = common::bytes(3, 300_000);
        let r = std::fs::read(m.p("big.bin"));
        assert!(r.as_ref().is_err() || r.as_deref().ok() == Some(&want[..]), "never short or wrong bytes");
    }
);

hub_case!(
    a_reconstruction_of_bad_json_is_eio,
    FaultSpec::new(
        RouteClass::CasReconstruction,
        FaultKind::Replace { status: 200, body: "{oops".into(), headers: Vec::new() }
    ),
    |hub, m| {
        assert_eq!(errno(std::fs::read(m.p("big.bin"))), libc::EIO);
    }
);

hub_case!(
    a_git_file_answered_with_other_bytes_is_eio,
    FaultSpec::new(
        RouteClass::HubMetadata,
        FaultKind::Replace { status: 200, body: "evil".into(), headers: Vec::new() }
    )
    .path_contains("/resolve/"),
    |hub, m| {
        // Four bytes, as many as asked, but not the blob whose oid the listing gave.
        let r = std::fs::read(m.p("top.txt"));
        assert_eq!(
            errno(r.as_ref().map(|_| ()).map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0)))),
            libc::EIO,
            "{r:?}"
        );
    }
);

hub_case!(
    a_git_file_answered_with_too_many_bytes_is_eio,
    FaultSpec::new(
        RouteClass::HubMetadata,
        FaultKind::Replace { status: 206, body: "top\nmore".into(), headers: Vec::new() }
    )
    .path_contains("/resolve/"),
    |hub, m| {
        assert_eq!(errno(std::fs::read(m.p("top.txt"))), libc::EIO);
    }
);

// ---- bad CLI values, config and token files ----

const FUSE_BIN: &str = env!("CARGO_BIN_EXE_hf-mount-fuse");

/// Runs the binary with `args` (and a mountpoint that exists): it must exit 2 (usage) or 1
/// (a clear error) without a panic, its message naming `mentions`.
fn refused(args: &[&str], mentions: &str) {
    let mnt = tempfile::tempdir().unwrap();
    let out = Command::new(FUSE_BIN)
        .args(args)
        .env("HF_MOUNT_CACHE_DIR", mnt.path().join("cache"))
        .env_remove("HF_TOKEN")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(1 | 2)), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(mentions), "the message names {mentions:?}: {err}");
}

macro_rules! cli_case {
    ($name:ident, [$($arg:expr),*], $mentions:expr) => {
        #[test]
        fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let mnt = dir.path().display().to_string();
            let args: Vec<String> = vec![$($arg.replace("MNT", &mnt)),*];
            refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), $mentions);
        }
    };
}

cli_case!(cli_cache_size_not_a_size, ["repo", "a/b", "MNT", "--cache-size", "lots"], "--cache-size");
cli_case!(cli_negative_timeout, ["repo", "a/b", "MNT", "--read-timeout-ms", "-5"], "-5");
cli_case!(cli_ttl_not_a_number, ["repo", "a/b", "MNT", "--metadata-ttl-ms", "soon"], "--metadata-ttl-ms");
cli_case!(cli_zero_threads, ["repo", "a/b", "MNT", "--max-threads", "0"], "--max-threads");
cli_case!(cli_unknown_source_type, ["space", "a/b", "MNT"], "space");
cli_case!(cli_source_id_with_spaces, ["repo", "al ice/x", "MNT"], "al ice/x");
cli_case!(cli_unknown_flag, ["repo", "a/b", "MNT", "--turbo"], "--turbo");
cli_case!(cli_missing_token_file, ["repo", "a/b", "MNT", "--token-file", "/nonexistent/token"], "/nonexistent/token");
cli_case!(cli_endpoint_not_a_url, ["repo", "a/b", "MNT", "--hub-endpoint", "not a url"], "not a url");
cli_case!(cli_missing_mountpoint, ["repo", "a/b", "/nonexistent/mnt"], "/nonexistent/mnt");

#[test]
fn cli_token_file_of_garbage_is_refused_without_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, b"hf_secretpart\x01\x02garbage").unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let (t, m) = (token.display().to_string(), mnt.path().display().to_string());
    refused(&["repo", "a/b", &m, "--token-file", &t], "does not hold a token");
    let out = Command::new(FUSE_BIN).args(["repo", "a/b", &m, "--token-file", &t]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hf_secretpart"), "the bytes are not echoed");
}

macro_rules! config_case {
    ($name:ident, $toml:expr, $mentions:expr) => {
        #[test]
        fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("mount.toml");
            std::fs::write(&cfg, $toml).unwrap();
            refused(&["--config", cfg.to_str().unwrap()], $mentions);
        }
    };
}

config_case!(
    config_unknown_key,
    "source_type = \"repo\"\nsource = \"a/b\"\nmountpoint = \"/tmp\"\nturbo = true\n",
    "turbo"
);
config_case!(
    config_wrong_type,
    "source_type = \"repo\"\nsource = \"a/b\"\nmountpoint = \"/tmp\"\nmax_threads = \"many\"\n",
    "max_threads"
);
config_case!(config_not_toml, "this is [not toml", "mount.toml");
config_case!(
    config_bad_size,
    "source_type = \"repo\"\nsource = \"a/b\"\nmountpoint = \"/tmp\"\ncache_size = \"huge\"\n",
    "cache_size"
);
