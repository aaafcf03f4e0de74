"""Read and rewrite safetensors shards one tensor at a time (no mmap, memory near one tensor).

A merged shard keeps the base shard's names, dtypes and shapes, hence its header and offsets: the
header is copied verbatim and each tensor's bytes are rewritten in place.
"""
import json
import struct
from pathlib import Path

import torch

from common.errors import InputError
from common.io import read_json

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
          "U8": torch.uint8, "BOOL": torch.bool}


def model_shards(model_dir):
    """A model dir's safetensors shard files, in order. Pickle weights are refused."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise InputError("invalid shard index: expected a mapping of tensor names to shard files", index,
                             field="weight_map")
        return sorted({model_dir / f for f in weight_map.values()})
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    if list(model_dir.glob("*.bin")) or list(model_dir.glob("*.pt")):
        raise InputError("only safetensors weights are read (pickle .bin/.pt files can run code); "
                         "re-save the model with save_pretrained(safe_serialization=True)", model_dir)
    raise FileNotFoundError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


class Shard:
    """One safetensors file: its header, and its tensors read on demand."""

    def __init__(self, path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise InputError("truncated safetensors file (no header)", self.path)
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 * 1024**2):
                raise InputError("corrupt or truncated safetensors header", self.path)
            self.raw_header = head + fh.read(n)
        try:
            header = json.loads(self.raw_header[8:])
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("corrupt safetensors header (not JSON)", self.path) from None
        try:
            self.metadata = header.pop("__metadata__", None)
            self.entries = dict(sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]))
            end = max((e["data_offsets"][1] for e in self.entries.values()), default=0)
        except (AttributeError, KeyError, TypeError, IndexError):
            raise InputError("corrupt safetensors header (no data_offsets for each tensor)", self.path) from None
        self.data_start = 8 + n
        if self.data_start + end != size:
            raise InputError(f"truncated or corrupt safetensors file: header needs {self.data_start + end} "
                             f"bytes, file has {size}", self.path)
        for name, entry in self.entries.items():
            if entry["dtype"] not in DTYPES:
                raise InputError(f"tensor {name} has unsupported dtype {entry['dtype']}", self.path)

    def names(self):
        return list(self.entries)

    def shape(self, name):
        return tuple(self.entries[name]["shape"])

    def read(self, name, fh=None):
        entry = self.entries[name]
        start, stop = entry["data_offsets"]
        own = fh is None
        fh = fh or open(self.path, "rb")
        try:
            fh.seek(self.data_start + start)
            data = bytearray(fh.read(stop - start))
        finally:
            if own:
                fh.close()
        dtype = DTYPES[entry["dtype"]]
        if not data:
            return torch.empty(entry["shape"], dtype=dtype)
        return torch.frombuffer(data, dtype=dtype).reshape(entry["shape"])

    def tensors(self):
        """Yield (name, tensor) in file order, one tensor in memory at a time."""
        with open(self.path, "rb") as fh:
            for name in self.entries:
                yield name, self.read(name, fh)

    def rewrite(self, dst, transform):
        """Write a copy of this shard to dst with transform(name, tensor) applied to each tensor;
        dtype and shape must not change (the header is reused as is)."""
        with open(dst, "wb") as out:
            out.write(self.raw_header)
            for name, tensor in self.tensors():
                new = transform(name, tensor)
                if new.dtype != tensor.dtype or new.shape != tensor.shape:
                    raise ValueError(f"{name}: rewrite changed dtype or shape")
                out.seek(self.data_start + self.entries[name]["data_offsets"][0])
                out.write(memoryview(new.contiguous().view(torch.uint8).numpy()) if new.numel() else b"")
