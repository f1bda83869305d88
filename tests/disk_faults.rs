//! Disk faults under a real FUSE mount: the cache dir on a small tmpfs that fills up, on an
//! ext4 disk that turns read-only mid-run (an error, `errors=remount-ro`), and a journal
//! corrupted between two mounts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::spawn::{spawn_mounted, spawn_mounted_logged, Guard};
use common::{bytes, mount, write_and_close, Hub, WRITE_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_hf-mount-fuse");

/// A tmpfs of `mib` MiB mounted on a temp dir, unmounted on drop (pass or fail).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs (these tests run as root, as CI does)");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn errno(r: std::io::Result<()>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

#[test]
fn a_full_cache_disk_bypasses_the_cache_for_reads_and_gives_writers_enospc_losing_nothing() {
    let hub = Hub::start();
    let big = bytes(5, 12 << 20);
    hub.seed_bucket("alice/full", &[("big.bin", big.clone())]);
    let fs = Tmpfs::new(6);
    let dir = fs.path().display().to_string();
    let args = ["bucket", "alice/full", "--hf-token", WRITE_TOKEN, "--advanced-writes", "--cache-dir", &dir];
    let m = mount(&hub, &[&args[..], &["--flush-debounce-ms", "100"]].concat());
    write_and_close(&m.p("small.txt"), b"acknowledged before the disk filled").unwrap();
    // 12 MiB read through a 6 MiB cache disk: blocks that do not fit are served uncached.
    assert!(std::fs::read(m.p("big.bin")).unwrap() == big, "reads stay byte-exact");
    // A writer that needs more room than the disk has is told so.
    let e = errno(write_and_close(&m.p("huge.bin"), &bytes(6, 8 << 20)));
    assert_eq!(e, libc::ENOSPC, "errno {e}");
    let _ = std::fs::remove_file(m.p("huge.bin"));
    // The acknowledged file is committed: its upload failed while the disk was full (xet-core
    // stages shards there), and is retried once the cache has given room back.
    common::wait_until(Duration::from_secs(30), "small.txt committed", || {
        hub.bucket_bytes("alice/full", "small.txt").as_deref() == Some(&b"acknowledged before the disk filled"[..])
    });
    assert_eq!(hub.bucket_bytes("alice/full", "huge.bin"), None, "the failed write was never committed");
    assert!(std::fs::read(m.p("big.bin")).unwrap() == big);
}

/// The mount's journal under `cache` (one source, one subdirectory).
fn journal_in(cache: &Path) -> PathBuf {
    let sub = std::fs::read_dir(cache).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).unwrap();
    sub.join("journal")
}

#[test]
fn a_corrupt_journal_record_is_skipped_loudly_and_the_rest_replayed() {
    let hub = Hub::start();
    hub.create_bucket("alice/j");
    let cache = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let cmd = |log: Option<&Path>| {
        let mut c = Command::new(BIN);
        c.args(["bucket", "alice/j"])
            .arg(mnt.path())
            .args(["--hf-token", WRITE_TOKEN, "--advanced-writes", "--flush-debounce-ms", "60000", "--cache-dir"])
            .arg(cache.path())
            .env("HF_ENDPOINT", hub.endpoint());
        match log {
            Some(l) => spawn_mounted_logged(&mut c, l),
            None => spawn_mounted(&mut c),
        }
    };
    let mut guard = Guard::new(cmd(None), Some(mnt.path()));
    for i in 0..6 {
        write_and_close(&mnt.path().join(format!("f{i}.txt")), format!("file {i}\n").as_bytes()).unwrap();
    }
    // Killed with everything pending (nothing committed: the debounce is a minute).
    let mut child = guard.take();
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let _ = Command::new("fusermount3").arg("-uz").arg(mnt.path()).status();
    assert!(hub.bucket_files("alice/j").is_empty());
    // One byte flipped in the middle of the journal: one record fails its CRC.
    let journal = journal_in(cache.path());
    let mut data = std::fs::read(&journal).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&journal, &data).unwrap();

    let log = cache.path().join("mount.log");
    let guard = Guard::new(cmd(Some(&log)), Some(mnt.path()));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("failed their check and were skipped"), "a loud line: {text}");
    let shown: Vec<bool> = (0..6).map(|i| mnt.path().join(format!("f{i}.txt")).exists()).collect();
    let kept = shown.iter().filter(|s| **s).count();
    assert!((4..=5).contains(&kept), "one record lost to the corruption, the rest replayed: {shown:?}");
    // The replayed files are committed whole (hf-mount sync through the control socket).
    let synced = Command::new(env!("CARGO_BIN_EXE_hf-mount")).arg("sync").arg(mnt.path()).status().unwrap();
    assert!(synced.success());
    for (i, s) in shown.iter().enumerate() {
        let on_hub = hub.bucket_bytes("alice/j", &format!("f{i}.txt"));
        if *s {
            assert_eq!(on_hub.as_deref(), Some(format!("file {i}\n").as_bytes()), "f{i}.txt");
        }
    }
    drop(guard);
}

