"""A whole offline session of the real `hf` CLI (the pinned huggingface_hub) against the
emulator: repos, files, revisions, listings, visibility and buckets, checking bytes and
listings, not only exit codes. Run by `python_client.rs` with HF_ENDPOINT set."""

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

HF = str(Path(sys.executable).parent / "hf")
ENDPOINT = os.environ["HF_ENDPOINT"]
TOKEN = os.environ["WRITE_TOKEN"]
work = Path(tempfile.mkdtemp(prefix="hf-cli-"))
atexit.register(shutil.rmtree, work, True)
home = work / "home"
anonymous_home = work / "anonymous"
checks = 0


def hf(*args, anonymous=False, ok=True):
    env = dict(os.environ, HF_HOME=str(anonymous_home if anonymous else home))
    env.pop("HF_TOKEN", None)
    p = subprocess.run([HF, *args], capture_output=True, text=True, env=env, timeout=120)
    if ok and p.returncode != 0:
        sys.exit(f"hf {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    if not ok and p.returncode == 0:
        sys.exit(f"hf {' '.join(args)} succeeded but must not:\n{p.stdout}")
    return p.stdout


def listed(*args, anonymous=False):
    return json.loads(hf(*args, "--format", "json", anonymous=anonymous))


def check(what, cond):
    global checks
    if not cond:
        sys.exit(f"FAILED: {what}")
    checks += 1
    print(f"ok: {what}")


src = work / "src"
src.mkdir()
(src / "a.txt").write_text("first\n")
(src / "w.bin").write_bytes(os.urandom(300_000))
(src / "sub").mkdir()
(src / "sub" / "c.json").write_text('{"k": 1}\n')

hf("auth", "login", "--token", TOKEN)
check("whoami after login", "alice" in hf("auth", "whoami"))

# Repos, an upload, a branch and a tag; a later commit; downloads by revision.
hf("repos", "create", "alice/cli-model")
hf("upload", "alice/cli-model", str(src), ".")
hf("repos", "branch", "create", "alice/cli-model", "dev")
hf("repos", "tag", "create", "alice/cli-model", "v1")
(src / "a.txt").write_text("second\n")
hf("upload", "alice/cli-model", str(src / "a.txt"), "a.txt")
at_tag = work / "at-tag"
hf("download", "alice/cli-model", "--revision", "v1", "--local-dir", str(at_tag))
check("download at a tag: the bytes of then", (at_tag / "a.txt").read_text() == "first\n")
check("download at a tag: binary bytes", (at_tag / "w.bin").read_bytes() == (src / "w.bin").read_bytes())
check("download at a tag: nested file", (at_tag / "sub" / "c.json").read_text() == '{"k": 1}\n')
on_dev = work / "on-dev"
hf("download", "alice/cli-model", "a.txt", "--revision", "dev", "--local-dir", str(on_dev))
check("download of a branch", (on_dev / "a.txt").read_text() == "first\n")
latest = work / "latest"
hf("download", "alice/cli-model", "a.txt", "--local-dir", str(latest))
check("download of main: the later commit", (latest / "a.txt").read_text() == "second\n")

# Listings by author, models and datasets.
hf("repos", "create", "alice/cli-data", "--repo-type", "dataset")
models = {m["id"]: m for m in listed("models", "ls", "--author", "alice")}
check("models ls --author lists the new model", "alice/cli-model" in models)
check("models ls --author lists only alice's", all(m["author"] == "alice" for m in models.values()))
check("models ls gives sha and dates", models["alice/cli-model"]["sha"] and models["alice/cli-model"]["last_modified"])
datasets = [d["id"] for d in listed("datasets", "ls", "--author", "alice")]
check("datasets ls --author lists the dataset, not the model", datasets == ["alice/cli-data"])
searched = [m["id"] for m in listed("models", "ls", "--search", "cli-mod")]
check("models ls --search", searched == ["alice/cli-model"])

# Visibility: private, then hidden from anonymous callers.
check("info while public, anonymous", "alice/cli-model" in hf("models", "info", "alice/cli-model", anonymous=True))
hf("repos", "settings", "alice/cli-model", "--private")
mine = {m["id"]: m["private"] for m in listed("models", "ls", "--author", "alice")}
check("settings --private took", mine["alice/cli-model"] is True)
anon = [m["id"] for m in listed("models", "ls", "--author", "alice", anonymous=True)]
check("anonymous listings leave it out", "alice/cli-model" not in anon)
hf("models", "info", "alice/cli-model", anonymous=True, ok=False)
hf("download", "alice/cli-model", "a.txt", "--local-dir", str(work / "refused"), anonymous=True, ok=False)
check("anonymous info and download refused", not (work / "refused" / "a.txt").exists())
hf("repos", "settings", "alice/cli-model", "--public")
check("--public again", "alice/cli-model" in hf("models", "info", "alice/cli-model", anonymous=True))

# A rename: listed under the new name, the old one still resolves (as on the Hub).
hf("repos", "move", "alice/cli-model", "alice/cli-moved")
ids = [m["id"] for m in listed("models", "ls", "--author", "alice")]
check("repos move: listed under its new name only", "alice/cli-moved" in ids and "alice/cli-model" not in ids)
old_name = work / "old-name"
hf("download", "alice/cli-model", "a.txt", "--local-dir", str(old_name))
check("repos move: the old name still resolves", (old_name / "a.txt").read_text() == "second\n")

# Buckets: create, sync, list, ls, cp, rm, visibility.
hf("buckets", "create", "alice/cli-bucket")
hf("buckets", "sync", str(src), "hf://buckets/alice/cli-bucket")
buckets = {b["id"]: b for b in listed("buckets", "list", "alice")}
check("buckets list: the bucket with its files", buckets.get("alice/cli-bucket", {}).get("total_files") == 3)
files = sorted(f["path"] for f in listed("buckets", "ls", "alice/cli-bucket", "-R") if f.get("type") == "file")
check("buckets ls -R: every synced file", files == ["a.txt", "sub/c.json", "w.bin"])
got = work / "got.bin"
hf("buckets", "cp", "hf://buckets/alice/cli-bucket/w.bin", str(got))
check("buckets cp: the bytes", got.read_bytes() == (src / "w.bin").read_bytes())
hf("buckets", "rm", "alice/cli-bucket/a.txt", "--yes")
files = sorted(f["path"] for f in listed("buckets", "ls", "alice/cli-bucket", "-R") if f.get("type") == "file")
check("buckets rm: gone", files == ["sub/c.json", "w.bin"])
hf("buckets", "settings", "alice/cli-bucket", "--private")
check("buckets settings --private", {b["id"]: b["private"] for b in listed("buckets", "list", "alice")}["alice/cli-bucket"])
anon = [b["id"] for b in listed("buckets", "list", "alice", anonymous=True)]
check("anonymous bucket listings leave it out", "alice/cli-bucket" not in anon)

hf("buckets", "move", "alice/cli-bucket", "alice/cli-bucket-2")
ids = [b["id"] for b in listed("buckets", "list", "alice")]
check("buckets move", "alice/cli-bucket-2" in ids and "alice/cli-bucket" not in ids)

# Deletion.
hf("repos", "delete", "alice/cli-moved", "--yes")
check("repos delete: no longer listed", "alice/cli-moved" not in [m["id"] for m in listed("models", "ls", "--author", "alice")])
hf("buckets", "delete", "alice/cli-bucket-2", "--yes")
check("buckets delete", "alice/cli-bucket-2" not in [b["id"] for b in listed("buckets", "list", "alice")])

# A call the emulator does not serve answers a JSON error with a status, as the Hub would.
try:
    urllib.request.urlopen(f"{ENDPOINT}/api/models/alice/tiny/discussions")
    sys.exit("an unserved route answered 200")
except urllib.error.HTTPError as e:
    check("an unserved call is a JSON error", e.code == 404 and "error" in json.loads(e.read()))

print(f"{checks} passed, 0 failed")
