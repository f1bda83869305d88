"""Writes a tiny demo model (config + safetensors) and dataset (JSON lines), stdlib only.

Usage: make_demo_repo.py MODEL_DIR DATASET_DIR
"""

import json
import pathlib
import struct
import sys


def safetensors(tensors):
    """Serializes {name: (shape, [floats])} as F32 safetensors."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        data = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


model, dataset = (pathlib.Path(p) for p in sys.argv[1:3])
model.mkdir(parents=True, exist_ok=True)
(model / "config.json").write_text(json.dumps({"model_type": "demo", "hidden_size": 4}, indent=2) + "\n")
(model / "README.md").write_text("# tiny-model\n\nA demo model served by hf-hub-emulator.\n")
(model / "model.safetensors").write_bytes(
    safetensors({"embed.weight": ([4, 4], [float(i) for i in range(16)]), "lm_head.bias": ([4], [0.5, -0.5, 1.5, -1.5])})
)
(dataset / "data").mkdir(parents=True, exist_ok=True)
rows = [{"id": i, "text": f"example {i}", "label": i % 2} for i in range(100)]
(dataset / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
(dataset / "README.md").write_text("# tiny-dataset\n\n100 rows.\n")
