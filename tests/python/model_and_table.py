"""Loads a safetensors model and a parquet table from a mount and compares
them with the originals.

  model_and_table.py make SRC_DIR          writes the originals into SRC_DIR
  model_and_table.py check SRC_DIR MOUNT   compares MOUNT's copies with SRC_DIR's
"""

import pathlib
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors import safe_open
from safetensors.numpy import save_file


def make(src: pathlib.Path):
    rng = np.random.default_rng(7)
    tensors = {
        "embed.weight": rng.standard_normal((512, 256), dtype=np.float32),
        "layers.0.attn.q": rng.standard_normal((256, 256), dtype=np.float32),
        "layers.0.bias": rng.standard_normal((256,), dtype=np.float32),
        "lm_head.weight": rng.integers(-1000, 1000, size=(1024, 64), dtype=np.int32),
    }
    save_file(tensors, src / "model.safetensors", metadata={"format": "np"})
    (src / "data").mkdir(exist_ok=True)
    table = pa.table(
        {
            "id": pa.array(range(20_000), type=pa.int64()),
            "text": pa.array([f"row {i} " + "x" * (i % 37) for i in range(20_000)]),
            "score": pa.array(rng.standard_normal(20_000)),
        }
    )
    pq.write_table(table, src / "data" / "train.parquet", row_group_size=4096)


def check(src: pathlib.Path, mnt: pathlib.Path):
    with safe_open(src / "model.safetensors", framework="numpy") as a, safe_open(mnt / "model.safetensors", framework="numpy") as b:
        assert sorted(a.keys()) == sorted(b.keys()), (a.keys(), b.keys())
        assert b.metadata() == {"format": "np"}
        for k in a.keys():
            np.testing.assert_array_equal(a.get_tensor(k), b.get_tensor(k))
        # A slice reads only part of the file.
        np.testing.assert_array_equal(a.get_slice("embed.weight")[10:20], b.get_slice("embed.weight")[10:20])
    want = pq.read_table(src / "data" / "train.parquet")
    got = pq.read_table(mnt / "data" / "train.parquet")
    assert got.equals(want), "table differs"
    pf = pq.ParquetFile(mnt / "data" / "train.parquet")
    assert pf.metadata.num_row_groups == want.num_rows // 4096 + 1
    assert pf.read_row_group(3).equals(pq.ParquetFile(src / "data" / "train.parquet").read_row_group(3))
    print("2 passed, 0 failed")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(pathlib.Path(sys.argv[2]))
    else:
        check(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]))
