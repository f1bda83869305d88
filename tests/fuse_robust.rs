//! Consistency, deadlines, supervision and the cache, on real FUSE mounts.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{fixture_files, mount, pread, Hub};
use hf_hub_emulator::{FaultKind, FaultSpec, RouteClass};
use hf_mount::actors::inode_table::FailAfter;
use hf_mount::actors::ActorKind;
use hf_mount::types::Hold;

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn remote_commits_show_up_and_pinned_mounts_do_not_move() {
    let hub = Hub::start();
    let first = hub.seed_repo(
        "alice/live",
        &[("v.txt", b"one\n".to_vec()), ("gone.txt", b"bye\n".to_vec()), ("d/x.txt", b"x".to_vec())],
        false,
    );
    let m = mount(&hub, &["repo", "alice/live", "--metadata-ttl-ms", "500", "--poll-interval-secs", "1"]);
    let pinned = mount(&hub, &["repo", "alice/live", "--revision", &first]);
    assert_eq!(std::fs::read_to_string(m.p("v.txt")).unwrap(), "one\n");
    assert_eq!(std::fs::read_to_string(m.p("d/x.txt")).unwrap(), "x");
    assert!(m.p("gone.txt").exists());
    let ino = std::fs::metadata(m.p("v.txt")).unwrap().ino();

    // A new commit: v.txt changes (size too), new.txt appears, gone.txt and d/x.txt change or vanish.
    let lines = [
        r#"{"key":"header","value":{"summary":"change"}}"#,
        r#"{"key":"file","value":{"path":"v.txt","content":"dHdvLCBsb25nZXIK","encoding":"base64"}}"#,
        r#"{"key":"file","value":{"path":"new.txt","content":"bmV3Cg==","encoding":"base64"}}"#,
        r#"{"key":"file","value":{"path":"d/x.txt","content":"eHg=","encoding":"base64"}}"#,
        r#"{"key":"deletedFile","value":{"path":"gone.txt"}}"#,
    ]
    .map(String::from);
    let status = hub.commit("alice/live", "", &lines);
    assert!(status.is_success());
    let seen = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(m.p("v.txt")).ok().as_deref() == Some("two, longer\n")
            && m.p("new.txt").exists()
            && !m.p("gone.txt").exists()
            && std::fs::read_to_string(m.p("d/x.txt")).ok().as_deref() == Some("xx")
    });
    assert!(seen, "remote changes not visible within TTL + poll");
    let names: Vec<String> =
        std::fs::read_dir(m.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.contains(&"new.txt".to_string()) && !names.contains(&"gone.txt".to_string()), "{names:?}");
    assert_eq!(std::fs::metadata(m.p("v.txt")).unwrap().len(), 12, "size follows content");
    assert_eq!(std::fs::metadata(m.p("v.txt")).unwrap().ino(), ino, "inode numbers stay stable");
    // The sha-pinned mount never revalidates.
    assert_eq!(std::fs::read_to_string(pinned.p("v.txt")).unwrap(), "one\n");
    assert!(pinned.p("gone.txt").exists());
}

#[test]
fn a_poll_whose_listing_fails_sees_the_change_again_on_the_next_poll() {
    let hub = Hub::start();
    hub.seed_repo("alice/polled", &[("top.txt", b"t".to_vec()), ("d/x.txt", b"x".to_vec())], false);
    // Listings trusted for an hour, polling by hand: only a poll can show the change.
    let m = mount(
        &hub,
        &[
            "repo",
            "alice/polled",
            "--metadata-ttl-ms",
            "3600000",
            "--poll-interval-secs",
            "3600",
            "--read-timeout-ms",
            "1500",
        ],
    );
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(m.p(dir)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names("d"), ["x.txt"]);
    let lines = [
        r#"{"key":"header","value":{"summary":"add"}}"#,
        r#"{"key":"file","value":{"path":"d/y.txt","content":"eQ==","encoding":"base64"}}"#,
    ]
    .map(String::from);
    assert!(hub.commit("alice/polled", "", &lines).is_success());

    // The probe answers; re-listing `d` fails: the poll fails, and must not record the new commit.
    let rule = hub
        .emulator()
        .faults()
        .add(FaultSpec::new(RouteClass::HubMetadata, FaultKind::Error { status: 500 }).path_contains("/tree/"))
        .unwrap();
    assert!(m.block_on(m.engine().poll_now()).is_err(), "the listing failed, so the poll does");
    hub.emulator().faults().remove(rule);
    // The next poll sees the same change (it was lost until the TTL before: the version had
    // moved before the listings ran).
    assert!(m.block_on(m.engine().poll_now()).unwrap(), "the change is seen again");
    assert_eq!(names("d"), ["x.txt", "y.txt"]);
    assert!(!m.block_on(m.engine().poll_now()).unwrap(), "and then it is recorded");
}

