//! Real FUSE mounts of emulator repos: byte-exact whole files and random
//! ranges, parallel preads on one fd, mmap, shell tools, subfolders,
//! revisions, private repos, awkward names, read-only errors.

mod common;

use std::io::Read;
use std::os::unix::fs::FileExt;

use common::{bytes, fixture_files, mount, pread, sh, try_mount, Hub, READ_TOKEN};

fn fixture(name: &str) -> Vec<u8> {
    fixture_files().into_iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn whole_files_and_thousands_of_random_ranges_are_byte_exact() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny"]);
    for (name, content) in fixture_files() {
        let got = std::fs::read(m.p(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(got == content, "{name} differs");
        assert_eq!(std::fs::metadata(m.p(name)).unwrap().len(), content.len() as u64);
    }
    let want = fixture("model.safetensors");
    let f = std::fs::File::open(m.p("model.safetensors")).unwrap();
    let mut x = 99u64;
    for _ in 0..3000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 17) % want.len() as u64;
        let len = 1 + ((x >> 5) % 300_000) as usize;
        let got = pread(&f, off, len).unwrap();
        let end = (off as usize + len).min(want.len());
        assert!(got == want[off as usize..end], "range {off}+{len}");
    }
    // Reads past the end return nothing, never an error.
    assert!(pread(&f, want.len() as u64 + 10, 100).unwrap().is_empty());
}

#[test]
fn parallel_preads_on_one_fd_and_mmap() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny"]);
    let want = std::sync::Arc::new(fixture("model.safetensors"));
    let f = std::sync::Arc::new(std::fs::File::open(m.p("model.safetensors")).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let (f, want) = (f.clone(), want.clone());
            std::thread::spawn(move || {
                let mut x = t + 1;
                for _ in 0..200 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let off = (x >> 17) % want.len() as u64;
                    let mut buf = vec![0u8; 8192];
                    let n = f.read_at(&mut buf, off).unwrap();
                    let end = (off as usize + n).min(want.len());
                    assert!(n == 8192.min(want.len() - off as usize), "short read at {off}");
                    assert!(buf[..n] == want[off as usize..end]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // mmap the file and compare it whole.
    let len = want.len();
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&*f),
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    let mapped = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
    assert!(mapped == &want[..]);
    unsafe { libc::munmap(ptr, len) };
}

#[test]
fn shell_tools_see_the_tree() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny"]);
    let root = m.path().display().to_string();
    let (ok, out, err) = sh(&format!("ls -R '{root}'"));
    assert!(ok, "{err}");
    for name in
        ["config.json", "model.safetensors", "nested dir", "notes #1 100%.txt", "\u{fc}nic\u{f6}de.txt", "model.onnx"]
    {
        assert!(out.contains(name), "ls -R lacks {name}:\n{out}");
    }
    let (ok, out, _) = sh(&format!("cd '{root}' && find . -type f | sort"));
    assert!(ok);
    let mut want: Vec<String> = fixture_files().iter().map(|(n, _)| format!("./{n}")).collect();
    want.sort();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    let (ok, out, _) = sh(&format!("grep -rl hf-mount-needle-42 '{root}'"));
    assert!(ok);
    assert_eq!(out.trim(), format!("{root}/README.md"));
    let (ok, out, _) = sh(&format!("cat '{root}/nested dir/notes #1 100%.txt'"));
    assert!(ok && out == "hash, percent and spaces\n");
    let (_, out, _) = sh(&format!("stat -c '%s %A' '{root}/model.safetensors' '{root}/onnx'"));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [format!("{} -r--r--r--", 5 * 1024 * 1024 + 333), "0 dr-xr-xr-x".into()]
    );
}

