#!/usr/bin/env bash
# Runs the whole test suite: sets up what the tests need (a Python venv with
# the real huggingface_hub client), then `cargo test` over the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${HF_MOUNT_VENV:-$HOME/.cache/hf-mount-venv}"
if ! "$venv/bin/python" -c 'import huggingface_hub, hf_xet' 2>/dev/null; then
    echo "== creating Python venv for the client tests in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
fi
"$venv/bin/pip" install --quiet -r tests-requirements.txt
export HF_MOUNT_PYTHON="$venv/bin/python"

cargo test --workspace "$@"
