"""A small, dependency-free (torch only) reader and writer for safetensors.

The format (https://github.com/huggingface/safetensors):

    8 bytes     N, the header length, unsigned 64-bit little-endian
    N bytes     a UTF-8 JSON object:
                  {"<name>": {"dtype": "F32", "shape": [2, 3],
                              "data_offsets": [begin, end]},
                   ...,
                   "__metadata__": {"<key>": "<string value>", ...}}
                padded at the end with spaces so that 8 + N is a multiple of 8
    the rest    the byte buffer; a tensor's bytes are buffer[begin:end],
                little-endian, row-major (C order), with no gaps between
                tensors and nothing after the last one

A scalar has shape [] and one element.  This module is used by the Hotstage
end-to-end reference (gpt2_reference.py); it does not import the
`safetensors` package, so it works with a bare Debian PyTorch.

    tensors, metadata = load(path)          # dict name -> torch.Tensor, dict
    save(path, tensors, metadata=None)      # tensors: dict name -> Tensor
"""

import json
import math
import struct
import sys

import torch

# safetensors dtype name -> (torch dtype, bytes per element)
DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_NAME_OF = {dt: name for name, (dt, _) in DTYPES.items()}

# The official implementation refuses headers above 100 MB.
MAX_HEADER = 100_000_000


class SafetensorsError(ValueError):
    pass


def _require_little_endian():
    if sys.byteorder != "little":
        raise SafetensorsError("safetensors_io supports little-endian hosts only")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise SafetensorsError(f"duplicate key {k!r} in the safetensors header")
        out[k] = v
    return out


def loads(blob, where="<bytes>"):
    """Parses safetensors bytes; returns (dict name -> tensor, metadata)."""
    _require_little_endian()
    if len(blob) < 8:
        raise SafetensorsError(f"{where}: too short for a safetensors file ({len(blob)} bytes)")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or 8 + n > len(blob):
        raise SafetensorsError(f"{where}: header length {n} does not fit in a file of {len(blob)} bytes")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{where}: the header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise SafetensorsError(f"{where}: __metadata__ is not an object")
    buf = memoryview(blob)[8 + n:]
    tensors = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        dtype_name, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype_name not in DTYPES:
            raise SafetensorsError(f"{where}: tensor {name!r}: unsupported dtype {dtype_name!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise SafetensorsError(f"{where}: tensor {name!r}: bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= len(buf)):
            raise SafetensorsError(f"{where}: tensor {name!r}: bad data_offsets {offs!r} for a buffer of {len(buf)} bytes")
        dtype, size = DTYPES[dtype_name]
        count = math.prod(shape)
        if offs[1] - offs[0] != count * size:
            raise SafetensorsError(
                f"{where}: tensor {name!r}: {offs[1] - offs[0]} bytes for {dtype_name}{shape} (needs {count * size})")
        if count == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            # bytearray: a private, writable copy (frombuffer shares memory).
            raw = bytearray(buf[offs[0]:offs[1]])
            t = torch.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
        tensors[name] = t
        spans.append((offs[0], offs[1], name))
    # The buffer must be covered exactly: no gaps, no overlaps, no trailing bytes.
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise SafetensorsError(f"{where}: tensor {name!r} starts at byte {b}, expected {pos} (gap or overlap)")
        pos = e
    if pos != len(buf):
        raise SafetensorsError(f"{where}: {len(buf) - pos} bytes after the last tensor")
    return tensors, metadata


def load(path):
    """Reads a .safetensors file; returns (dict name -> tensor, metadata)."""
    with open(path, "rb") as f:
        return loads(f.read(), where=str(path))


def dumps(tensors, metadata=None):
    """Serializes a dict name -> tensor (names written in sorted order)."""
    _require_little_endian()
    header = {}
    chunks = []
    pos = 0
    for name in sorted(tensors):
        if name == "__metadata__":
            raise SafetensorsError("'__metadata__' cannot be a tensor name")
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise SafetensorsError(f"tensor {name!r} is a {type(t).__name__}, not a torch.Tensor")
        t = t.detach().cpu().contiguous()
        if t.dtype not in _NAME_OF:
            raise SafetensorsError(f"tensor {name!r}: unsupported dtype {t.dtype}")
        if t.numel() == 0:
            data = b""
        elif t.dtype == torch.bool:
            data = t.to(torch.uint8).numpy().tobytes()
        elif t.dtype == torch.bfloat16:
            data = t.view(torch.int16).numpy().tobytes()  # numpy has no bfloat16
        else:
            data = t.numpy().tobytes()
        header[name] = {"dtype": _NAME_OF[t.dtype], "shape": list(t.shape),
                        "data_offsets": [pos, pos + len(data)]}
        chunks.append(data)
        pos += len(data)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SafetensorsError(f"metadata must map strings to strings; got {k!r}: {type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-(8 + len(text))) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(path, tensors, metadata=None):
    """Writes a dict name -> tensor to a .safetensors file."""
    blob = dumps(tensors, metadata)
    with open(path, "wb") as f:
        f.write(blob)