#[test]
fn a_handle_open_before_a_commit_reads_its_own_bytes_not_the_new_commits() {
    let hub = Hub::start();
    hub.seed_repo("alice/pinned", &[("v.txt", b"one\n".to_vec())], false);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let args =
        ["repo", "alice/pinned", "--cache-dir", cache_dir, "--poll-interval-secs", "3600", "--metadata-ttl-ms", "300"];
    let m = mount(&hub, &args);
    // Opened before the commit: the handle holds the old identity (a git blob, not in Xet).
    let old = std::fs::File::open(m.p("v.txt")).unwrap();
    let lines = [
        r#"{"key":"header","value":{"summary":"change"}}"#,
        r#"{"key":"file","value":{"path":"v.txt","content":"dHdvLCBsb25nZXIK","encoding":"base64"}}"#,
    ]
    .map(String::from);
    assert!(hub.commit("alice/pinned", "", &lines).is_success());
    assert!(m.block_on(m.engine().poll_now()).unwrap());
    // The old handle reads the bytes of its own commit (before: the new commit's, cut to
    // the old size, which failed the blob check with EIO, or were cached under the old key).
    assert_eq!(pread(&old, 0, 100).unwrap(), b"one\n");
    drop(old);
    let new = wait_until(Duration::from_secs(5), || std::fs::read(m.p("v.txt")).unwrap() == b"two, longer\n");
    assert!(new, "the new content after the kernel's entry is invalidated");
    drop(m);
    // A later mount on the same cache dir serves each identity its own bytes.
    let m = mount(&hub, &args);
    assert_eq!(std::fs::read(m.p("v.txt")).unwrap(), b"two, longer\n");
}

#[test]
fn stalled_cas_fails_reads_in_time_while_metadata_answers_and_recovers() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny", "--read-timeout-ms", "2000", "--no-disk-cache"]);
    let want = fixture_files().into_iter().find(|(n, _)| *n == "model.safetensors").unwrap().1;
    // Warm metadata: list and stat before the CAS stalls.
    std::fs::read_dir(m.path()).unwrap().for_each(drop);
    std::fs::metadata(m.p("model.safetensors")).unwrap();
    hub.emulator().faults().add(FaultSpec::new(RouteClass::CasData, FaultKind::Stall)).unwrap();
    hub.emulator().faults().add(FaultSpec::new(RouteClass::CasReconstruction, FaultKind::Stall)).unwrap();

    let start = Instant::now();
    let readers: Vec<_> = (0..32u64)
        .map(|i| {
            let path = m.p("model.safetensors");
            std::thread::spawn(move || {
                let f = std::fs::File::open(path).unwrap();
                let t = Instant::now();
                let r = pread(&f, i * 150_000, 4096);
                (r.map_err(|e| e.raw_os_error()), t.elapsed())
            })
        })
        .collect();
    // Metadata keeps answering at once while every reader is stuck on the CAS.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let t = Instant::now();
        std::fs::read_dir(m.path()).unwrap().for_each(drop);
        std::fs::metadata(m.p("config.json")).unwrap();
        assert!(t.elapsed() < Duration::from_millis(100), "ls+stat took {:?} during the stall", t.elapsed());
    }
    for r in readers {
        let (result, took) = r.join().unwrap();
        assert_eq!(result.unwrap_err(), Some(libc::EIO));
        assert!(took < Duration::from_secs(8), "a stalled read took {took:?}");
    }
    assert!(start.elapsed() < Duration::from_secs(10));

    // The CAS recovers: reads work again at once (a failure is remembered only for the
    // kernel's immediate retry, 250 ms; it was 2 s, which failed a job retrying after a blip).
    hub.emulator().faults().clear();
    let ok = wait_until(Duration::from_millis(1500), || {
        let f = std::fs::File::open(m.p("model.safetensors")).unwrap();
        pread(&f, 150_000, 4096).ok().is_some_and(|b| b == want[150_000..154_096])
    });
    assert!(ok, "reads did not recover");
}

