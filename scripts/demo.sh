#!/usr/bin/env bash
# The main job on the embedded default: starts a local Hub emulator with a
# small demo model and dataset (no network needed), mounts both over FUSE,
# and shows them working: ls, a file read, a safetensors tensor loaded.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p hf-hub-emulator -p hf-mount --bin hf-hub-emulator --bin hf-mount-fuse
bin="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d)"
cleanup() {
    for m in "$work/model" "$work/dataset" "$work/ckpt"; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || umount "$m"; }
    done
    kill "${mounts[@]}" 2>/dev/null || true
    kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
mounts=()
server=""
trap cleanup EXIT

python3 scripts/make_demo_repo.py "$work/src-model" "$work/src-dataset"
"$bin/hf-hub-emulator" seed --data-dir "$work/hub" repo demo/tiny-model "$work/src-model"
"$bin/hf-hub-emulator" seed --data-dir "$work/hub" repo datasets/demo/tiny-dataset "$work/src-dataset"
mkdir -p "$work/src-bucket" && echo "run started" > "$work/src-bucket/README.txt"
"$bin/hf-hub-emulator" seed --data-dir "$work/hub" bucket demo/checkpoints "$work/src-bucket"
"$bin/hf-hub-emulator" serve --data-dir "$work/hub" --token demo:hf_demo_write:write > "$work/endpoint" 2> "$work/hub.log" &
server=$!
for _ in $(seq 100); do [ -s "$work/endpoint" ] && break; sleep 0.1; done
export HF_ENDPOINT="$(head -1 "$work/endpoint")"
echo "== local Hub at $HF_ENDPOINT"

mkdir -p "$work/model" "$work/dataset" "$work/ckpt"
export HF_MOUNT_CACHE_DIR="$work/cache" HF_MOUNT_HOME="$work/home"
"$bin/hf-mount-fuse" repo demo/tiny-model "$work/model" 2> "$work/model.log" &
mounts+=($!)
"$bin/hf-mount-fuse" repo datasets/demo/tiny-dataset "$work/dataset" 2> "$work/dataset.log" &
mounts+=($!)
"$bin/hf-mount-fuse" bucket demo/checkpoints "$work/ckpt" --hf-token hf_demo_write 2> "$work/ckpt.log" &
mounts+=($!)
logs=("$work/model.log" "$work/dataset.log" "$work/ckpt.log")
for _ in $(seq 100); do [ "$(grep -l "mounted at" "${logs[@]}" 2>/dev/null | wc -l)" = 3 ] && break; sleep 0.1; done

echo "== ls -l of the mounted model and dataset"
ls -l "$work/model" "$work/dataset/data"
echo "== cat config.json"
cat "$work/model/config.json"
echo "== first rows of the dataset"
head -3 "$work/dataset/data/train.jsonl"
echo "== a tensor loaded from model.safetensors (Xet-stored, fetched by range)"
python3 - "$work/model/model.safetensors" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    meta = header["lm_head.bias"]
    start, end = meta["data_offsets"]
    f.seek(8 + n + start)
    values = struct.unpack(f"<{(end - start) // 4}f", f.read(end - start))
print("lm_head.bias", meta["shape"], list(values))
PY
echo "== writing into the bucket demo/checkpoints (read-write; close returns once committed)"
cp "$work/model/model.safetensors" "$work/ckpt/step-100.safetensors"
echo "step 100: loss 0.42" >> "$work/ckpt/train.log"
ls -l "$work/ckpt"
echo "== the same files through the Hub API"
curl -s "$HF_ENDPOINT/api/buckets/demo/checkpoints/tree" > "$work/tree.json"
python3 - "$work/tree.json" <<'PY'
import json, sys
for e in json.load(open(sys.argv[1])):
    print(f"{e['path']:28} {e['size']:>8} bytes  xet {e['xetHash'][:16]}...")
PY
echo "== train.log downloaded from the Hub:"
curl -s "$HF_ENDPOINT/buckets/demo/checkpoints/resolve/train.log"
echo "== done; unmounting"
