"""Drives the emulator with the real `huggingface_hub` client (and hf_xet).

Run by `emulator/tests/python_client.rs`, which starts the emulator, seeds
`alice/tiny` (public) and `alice/secret` (private) from FIXTURE, and sets:
HF_ENDPOINT, HF_HOME (a temp dir), FIXTURE, WRITE_TOKEN, READ_TOKEN,
OTHER_TOKEN. Every check compares bytes, not just statuses. Prints one line
per check and exits non-zero on the first failure.
"""

import os
import pathlib
import sys
import tempfile

from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

FIXTURE = pathlib.Path(os.environ["FIXTURE"])
WRITE = os.environ["WRITE_TOKEN"]
READ = os.environ["READ_TOKEN"]
OTHER = os.environ["OTHER_TOKEN"]
api = HfApi()
passed = 0


def check(name):
    def wrap(fn):
        global passed
        fn()
        passed += 1
        print(f"ok {name}", flush=True)
        return fn

    return wrap


def fixture_files():
    return {
        str(p.relative_to(FIXTURE)): p.read_bytes()
        for p in sorted(FIXTURE.rglob("*"))
        if p.is_file()
    }


def expect(exc_type, fn, status=None):
    try:
        fn()
    except exc_type as e:
        if status is not None and getattr(e, "response", None) is not None:
            assert e.response.status_code == status, (e.response.status_code, status)
        return e
    raise AssertionError(f"expected {exc_type.__name__}")


@check("list_repo_tree recursive matches the fixture")
def _():
    files = {
        f.path: f
        for f in api.list_repo_tree("alice/tiny", recursive=True)
        if hasattr(f, "size")
    }
    want = fixture_files()
    assert set(files) == set(want), (sorted(files), sorted(want))
    for path, content in want.items():
        assert files[path].size == len(content), path
    big = files["model.safetensors"]
    assert big.xet_hash and big.lfs is not None, "large file must be Xet-backed"
    assert files["config.json"].xet_hash is None, "small text file must be a git blob"


@check("list_repo_tree one level and expand")
def _():
    entries = list(api.list_repo_tree("alice/tiny", path_in_repo="nested dir", expand=True))
    paths = sorted(e.path for e in entries)
    assert paths == ["nested dir/deeper", "nested dir/notes #1 100%.txt"], paths
    assert all(e.last_commit is not None for e in entries)


@check("hf_hub_download of a Xet file and a git blob is byte-exact")
def _():
    want = fixture_files()
    for name in ["model.safetensors", "config.json", "nested dir/notes #1 100%.txt"]:
        path = hf_hub_download("alice/tiny", name)
        assert pathlib.Path(path).read_bytes() == want[name], name


@check("snapshot_download is byte-exact")
def _():
    root = pathlib.Path(snapshot_download("alice/tiny"))
    for name, content in fixture_files().items():
        assert (root / name).read_bytes() == content, name


@check("missing file and revision raise the client's errors")
def _():
    expect(EntryNotFoundError, lambda: hf_hub_download("alice/tiny", "nope.bin"))
    expect(RevisionNotFoundError, lambda: hf_hub_download("alice/tiny", "config.json", revision="no-such-branch"))
    expect(RepositoryNotFoundError, lambda: api.model_info("alice/does-not-exist"))


@check("private repo: anonymous and stranger refused, owner reads")
def _():
    expect(RepositoryNotFoundError, lambda: api.model_info("alice/secret", token=False), status=401)
    expect(RepositoryNotFoundError, lambda: api.model_info("alice/secret", token=OTHER), status=404)
    info = api.model_info("alice/secret", token=READ)
    assert info.private
    path = hf_hub_download("alice/secret", "model.safetensors", token=READ)
    assert pathlib.Path(path).read_bytes() == fixture_files()["model.safetensors"]