#[test]
fn a_call_whose_actor_fails_mid_change_is_answered_eio_and_neither_applied_nor_sent_again() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny"]);
    let e = m.engine();
    // The kernel never looked config.json up, so its references are ours alone: loaded
    // without one, then looked up counted while the table is armed to fail.
    let ino = m.block_on(e.lookup_holding(1, b"config.json", Hold::None)).unwrap().ino;
    assert_eq!(m.block_on(e.kernel_references(ino)).unwrap(), 0);
    m.block_on(e.fail_inode_table_after(FailAfter::Lookup)).unwrap();
    let err = m.block_on(e.lookup(1, b"config.json")).unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    // The kernel was answered EIO, so it holds no reference: the counted lookup's change was
    // rolled back with the panic. (Sent again after it, it would have been answered and
    // counted; kept, the reference would never be given back and the inode never unload.)
    assert_eq!(m.block_on(e.kernel_references(ino)).unwrap(), 0, "the crashed lookup's change was undone");
    // The supervisor restarts the table just after the panic's answer: wait for it.
    let restarted = || m.block_on(e.restarts()).is_ok_and(|n| n >= 1);
    assert!(wait_until(Duration::from_secs(5), restarted), "the inode table was not restarted");
    // The next incarnation answers, and the mount works.
    assert_eq!(m.block_on(e.lookup(1, b"config.json")).unwrap().ino, ino);
    assert_eq!(m.block_on(e.kernel_references(ino)).unwrap(), 1);
    assert!(std::fs::read(m.p("config.json")).is_ok());
}

