#!/usr/bin/env bash
# Runs the whole test suite, after setting up what a fresh machine lacks:
# Debian packages (fuse3 for fusermount3, libnfs-utils for the outside NFS client,
# rsync, sqlite3, git, python3-venv, e2fsprogs for a cache disk that turns read-only), the user pjdfstest switches to, pjdfstest and
# fsx from crates.io, and a Python venv with the real huggingface_hub client.
# Then `cargo test` over the workspace (arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages (as root; otherwise say what is missing).
missing=()
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v nfs-ls >/dev/null || missing+=(libnfs-utils)
command -v rsync >/dev/null || missing+=(rsync)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v git >/dev/null || missing+=(git)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "missing packages: ${missing[*]} (install them, or run this as root)" >&2
        exit 1
    fi
fi
# pjdfstest switches to `nobody` and `tests`.
if [ "$(id -u)" = 0 ] && ! id tests >/dev/null 2>&1; then
    useradd -M -U -s /usr/sbin/nologin tests
fi

# pjdfstest and fsx, built once into a directory of their own.
export HF_MOUNT_TOOLS="${HF_MOUNT_TOOLS:-$HOME/.cache/hf-mount-tools}"
for tool in pjdfstest fsx; do
    if [ ! -x "$HF_MOUNT_TOOLS/bin/$tool" ]; then
        echo "== installing $tool (crates.io)"
        cargo install --quiet --locked "$tool" --root "$HF_MOUNT_TOOLS"
    fi
done

venv="${HF_MOUNT_VENV:-$HOME/.cache/hf-mount-venv}"
if ! "$venv/bin/python" -c 'import huggingface_hub, hf_xet' 2>/dev/null; then
    echo "== creating Python venv for the client tests in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
fi
"$venv/bin/pip" install --quiet -r tests-requirements.txt
export HF_MOUNT_PYTHON="$venv/bin/python"

cargo test --workspace "$@"