@check("upload_file and upload_folder through hf_xet, then byte-exact download")
def _():
    api.create_repo("alice/uploaded", token=WRITE)
    expect(HfHubHTTPError, lambda: api.create_repo("alice/uploaded", token=WRITE), status=409)
    api.create_repo("alice/uploaded", token=WRITE, exist_ok=True)
    blob = os.urandom(3 * 1024 * 1024 + 17)
    info = api.upload_file(path_or_fileobj=blob, path_in_repo="weights/big.bin", repo_id="alice/uploaded", token=WRITE)
    with tempfile.TemporaryDirectory() as d:
        src = pathlib.Path(d)
        (src / "a.txt").write_text("alpha\n")
        (src / "sub").mkdir()
        (src / "sub" / "b.safetensors").write_bytes(os.urandom(200_000))
        api.upload_folder(folder_path=d, repo_id="alice/uploaded", token=WRITE)
        for rel in ["a.txt", "sub/b.safetensors"]:
            got = pathlib.Path(hf_hub_download("alice/uploaded", rel, token=WRITE)).read_bytes()
            assert got == (src / rel).read_bytes(), rel
    got = pathlib.Path(hf_hub_download("alice/uploaded", "weights/big.bin")).read_bytes()
    assert got == blob
    tree = {f.path: f for f in api.list_repo_tree("alice/uploaded", recursive=True) if hasattr(f, "size")}
    assert tree["weights/big.bin"].xet_hash, "uploaded binary must be stored in Xet"
    assert tree["a.txt"].xet_hash is None
    # The commit from upload_file stays readable after later commits.
    old = pathlib.Path(hf_hub_download("alice/uploaded", "weights/big.bin", revision=info.oid)).read_bytes()
    assert old == blob


