"""A training script's view of a bucket mount: save a safetensors checkpoint and append
to a log through the mount, then check them with the real huggingface_hub client
(list_bucket_tree, download_bucket_files) and load the checkpoint back.

usage: bucket_writes.py MOUNTPOINT BUCKET   (HF_ENDPOINT and HF_TOKEN set)
"""
import os
import pathlib
import sys
import tempfile

import numpy as np
from huggingface_hub import HfApi
from safetensors.numpy import load_file, save_file

mnt, bucket = pathlib.Path(sys.argv[1]), sys.argv[2]
api = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=os.environ["HF_TOKEN"])

rng = np.random.default_rng(7)
tensors = {"w": rng.standard_normal((256, 512), dtype=np.float32), "b": np.arange(512, dtype=np.int64)}
(mnt / "run1").mkdir()
save_file(tensors, str(mnt / "run1" / "step-10.safetensors"))  # committed when it is closed
for step in range(5):
    with open(mnt / "run1" / "train.log", "a") as log:
        log.write(f"step {step} loss {1.0 / (step + 1):.3f}\n")

files = {f.path: f for f in api.list_bucket_tree(bucket, recursive=True)}
local = (mnt / "run1" / "step-10.safetensors").read_bytes()
assert files["run1/step-10.safetensors"].size == len(local), files
assert "run1/train.log" in files, files
with tempfile.TemporaryDirectory() as d:
    out = pathlib.Path(d)
    api.download_bucket_files(bucket, [("run1/step-10.safetensors", out / "c.safetensors"), ("run1/train.log", out / "log")])
    assert (out / "c.safetensors").read_bytes() == local
    back = load_file(str(out / "c.safetensors"))
    assert all(np.array_equal(back[k], v) for k, v in tensors.items())
    assert (out / "log").read_text().splitlines()[-1] == "step 4 loss 0.200", (out / "log").read_text()
print("bucket writes: ok")