/// A rename over another file that panics half-way (both old names gone, the new one not made)
/// leaves the table as it was: the next incarnation of the inode table starts from consistent
/// state, both files are where they were with their bytes, and the Hub gets the same.
#[test]
fn a_rename_whose_actor_fails_half_way_leaves_both_files_as_they_were() {
    use common::WRITE_TOKEN;
    let hub = Hub::start();
    hub.seed_bucket("alice/b", &[("a.txt", b"aaa".to_vec()), ("d/b.txt", b"bbb".to_vec())]);
    let m = mount(&hub, &["bucket", "alice/b", "--hf-token", WRITE_TOKEN, "--advanced-writes"]);
    let e = m.engine();
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(m.p(dir)).unwrap().map(|d| d.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names("d"), ["b.txt"]);
    std::fs::write(m.p("new.txt"), b"new").unwrap();
    m.block_on(e.fail_inode_table_after(FailAfter::Rename)).unwrap();
    let err = std::fs::rename(m.p("a.txt"), m.p("d/b.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The supervisor restarts the table just after the panic's answer: wait for it.
    let restarted = || m.block_on(e.restarts()).is_ok_and(|n| n >= 1);
    assert!(wait_until(Duration::from_secs(5), restarted), "the inode table was not restarted");
    // Listings come from the table: a half-made rename would list neither name.
    assert_eq!(names(""), ["a.txt", "d", "new.txt"]);
    assert_eq!(names("d"), ["b.txt"]);
    assert!(m.block_on(e.lookup_holding(1, b"a.txt", Hold::None)).is_ok(), "a.txt is gone from the table");
    assert_eq!(std::fs::read(m.p("a.txt")).unwrap(), b"aaa");
    assert_eq!(std::fs::read(m.p("d/b.txt")).unwrap(), b"bbb");
    // The table works on: the same rename again, then everything reaches the Hub as shown.
    std::fs::rename(m.p("a.txt"), m.p("d/b.txt")).unwrap();
    assert_eq!(std::fs::read(m.p("d/b.txt")).unwrap(), b"aaa");
    assert_eq!(names(""), ["d", "new.txt"]);
    m.block_on(e.wait_committed(Duration::from_secs(30))).unwrap();
    let files = hub.bucket_files("alice/b");
    assert_eq!(files.keys().map(String::as_str).collect::<Vec<_>>(), ["d/b.txt", "new.txt"]);
    assert_eq!(hub.bucket_bytes("alice/b", "d/b.txt").as_deref(), Some(&b"aaa"[..]));
}

#[test]
fn an_actor_that_keeps_failing_stops_the_mount_cleanly_instead_of_restarting_forever() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny"]);
    let e = m.engine();
    let ino = m.block_on(e.lookup_holding(1, b"config.json", Hold::None)).unwrap().ino;
    assert!(e.getattr_now(ino).is_some(), "a fresh node's getattr is answered at once");
    // Each armed lookup panics the inode table once: past the limit, the supervisor gives up.
    for _ in 0..=hf_mount::actors::RESTART_LIMIT {
        m.block_on(e.fail_inode_table_after(FailAfter::Lookup)).unwrap();
        assert_eq!(m.block_on(e.lookup(1, b"config.json")).unwrap_err().errno(), libc::EIO);
    }
    let why = m.block_on(async { tokio::time::timeout(Duration::from_secs(5), e.failed()).await });
    let why = why.expect("the mount is declared failed");
    assert!(why.contains("InodeTable") && why.contains("failed 11 times"), "{why}");
    // From then on every request answers EIO at once: nothing restarts, nothing loops (and
    // nothing is answered from the table without asking, as a working mount's getattr is).
    assert!(e.getattr_now(ino).is_none(), "a failed mount's getattr is answered from the table");
    let t = Instant::now();
    assert_eq!(m.block_on(e.getattr(ino)).unwrap_err().errno(), libc::EIO);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let restarts_then = m.block_on(e.restarts()).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(m.block_on(e.restarts()).unwrap_or(0), restarts_then, "no more restarts");
}

#[test]
fn killing_any_actor_keeps_the_mount_working() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny", "--metadata-ttl-ms", "200", "--poll-interval-secs", "1"]);
    let want = fixture_files().into_iter().find(|(n, _)| *n == "model.safetensors").unwrap().1;
    let ino = std::fs::metadata(m.p("model.safetensors")).unwrap().ino();
    let f = std::fs::File::open(m.p("model.safetensors")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (path, stop, want) = (m.path().to_path_buf(), stop.clone(), want.clone());
        std::thread::spawn(move || {
            let f = std::fs::File::open(path.join("model.safetensors")).unwrap();
            let mut x = 5u64;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let off = (x >> 17) % want.len() as u64;
                let got = pread(&f, off, 65536).expect("read during actor restarts");
                assert!(got == want[off as usize..(off as usize + 65536).min(want.len())]);
                std::fs::read_dir(&path).unwrap().for_each(drop);
                std::fs::metadata(path.join("onnx/config.json")).expect("stat during actor restarts");
                n += 1;
            }
            n
        })
    };
    let before = m.block_on(m.engine().restarts()).unwrap();
    for kind in
        [ActorKind::InodeTable, ActorKind::Revalidator, ActorKind::Prefetch, ActorKind::ChunkCache, ActorKind::Poller]
    {
        std::thread::sleep(Duration::from_millis(150));
        m.engine().kill_actor(kind).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = worker.join().expect("the workload survived every restart");
    assert!(rounds > 5, "only {rounds} rounds of work");
    assert_eq!(m.block_on(m.engine().restarts()).unwrap(), before + 5);
    // The handle opened before the restarts still reads, and inode numbers are unchanged.
    assert!(pread(&f, 0, 1000).unwrap() == want[..1000]);
    assert_eq!(std::fs::metadata(m.p("model.safetensors")).unwrap().ino(), ino);
}

