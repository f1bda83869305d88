#!/usr/bin/env bash
# The full fault matrix (tests/fault_matrix.rs): every route class × fault kind × operation,
# on FUSE and NFS (1,512 cells, about 35 minutes on 2 cores), then the table in README.md
# between the fault-matrix markers is rewritten. CI runs a sample of the cells
# (`cargo test --test fault_matrix`).
#
#   ./scripts/fault-matrix.sh              # full matrix, README rewritten
#   NO_README=1 ./scripts/fault-matrix.sh  # print only
#
# Needs FUSE (/dev/fuse).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/hf-mount-target}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
FAULT_MATRIX=full cargo test --test fault_matrix -- --nocapture --test-threads 1 | tee "$out"
if [ -n "${NO_README:-}" ]; then
    exit 0
fi
python3 - "$out" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
start_at = next(i for i, l in enumerate(lines) if l.startswith("Fault matrix ("))
table = [lines[start_at]] + [l for l in lines[start_at + 1:] if l.startswith("|")]
readme = open("README.md").read()
start, end = "<!-- fault-matrix:start -->", "<!-- fault-matrix:end -->"
if start not in readme or end not in readme:
    sys.exit("README.md has no fault-matrix markers")
head, rest = readme.split(start, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(f"{head}{start}\n{table[0]}\n\n" + "\n".join(table[1:]) + f"\n{end}{tail}")
print("README.md: fault matrix rewritten")
PY