#[test]
fn mutations_are_refused_read_only() {
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny"]);
    let root = m.path();
    let erofs = |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS));
    erofs(std::fs::write(root.join("new.txt"), b"x"));
    erofs(std::fs::OpenOptions::new().write(true).open(root.join("config.json")).map(|_| ()));
    erofs(std::fs::create_dir(root.join("d")));
    erofs(std::fs::remove_file(root.join("config.json")));
    erofs(std::fs::rename(root.join("config.json"), root.join("c2.json")));
    // OS junk names are answered without asking the Hub.
    let e = std::fs::metadata(root.join(".DS_Store")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(std::fs::metadata(root.join("._model.safetensors")).is_err());
    assert_eq!(std::fs::metadata(root.join("nope")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert_eq!(std::fs::read(root.join("onnx/nope")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn subfolders_revisions_and_private_repos() {
    let hub = Hub::start();
    // A subfolder mount.
    let sub = mount(&hub, &["repo", "alice/tiny/onnx"]);
    let mut names: Vec<String> =
        std::fs::read_dir(sub.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.onnx"]);
    assert!(std::fs::read(sub.p("model.onnx")).unwrap() == fixture("onnx/model.onnx"));
    drop(sub);

    // Revisions: a sha, a branch, a tag, a PR.
    let e = hub.endpoint();
    let first = hub.seed_repo("alice/rev", &[("v.txt", b"one\n".to_vec())], false);
    let c = reqwest::Client::new();
    let post = |url: String, body: serde_json::Value| {
        let c = c.clone();
        async move { c.post(url).bearer_auth(common::WRITE_TOKEN).json(&body).send().await.unwrap().status() }
    };
    assert!(hub.http(post(format!("{e}/api/models/alice/rev/branch/stable"), serde_json::json!({}))).is_success());
    assert!(hub
        .http(post(format!("{e}/api/models/alice/rev/tag/main"), serde_json::json!({"tag": "v1"})))
        .is_success());
    hub.seed_repo("alice/rev", &[("v.txt", b"two\n".to_vec())], false);
    let lines = [
        r#"{"key":"header","value":{"summary":"pr"}}"#,
        r#"{"key":"file","value":{"path":"v.txt","content":"cHIK","encoding":"base64"}}"#,
    ]
    .map(String::from);
    let status = hub.commit("alice/rev", "?create_pr=1", &lines);
    assert!(status.is_success());
    for (rev, want) in
        [(first.as_str(), "one\n"), ("stable", "one\n"), ("v1", "one\n"), ("main", "two\n"), ("refs/pr/1", "pr\n")]
    {
        let m = mount(&hub, &["repo", "alice/rev", "--revision", rev]);
        assert_eq!(std::fs::read_to_string(m.p("v.txt")).unwrap(), want, "revision {rev}");
    }
    assert!(try_mount(&hub, &["repo", "alice/rev", "--revision", "nope"]).is_err());
    assert!(try_mount(&hub, &["repo", "alice/rev", "--revision", "a..b"])
        .unwrap_err()
        .to_string()
        .contains("invalid revision"));

    // A private repo: refused without a token, readable with one.
    hub.seed_repo("alice/private", &[("secret.bin", bytes(9, 100_000))], true);
    let err = try_mount(&hub, &["repo", "alice/private"]).unwrap_err().to_string();
    assert!(err.contains("401") || err.contains("not found"), "{err}");
    let m = mount(&hub, &["repo", "alice/private", "--hf-token", READ_TOKEN]);
    assert!(std::fs::read(m.p("secret.bin")).unwrap() == bytes(9, 100_000));
    let mut f = std::fs::File::open(m.p("secret.bin")).unwrap();
    let mut head = [0u8; 10];
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head, &bytes(9, 10)[..]);
}

#[test]
fn buckets_list_strict_descendants_and_read_only_buckets_refuse_writes() {
    let hub = Hub::start();
    hub.seed_bucket(
        "alice/ckpt",
        &[("runs/1/step.bin", bytes(4, 300_000)), ("runs/1.manifest#1", b"m".to_vec()), ("top.txt", b"t".to_vec())],
    );
    let m = mount(&hub, &["bucket", "alice/ckpt", "--read-only"]);
    assert!(std::fs::read(m.p("runs/1/step.bin")).unwrap() == bytes(4, 300_000));
    let mut names: Vec<String> =
        std::fs::read_dir(m.p("runs/1")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["step.bin"], "raw-prefix siblings (1.manifest#1) must not leak into runs/1");
    assert_eq!(std::fs::read_to_string(m.p("runs/1.manifest#1")).unwrap(), "m");
    assert_eq!(std::fs::write(m.p("new"), b"x").unwrap_err().raw_os_error(), Some(libc::EROFS));
    assert_eq!(std::fs::create_dir(m.p("d")).unwrap_err().raw_os_error(), Some(libc::EROFS));
    assert_eq!(std::fs::remove_file(m.p("top.txt")).unwrap_err().raw_os_error(), Some(libc::EROFS));
    let sub = mount(&hub, &["bucket", "alice/ckpt/runs", "--read-only"]);
    let mut names: Vec<String> =
        std::fs::read_dir(sub.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["1", "1.manifest#1"]);
    let hint = try_mount(&hub, &["repo", "buckets/alice/ckpt"]).unwrap_err().to_string();
    assert!(hint.contains("bucket alice/ckpt"), "{hint}");
}

#[test]
fn renamed_repos_resolve_to_the_canonical_id_and_hub_hiccups_are_retried() {
    let hub = Hub::start();
    let repo = |s: &str| hf_hub_emulator::RepoRef::parse(s).unwrap();
    hub.emulator().store().add_alias(&repo("alice/old-name"), &repo("alice/tiny")).unwrap();
    let m = mount(&hub, &["repo", "alice/old-name"]);
    assert_eq!(m.engine().source().id, "alice/tiny");
    assert!(std::fs::read(m.p("config.json")).unwrap() == fixture("config.json"));
    drop(m);

    // A 429 with RateLimit and two 503s on the Hub: the mount waits them out and succeeds.
    use hf_hub_emulator::{FaultKind, FaultSpec, RouteClass};
    let faults = hub.emulator().faults();
    faults.add(FaultSpec::new(RouteClass::HubMetadata, FaultKind::RateLimit { reset_secs: 1 }).times(1)).unwrap();
    faults.add(FaultSpec::new(RouteClass::HubMetadata, FaultKind::Error { status: 503 }).times(2)).unwrap();
    let t = std::time::Instant::now();
    let m = mount(&hub, &["repo", "alice/tiny"]);
    assert!(t.elapsed() >= std::time::Duration::from_secs(1), "the RateLimit wait was not honoured");
    assert!(std::fs::read(m.p("onnx/config.json")).unwrap() == fixture("onnx/config.json"));
    let hits: u64 = faults.list().iter().map(|r| r.hits).sum();
    assert_eq!(hits, 3);
}

#[test]
fn large_sequential_reads_are_negotiated() {
    use std::os::unix::fs::MetadataExt;
    let hub = Hub::start();
    let m = mount(&hub, &["repo", "alice/tiny"]);
    let dev = std::fs::metadata(m.path()).unwrap().dev();
    let (major, minor) = (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff), (dev & 0xff) | ((dev >> 12) & !0xff));
    let ra = std::fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb")).unwrap();
    assert_eq!(ra.trim(), "1024", "the kernel would cap sequential reads at its 128 KiB default");
}