#[test]
fn a_small_cache_evicts_and_corrupt_blocks_are_refetched() {
    let hub = Hub::start();
    let want = fixture_files().into_iter().find(|(n, _)| *n == "model.safetensors").unwrap().1;
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().display().to_string();
    {
        let m = mount(
            &hub,
            &["repo", "alice/tiny", "--cache-dir", &dir, "--cache-size", "1M", "--memory-cache-size", "512K"],
        );
        assert!(std::fs::read(m.p("model.safetensors")).unwrap() == want);
        std::thread::sleep(Duration::from_millis(500));
        let stats = m.block_on(m.engine().cache_stats()).unwrap();
        assert!(stats.disk_bytes <= 1 << 20, "disk cache over its cap: {stats:?}");
        assert!(stats.mem_bytes <= 512 << 10, "memory cache over its cap: {stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
    }
    // Fill a roomy cache, corrupt every block on disk, mount again: bytes are refetched, never served bad.
    let roomy = tempfile::tempdir().unwrap();
    let dir = roomy.path().display().to_string();
    {
        let m = mount(&hub, &["repo", "alice/tiny", "--cache-dir", &dir]);
        assert!(std::fs::read(m.p("model.safetensors")).unwrap() == want);
        std::thread::sleep(Duration::from_millis(500));
    }
    // Flip a byte in every block of every segment file, then cut each file short as well.
    let mut corrupted = 0;
    // The mount's own subdirectory of the cache dir holds its blocks.
    let own = std::fs::read_dir(roomy.path()).unwrap().next().unwrap().unwrap().path();
    for sub in std::fs::read_dir(own.join("blocks")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let blocks = hf_mount::actors::chunk_cache::segment_blocks(&p).unwrap();
            let mut raw = std::fs::read(&p).unwrap();
            for (_, at, len) in &blocks {
                raw[(at + len / 2) as usize] ^= 0x5a;
            }
            raw.truncate(raw.len() - 100);
            std::fs::write(&p, raw).unwrap();
            corrupted += blocks.len();
        }
    }
    assert!(corrupted >= 20, "{corrupted} blocks on disk");
    let m = mount(&hub, &["repo", "alice/tiny", "--cache-dir", &dir]);
    assert!(std::fs::read(m.p("model.safetensors")).unwrap() == want, "corrupt cache served");
    let stats = m.block_on(m.engine().cache_stats()).unwrap();
    assert!(stats.corrupt >= corrupted as u64 / 2, "{stats:?}");
}

/// Drops the kernel's cached pages of `f`, so the next read reaches the mount.
fn drop_pages(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    assert_eq!(unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
}

#[test]
fn reconstruction_plans_are_reused_until_their_urls_expire() {
    let hub = Hub::start();
    let want = fixture_files().into_iter().find(|(n, _)| *n == "model.safetensors").unwrap().1;
    // A memory cache of one block and no disk cache: a re-read must fetch its bytes again.
    let m = mount(&hub, &["repo", "alice/tiny", "--no-disk-cache", "--memory-cache-size", "256K"]);
    let faults = hub.emulator().faults();
    let count = |class| faults.add(FaultSpec::new(class, FaultKind::Latency { ms: 0 })).unwrap();
    let hits = |id| faults.list().into_iter().find(|r| r.id == id).map_or(0, |r| r.hits);
    let (plans, data) = (count(RouteClass::CasReconstruction), count(RouteClass::CasData));
    // A fresh handle per read: one read per handle shows no pattern, so nothing is read ahead.
    let read_at = |off: usize| {
        let f = std::fs::File::open(m.p("model.safetensors")).unwrap();
        drop_pages(&f);
        assert!(pread(&f, off as u64, 4096).unwrap() == want[off..off + 4096]);
    };
    // Three random blocks, far apart: one plan and one data fetch each.
    for off in [1 << 20, 3 << 20, 4 << 20] {
        read_at(off);
    }
    let (p0, d0) = (hits(plans), hits(data));
    assert!(p0 >= 3 && d0 >= 3, "{p0} plans, {d0} fetches");
    // The first block was evicted from memory: its bytes are fetched again, its plan is not.
    read_at(1 << 20);
    assert!(hits(data) > d0, "the re-read did not reach the CAS");
    assert_eq!(hits(plans), p0, "the plan was asked for again");

    // A URL that answers 403 before its time: the plans are dropped and asked for again.
    faults.remove(data); // (the first matching rule wins: the counter would shadow the 403)
    let forbidden = faults.add(FaultSpec::new(RouteClass::CasData, FaultKind::Error { status: 403 }).times(1)).unwrap();
    read_at(3 << 20);
    assert_eq!(hits(forbidden), 1);
    assert!(hits(plans) > p0, "a 403 did not refresh the plan");

    // Plans follow their URLs' expiry (`exp`, less a 30 s margin): URLs valid 32 s make plans live 1–2 s.
    hub.emulator().cas().set_fetch_url_ttl(Duration::from_secs(32));
    let p1 = hits(plans);
    read_at(1 << 20); // (the 403 dropped this plan)
    read_at(4 << 20);
    let p2 = hits(plans);
    assert!(p2 > p1);
    read_at(1 << 20);
    read_at(4 << 20);
    assert_eq!(hits(plans), p2, "short-lived plans not reused within their life");
    std::thread::sleep(Duration::from_millis(2500));
    read_at(1 << 20);
    assert!(hits(plans) > p2, "an expired plan was used");
}

#[test]
fn the_inode_table_is_bounded_and_unloaded_listings_come_back() {
    let hub = Hub::start();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for d in ["a", "b"] {
        for i in 0..200 {
            files.push((format!("{d}/f{i:03}.txt"), format!("{d}{i}\n").into_bytes()));
        }
    }
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    hub.seed_repo("alice/wide", &refs, false);
    let m = mount(&hub, &["repo", "alice/wide", "--max-inodes", "300"]);
    let count = || m.block_on(m.engine().inode_count()).unwrap();
    let ls = |d: &str| std::fs::read_dir(m.p(d)).unwrap().count();

    assert_eq!(ls(""), 2);
    assert_eq!(ls("a"), 200);
    // The kernel forgets what it held (as under memory pressure): listed entries stay listed.
    let held = count();
    std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), held, "listed entries were dropped without need");
    // Listing b goes past the cap: a's listing, the least recently used, is unloaded.
    assert_eq!(ls("b"), 200);
    assert!(count() <= 300, "{} inodes with a cap of 300", count());
    // a is listed again on use, its files read as before.
    assert_eq!(ls("a"), 200);
    assert_eq!(std::fs::read(m.p("a/f123.txt")).unwrap(), b"a123\n");
    assert_eq!(std::fs::read(m.p("b/f007.txt")).unwrap(), b"b7\n");
}

