#!/usr/bin/env bash
# Starts a local Hub emulator with a small demo model repo and dataset (no
# network needed), then shows it answering as the Hub would.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p hf-hub-emulator
bin="${CARGO_TARGET_DIR:-target}/release/hf-hub-emulator"
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

python3 scripts/make_demo_repo.py "$work/model" "$work/dataset"
"$bin" seed --data-dir "$work/hub" repo demo/tiny-model "$work/model"
"$bin" seed --data-dir "$work/hub" repo datasets/demo/tiny-dataset "$work/dataset"
"$bin" serve --data-dir "$work/hub" > "$work/endpoint" &
server=$!
for _ in $(seq 50); do [ -s "$work/endpoint" ] && break; sleep 0.1; done
endpoint="$(head -1 "$work/endpoint")"

echo "== emulator at $endpoint"
echo "== files of demo/tiny-model"
curl -s "$endpoint/api/models/demo/tiny-model/tree/main?recursive=true" | python3 -m json.tool
echo "== config.json"
curl -s "$endpoint/demo/tiny-model/resolve/main/config.json"; echo
echo "== model.safetensors header (a Xet file, read by range)"
curl -sI "$endpoint/demo/tiny-model/resolve/main/model.safetensors" | grep -i -E 'x-xet-hash|x-linked-size'
echo "== the emulator keeps running until Ctrl-C; HF_ENDPOINT=$endpoint"
if [ -t 0 ] && [ "${DEMO_EXIT:-0}" != 1 ]; then wait "$server"; fi