@check("read token and stranger cannot write")
def _():
    expect(HfHubHTTPError, lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/uploaded", token=READ), status=403)
    expect(HfHubHTTPError, lambda: api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/uploaded", token=OTHER), status=403)


@check("revision pins: commit sha, branch, tag, refs/pr/N")
def _():
    first = api.upload_file(path_or_fileobj=b"v1\n", path_in_repo="version.txt", repo_id="alice/uploaded", token=WRITE)
    api.create_branch("alice/uploaded", branch="stable", token=WRITE)
    api.create_tag("alice/uploaded", tag="v1.0", token=WRITE)
    api.upload_file(path_or_fileobj=b"v2\n", path_in_repo="version.txt", repo_id="alice/uploaded", token=WRITE)
    pr = api.upload_file(path_or_fileobj=b"v3-pr\n", path_in_repo="version.txt", repo_id="alice/uploaded", token=WRITE, create_pr=True)
    assert pr.pr_num == 1, pr.pr_url

    def read(rev):
        return pathlib.Path(hf_hub_download("alice/uploaded", "version.txt", revision=rev, force_download=True)).read_bytes()

    assert read(first.oid) == b"v1\n"
    assert read("stable") == b"v1\n"
    assert read("v1.0") == b"v1\n"
    assert read("main") == b"v2\n"
    assert read("refs/pr/1") == b"v3-pr\n"
    refs = api.list_repo_refs("alice/uploaded", include_pull_requests=True)
    assert {b.name for b in refs.branches} == {"main", "stable"}
    assert [t.name for t in refs.tags] == ["v1.0"]
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]
    commits = api.list_repo_commits("alice/uploaded")
    assert commits[0].commit_id == api.model_info("alice/uploaded").sha
    api.delete_tag("alice/uploaded", tag="v1.0", token=WRITE)
    api.delete_branch("alice/uploaded", branch="stable", token=WRITE)
    expect(RevisionNotFoundError, lambda: read("stable"))


@check("delete_file and delete_folder")
def _():
    api.delete_file("a.txt", repo_id="alice/uploaded", token=WRITE)
    api.delete_folder("sub", repo_id="alice/uploaded", token=WRITE)
    paths = {f.path for f in api.list_repo_tree("alice/uploaded", recursive=True)}
    assert "a.txt" not in paths and "sub/b.safetensors" not in paths, paths


@check("datasets: create, upload, download")
def _():
    api.create_repo("alice/table", repo_type="dataset", private=True, token=WRITE)
    data = os.urandom(50_000)
    api.upload_file(path_or_fileobj=data, path_in_repo="data/train.parquet", repo_id="alice/table", repo_type="dataset", token=WRITE)
    got = hf_hub_download("alice/table", "data/train.parquet", repo_type="dataset", token=READ)
    assert pathlib.Path(got).read_bytes() == data
    expect(RepositoryNotFoundError, lambda: api.dataset_info("alice/table", token=False))


@check("whoami")
def _():
    assert api.whoami(token=WRITE)["name"] == "alice"
    expect(HfHubHTTPError, lambda: api.whoami(token="hf_not_a_token"), status=401)


@check("buckets: create, batch add, list, paths-info, download, delete")
def _():
    api.create_bucket("alice/ckpt", token=WRITE)
    expect(HfHubHTTPError, lambda: api.create_bucket("alice/ckpt", token=WRITE), status=409)
    payload = os.urandom(1_500_000)
    with tempfile.TemporaryDirectory() as d:
        src = pathlib.Path(d) / "step1.bin"
        src.write_bytes(payload)
        api.batch_bucket_files(
            "alice/ckpt",
            add=[(str(src), "runs/1/step1.bin"), (b"hello bucket\n", "runs/1/notes.txt"), (b"#1", "runs/1.manifest#1")],
            token=WRITE,
        )
    top = [(e.type, e.path) for e in api.list_bucket_tree("alice/ckpt", token=WRITE)]
    assert top == [("directory", "runs")], top
    # Raw prefix matching: listing runs/1 also returns runs/1.manifest#1.
    under = sorted((e.type, e.path) for e in api.list_bucket_tree("alice/ckpt", prefix="runs/1", token=WRITE))
    assert under == [("file", "runs/1.manifest#1"), ("file", "runs/1/notes.txt"), ("file", "runs/1/step1.bin")], under
    files = {f.path: f for f in api.list_bucket_tree("alice/ckpt", recursive=True, token=WRITE)}
    assert files["runs/1/step1.bin"].size == len(payload)
    info = list(api.get_bucket_paths_info("alice/ckpt", ["runs/1/notes.txt", "missing"], token=WRITE))
    assert [i.path for i in info] == ["runs/1/notes.txt"]
    with tempfile.TemporaryDirectory() as d:
        out = pathlib.Path(d)
        api.download_bucket_files(
            "alice/ckpt", [("runs/1/step1.bin", out / "a.bin"), ("runs/1/notes.txt", out / "n.txt")], token=WRITE
        )
        assert (out / "a.bin").read_bytes() == payload
        assert (out / "n.txt").read_bytes() == b"hello bucket\n"
    api.batch_bucket_files("alice/ckpt", delete=["runs/1/notes.txt"], token=WRITE)
    left = {f.path for f in api.list_bucket_tree("alice/ckpt", recursive=True, token=WRITE)}
    assert left == {"runs/1/step1.bin", "runs/1.manifest#1"}, left
    assert api.bucket_info("alice/ckpt", token=WRITE).total_files == 2
    api.delete_bucket("alice/ckpt", token=WRITE)
    expect(HfHubHTTPError, lambda: api.bucket_info("alice/ckpt", token=WRITE), status=404)


@check("private bucket is hidden from anonymous callers and strangers")
def _():
    api.create_bucket("alice/vault", private=True, token=WRITE)
    expect(HfHubHTTPError, lambda: api.bucket_info("alice/vault", token=False), status=401)
    expect(HfHubHTTPError, lambda: api.bucket_info("alice/vault", token=OTHER), status=404)
    # hf_xet asks for the write token first and reports the refusal as a ConnectionError.
    err = expect(Exception, lambda: api.batch_bucket_files("alice/vault", add=[(b"x", "x")], token=READ))
    assert "403" in str(err), err
    assert api.bucket_info("alice/vault", token=READ).private


print(f"{passed} passed, 0 failed", flush=True)
sys.exit(0)