/// The emulator restarted, as its process would be (every connection dropped, connections
/// refused for half a second, then back with its store), right as a file's xorb goes up: a
/// streaming close and an advanced mount's commit both carry on past it, and lose nothing.
#[test]
fn a_stream_whose_upload_is_refused_is_committed_from_its_staging_copy() {
    use common::{bytes, write_and_close, WRITE_TOKEN};
    let hub = Hub::start();
    hub.seed_bucket("alice/s", &[]);
    let m = mount(&hub, &["bucket", "alice/s", "--hf-token", WRITE_TOKEN]);
    // Whole MiB writes (the staging copy's direct writes) and a tail; the stream's one xorb is
    // refused (a 400 is not retried), so the close commits the staging copy instead.
    let data = bytes(3, (4 << 20) + 5);
    let spec = FaultSpec {
        path_contains: Some("xorb".into()),
        ..FaultSpec::new(RouteClass::CasUpload, FaultKind::Error { status: 400 }).times(1)
    };
    let rule = hub.emulator().faults().add(spec).unwrap();
    write_and_close(&m.p("refused.bin"), &data).unwrap();
    let hits = hub.emulator().faults().list().into_iter().find(|r| r.id == rule).map_or(0, |r| r.hits);
    assert_eq!(hits, 1, "the stream's xorb was never refused");
    assert!(hub.bucket_bytes("alice/s", "refused.bin") == Some(data), "refused.bin on the Hub, whole");
}

