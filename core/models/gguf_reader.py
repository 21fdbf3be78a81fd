"""A GGUF file's metadata and tensor table, parsed in well under a second.

``gguf.GGUFReader`` wraps every element of every metadata array in its own numpy view, which
takes 13-18 s for Gemma 3's 262,144-token vocabulary on a 2-core CPU. This reader walks the
header with ``struct`` over a memory map, keeps strings as ``str`` and number arrays as one
numpy array each, and leaves the tensor data mapped until a tensor is asked for, where
``gguf.quants.dequantize`` turns its blocks into float32.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

# metadata value types (gguf.GGUFValueType): fixed-size scalars, then 8 = string, 9 = array
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}
_STRING, _ARRAY = 8, 9


class UnsupportedGGUF(ValueError):
    """A well-formed file using something this reader does not know (a newer version, a new type)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order: the file lists the fastest-moving dimension first
    quant: GGMLQuantizationType
    offset: int  # from the start of the file
    nbytes: int


@dataclass
class GGUFFile:
    """Metadata (``{key: value}``; arrays of numbers as numpy arrays) and tensors of one file."""

    path: Path
    metadata: dict
    tensors: dict[str, TensorInfo]
    _map: mmap.mmap

    @property
    def architecture(self) -> str:
        return self.metadata["general.architecture"]

    def arch(self, key: str, default=None):
        """An architecture-scoped value, e.g. ``arch("block_count")`` -> ``llama.block_count``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as stored: ``uint8[*shape[:-1], bytes per row]``, a view of the map."""
        info = self.tensors[name]
        block_elements, block_bytes = GGML_QUANT_SIZES[info.quant]
        rows = info.shape[:-1]
        data = np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        return data.reshape(*rows, info.shape[-1] // block_elements * block_bytes)

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # a tensor still views the map; it is unmapped once that is freed
            pass

    def float32(self, name: str) -> np.ndarray:
        """The tensor de-quantized to ``float32[*shape]``."""
        info = self.tensors[name]
        values = dequantize(self.raw(name), info.quant)
        return values.astype(np.float32, copy=False).reshape(info.shape)


def read_gguf(path: Path) -> GGUFFile:
    """Parse ``path``.

    Raises ``ValueError`` saying what is wrong for an empty, truncated or foreign file, and its
    subclass ``UnsupportedGGUF`` for a sound file beyond this reader (which transformers may read).
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 24:
        raise ValueError(f"the file is {size} bytes long, too short for a GGUF header")
    with open(path, "rb") as handle:
        blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if blob[:4] != b"GGUF":
        raise ValueError("it does not start with the GGUF magic bytes")
    version, tensor_count, kv_count = struct.unpack_from("<IQQ", blob, 4)
    if version not in (2, 3):
        raise UnsupportedGGUF(f"GGUF version {version} is not one this reader knows (2, 3)")
    try:
        metadata, pos = _read_metadata(blob, 24, kv_count)
        table, pos = _read_tensor_table(blob, pos, tensor_count)
    except (struct.error, IndexError):
        raise ValueError(f"its header is cut short ({size:,} bytes) or damaged") from None
    except UnicodeDecodeError:
        raise ValueError("its header holds text that is not UTF-8: the file is damaged") from None
    if "general.architecture" not in metadata:
        raise ValueError("its metadata names no general.architecture")
    alignment = int(metadata.get("general.alignment", 32))
    data_start = (pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, shape, quant_id, offset in table:
        try:
            quant = GGMLQuantizationType(quant_id)
            block_elements, block_bytes = GGML_QUANT_SIZES[quant]
        except (ValueError, KeyError):
            raise UnsupportedGGUF(
                f"tensor {name} has ggml type {quant_id}, which gguf {_gguf_version()} cannot read") from None
        elements = int(np.prod(shape, dtype=np.int64))
        nbytes = elements // block_elements * block_bytes
        if data_start + offset + nbytes > size:
            raise ValueError(f"it is truncated: tensor {name} ends past the end of the file ({size} bytes)")
        tensors[name] = TensorInfo(name, shape, quant, data_start + offset, nbytes)
    return GGUFFile(path, metadata, tensors, blob)


def _read_metadata(blob, pos: int, count: int) -> tuple[dict, int]:
    metadata = {}
    for _ in range(count):
        key, pos = _read_string(blob, pos)
        (value_type,) = struct.unpack_from("<I", blob, pos)
        metadata[key], pos = _read_value(blob, pos + 4, value_type)
    return metadata, pos


def _read_value(blob, pos: int, value_type: int):
    if value_type in _SCALAR:
        (value,) = struct.unpack_from("<" + _SCALAR[value_type], blob, pos)
        return value, pos + struct.calcsize(_SCALAR[value_type])
    if value_type == _STRING:
        return _read_string(blob, pos)
    if value_type == _ARRAY:
        element_type, length = struct.unpack_from("<IQ", blob, pos)
        pos += 12
        if element_type in _NUMPY:  # scores, token types: one copy of the whole array
            dtype = np.dtype(_NUMPY[element_type]).newbyteorder("<")
            values = np.frombuffer(blob, dtype=dtype, count=length, offset=pos).copy()
            return values, pos + length * dtype.itemsize
        values = []
        for _ in range(length):  # tokens, merges: walked one by one, they differ in length
            value, pos = _read_value(blob, pos, element_type)
            values.append(value)
        return values, pos
    raise UnsupportedGGUF(f"unknown metadata value type {value_type}")


def _read_string(blob, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", blob, pos)
    pos += 8
    if pos + length > len(blob):
        raise IndexError("a string runs past the end of the file")
    return blob[pos : pos + length].decode("utf-8"), pos + length


def _read_tensor_table(blob, pos: int, count: int) -> tuple[list, int]:
    table = []
    for _ in range(count):
        name, pos = _read_string(blob, pos)
        (n_dims,) = struct.unpack_from("<I", blob, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", blob, pos + 4)
        quant_id, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        table.append((name, tuple(int(d) for d in reversed(dims)), quant_id, offset))
    return table, pos


def _gguf_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("gguf")
