#!/usr/bin/env bash
# Side by side with the public hf-mount: runs the `peer` sections of benches/read_path.rs and
# benches/write_path.rs (both tools' FUSE mounts, same emulator, alternating rounds) and
# rewrites the table in README.md between the side-by-side markers.
#
#   ./scripts/side-by-side.sh                 # 5 rounds, 1 GiB file (a few minutes)
#   BENCH_ROUNDS=3 BENCH_FILE_MIB=512 ./scripts/side-by-side.sh
#   HF_MOUNT_PEER_FUSE=/path/to/hf-mount-fuse ./scripts/side-by-side.sh   # another peer binary
#   NO_README=1 ./scripts/side-by-side.sh     # print only
#
# Needs root (drop_caches between a cold read and its re-read) and FUSE.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/hf-mount-target}"
export HF_MOUNT_PEER_FUSE="${HF_MOUNT_PEER_FUSE:-$(cd .. && pwd)/shared/peer/hf-mount-fuse}"
if [ ! -x "$HF_MOUNT_PEER_FUSE" ]; then
    echo "no peer binary at $HF_MOUNT_PEER_FUSE (set HF_MOUNT_PEER_FUSE)" >&2
    exit 2
fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
export SIDE_BY_SIDE_OUT="$out" BENCH_ONLY=peer
cargo bench --bench read_path
cargo bench --bench write_path
if [ -n "${NO_README:-}" ]; then
    cat "$out"
    exit 0
fi
python3 - "$out" <<'PY'
import re, sys
table = open(sys.argv[1]).read().strip()
readme = open("README.md").read()
start, end = "<!-- side-by-side:start -->", "<!-- side-by-side:end -->"
if start not in readme or end not in readme:
    sys.exit("README.md has no side-by-side markers")
head, rest = readme.split(start, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(f"{head}{start}\n{table}\n{end}{tail}")
print("README.md: side-by-side table rewritten")
PY