#[test]
fn an_emulator_restart_in_the_middle_of_an_upload_loses_nothing() {
    use common::{bytes, write_and_close, WRITE_TOKEN};
    let hub = Hub::start();
    hub.seed_bucket("alice/s", &[("old.bin", bytes(1, 100_000))]);
    hub.seed_bucket("alice/a", &[]);
    let restart = |times| {
        let spec = FaultSpec {
            path_contains: Some("xorb".into()),
            ..FaultSpec::new(RouteClass::CasUpload, FaultKind::Restart { down_ms: 500 }).times(times)
        };
        hub.emulator().faults().add(spec).unwrap()
    };
    let hits = |rule| hub.emulator().faults().list().into_iter().find(|r| r.id == rule).map_or(0, |r| r.hits);
    // Streaming (the default): the close waits through the restart.
    let m = mount(&hub, &["bucket", "alice/s", "--hf-token", WRITE_TOKEN]);
    let data = bytes(2, 3 << 20);
    let rule = restart(1);
    let t = Instant::now();
    write_and_close(&m.p("streamed.bin"), &data).unwrap();
    assert_eq!(hits(rule), 1, "the restart never happened");
    assert!(hub.bucket_bytes("alice/s", "streamed.bin") == Some(data), "streamed.bin on the Hub");
    eprintln!("streaming close across a restart: {:?}", t.elapsed());
    assert!(std::fs::read(m.p("old.bin")).unwrap() == bytes(1, 100_000), "reads after the restart");
    // Advanced: acknowledged at close, committed by the flusher across two restarts.
    let a = mount(
        &hub,
        &["bucket", "alice/a", "--hf-token", WRITE_TOKEN, "--advanced-writes", "--flush-debounce-ms", "50"],
    );
    let rule = restart(2);
    let files: Vec<(String, Vec<u8>)> = (0..4).map(|i| (format!("f{i}.bin"), bytes(10 + i, 700_000))).collect();
    for (name, data) in &files {
        write_and_close(&a.p(name), data).unwrap();
    }
    // (A commit that met the restart fails, and the flusher tries again.)
    common::wait_until(Duration::from_secs(30), "every acknowledged file on the Hub", || {
        files.iter().all(|(name, data)| hub.bucket_bytes("alice/a", name).as_ref() == Some(data))
    });
    assert_eq!(hits(rule), 2);
    a.block_on(a.engine().wait_committed(Duration::from_secs(30))).unwrap();
}

#[test]
fn a_getattr_is_answered_at_once_only_while_the_node_is_fresh() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny", "--metadata-ttl-ms", "300"]);
    let e = m.engine();
    let ino = m.block_on(e.lookup_holding(1, b"config.json", Hold::None)).unwrap().ino;
    let size = m.block_on(e.getattr(ino)).unwrap().size;
    assert_eq!(e.getattr_now(ino).map(|a| a.size), Some(size));
    assert!(e.getattr_now(ino + 1_000_000).is_none(), "an unknown inode goes to the engine (ESTALE)");
    // Past the TTL the Hub is asked again: the quick answer steps aside until then.
    let t = Instant::now();
    while e.getattr_now(ino).is_some() {
        assert!(t.elapsed() < Duration::from_secs(5), "still answered at once past the TTL");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(m.block_on(e.getattr(ino)).unwrap().size, size);
    assert!(e.getattr_now(ino).is_some(), "revalidated: fresh again");
}

#[test]
fn a_lookup_answers_enoent_at_once_only_for_a_name_a_fresh_listing_lacks() {
    use common::WRITE_TOKEN;
    let hub = Hub::start();
    hub.create_bucket("alice/b");
    // A TTL of a second at least: a stale listing is listed again (not a HEAD per name).
    let m = mount(&hub, &["bucket", "alice/b", "--hf-token", WRITE_TOKEN, "--metadata-ttl-ms", "1000"]);
    let e = m.engine();
    std::fs::create_dir(m.p("d")).unwrap();
    let d = std::fs::metadata(m.p("d")).unwrap().ino();
    assert!(e.lookup_missing_now(d, b"x.txt"), "a new directory has no x.txt");
    std::fs::write(m.p("d/x.txt"), b"x").unwrap();
    assert!(!e.lookup_missing_now(d, b"x.txt"), "x.txt exists now");
    assert!(!e.lookup_missing_now(d, b"a/b"), "a bad name goes to the engine (EINVAL)");
    assert!(!e.lookup_missing_now(d + 1_000_000, b"y"), "an unknown parent goes to the engine");
    // Past the TTL the listing is not trusted alone: the engine asks (lists again).
    let t = Instant::now();
    while e.lookup_missing_now(d, b"y.txt") {
        assert!(t.elapsed() < Duration::from_secs(5), "still answered at once past the TTL");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(m.block_on(e.lookup(d, b"y.txt")).unwrap_err().errno(), libc::ENOENT);
    assert!(e.lookup_missing_now(d, b"y.txt"), "listed again: fresh");
    assert!(m.p("d/x.txt").exists() && !m.p("d/y.txt").exists());
}