/// An ext4 image on a loop device, mounted `errors=remount-ro` as many hosts mount their
/// disks: `fail` makes the kernel meet an error on it, and it turns read-only under
/// everything open on it, as a failing disk does. Unmounted on drop (pass or fail).
struct Ext4Disk {
    image: tempfile::TempDir,
    dir: tempfile::TempDir,
}

impl Ext4Disk {
    fn new(mib: u64) -> Self {
        let (image, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let img = image.path().join("disk.ext4");
        std::fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
        let made = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfs.ext4 failed (e2fsprogs; scripts/test.sh installs it)");
        let ok = Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&img)
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a loop device (these tests run as root, as CI does)");
        Self { image, dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// An error as ext4 reports one (through its sysfs test knob): the disk is read-only now.
    fn fail(&self) {
        let out = Command::new("findmnt").args(["-n", "-o", "SOURCE"]).arg(self.dir.path()).output().unwrap();
        let dev = String::from_utf8(out.stdout).unwrap();
        let dev = dev.trim().rsplit('/').next().unwrap().to_string();
        std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "test: the disk failed").unwrap();
        let probe = std::fs::write(self.dir.path().join("probe"), b"x");
        assert_eq!(probe.unwrap_err().raw_os_error(), Some(libc::EROFS), "the disk did not turn read-only");
    }
}

impl Drop for Ext4Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        let _ = &self.image;
    }
}

#[test]
fn a_cache_disk_turned_read_only_keeps_reads_working_fails_writers_with_erofs_and_loses_nothing() {
    let hub = Hub::start();
    let (cached, cold) = (bytes(7, 3 << 20), bytes(8, 3 << 20));
    hub.seed_bucket("alice/ro", &[("cached.bin", cached.clone()), ("cold.bin", cold.clone())]);
    let disk = Ext4Disk::new(96);
    let dir = disk.path().display().to_string();
    let args = ["bucket", "alice/ro", "--hf-token", WRITE_TOKEN, "--advanced-writes", "--cache-dir", &dir];
    let m = mount(&hub, &[&args[..], &["--flush-debounce-ms", "2000"]].concat());
    assert!(std::fs::read(m.p("cached.bin")).unwrap() == cached);
    write_and_close(&m.p("acked.txt"), b"acknowledged before the disk failed").unwrap();
    let mut open = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(m.p("open.bin")).unwrap();
    std::io::Write::write_all(&mut open, b"written before").unwrap();
    disk.fail();
    // Reads carry on, byte-exact: from the blocks on the disk, and around the cache for the rest.
    assert!(std::fs::read(m.p("cached.bin")).unwrap() == cached, "cached bytes");
    assert!(std::fs::read(m.p("cold.bin")).unwrap() == cold, "uncached bytes");
    // Writers are told the mount cannot take writes now; nothing half-written is acknowledged.
    let e = errno(write_and_close(&m.p("after.txt"), b"written after"));
    assert_eq!(e, libc::EROFS, "a new file: errno {e}");
    std::io::Write::write_all(&mut open, b" and after").ok();
    assert_eq!(errno(common::close_checked(open)), libc::EROFS, "a file open across the failure");
    // The mount answers on, and what was acknowledged reaches the Hub.
    assert!(m.p("acked.txt").exists());
    common::wait_until(Duration::from_secs(30), "acked.txt committed", || {
        hub.bucket_bytes("alice/ro", "acked.txt").as_deref() == Some(&b"acknowledged before the disk failed"[..])
    });
    assert_eq!(hub.bucket_bytes("alice/ro", "after.txt"), None);
    assert_eq!(hub.bucket_bytes("alice/ro", "open.bin"), None, "a file never closed whole was committed");
    assert!(std::fs::read(m.p("cold.bin")).unwrap() == cold);
}
