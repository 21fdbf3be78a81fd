"""Results as files without pickle: a typed JSON tree, with arrays as ``.npy`` and tables as Parquet, in one zip.

``dump(result, file)`` writes any analysis ``Result`` (a tree of dataclasses, Settings, lists, tuples, sets,
dicts with any hashable keys, numpy arrays and scalars, pandas DataFrames and Series, torch tensors, enums,
None, floats with NaN and ±inf, paths, bytes) and ``load(file)`` gives back an equal object. The zip holds

- ``result.json``: ``{"format": "layerscope-result", "version": 1, "meta": {…}, "root": tree}``, where a
  JSON object with one ``"$tag"`` key is a typed value (``{"$tuple": […]}``, ``{"$array": "a0"}``,
  ``{"$dataclass": "core.analyses.lens.analysis:Result", "fields": {…}}``) and any other object is a dict
  with string keys;
- ``arrays/a<i>.npy``: every array, written and read with ``allow_pickle=False``;
- ``frames/f<i>.parquet``: every table (dtypes, row index and column order kept; column labels, which
  Parquet wants as strings, are kept in the tree, and object columns holding anything but strings are
  kept there too).

A dataclass or enum is named by module and qualname and rebuilt only if its module is under ``core`` (so a
tampered file cannot make ``load`` import anything else), without running its ``__init__``.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import importlib
import io
import json
import math
import pathlib
import re
import sys
import zipfile
from typing import IO, Any

FORMAT = "layerscope-result"
VERSION = 1
READABLE = (1,)  # file versions this code reads
ALLOWED = ("core",)  # packages whose dataclasses and enums a file may name
_DOCUMENT = "result.json"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class CodecError(ValueError):
    """A value that cannot be stored (named with where it sits in the result), or a file that cannot be read."""


class UnsupportedVersion(CodecError):
    """A result file of a format version this code does not read (written by an older or newer layerscope)."""


def dump(obj: Any, file: str | pathlib.Path | IO[bytes], meta: dict | None = None, allowed: tuple[str, ...] = ALLOWED) -> None:
    """Write ``obj`` (and ``meta``, plain JSON saying what it is) to ``file`` as one zip."""
    root, arrays, frames = tree(obj, allowed)
    document = {"format": FORMAT, "version": VERSION, "meta": meta or {}, "root": root}
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:  # arrays barely compress
        archive.writestr(zipfile.ZipInfo(_DOCUMENT), json.dumps(document, ensure_ascii=False, allow_nan=False),
                         compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
        if arrays:
            import numpy as np
        for name, array in arrays.items():
            with archive.open(f"arrays/{name}.npy", "w", force_zip64=True) as out:
                np.lib.format.write_array(out, array, allow_pickle=False)
        for name, data in frames.items():
            archive.writestr(f"frames/{name}.parquet", data)


def tree(obj: Any, allowed: tuple[str, ...] = ALLOWED) -> tuple[Any, dict, dict]:
    """(JSON tree, arrays by name, Parquet bytes by name) of ``obj``: what ``dump`` writes."""
    encoder = _Encoder(allowed)
    root = encoder.value(obj, type(obj).__name__)
    return root, encoder.arrays, encoder.frames


def dumps(obj: Any, meta: dict | None = None, allowed: tuple[str, ...] = ALLOWED) -> bytes:
    buffer = io.BytesIO()
    dump(obj, buffer, meta, allowed)
    return buffer.getvalue()


def load(file: str | pathlib.Path | IO[bytes], allowed: tuple[str, ...] = ALLOWED) -> Any:
    """The object ``dump`` wrote. A damaged or foreign file raises ``CodecError`` (or zipfile's ``BadZipFile``)."""
    with zipfile.ZipFile(file) as archive:
        document = _document(archive)
        return _Decoder(archive, allowed).value(document["root"])


def loads(data: bytes, allowed: tuple[str, ...] = ALLOWED) -> Any:
    return load(io.BytesIO(data), allowed)


def read_meta(file: str | pathlib.Path | IO[bytes]) -> dict:
    """The header of a file (format, version, meta) without decoding its result."""
    with zipfile.ZipFile(file) as archive:
        document = _document(archive)
        return {key: document[key] for key in ("format", "version", "meta")}


def _document(archive: zipfile.ZipFile) -> dict:
    try:
        document = json.loads(archive.read(_DOCUMENT))
    except KeyError:
        raise CodecError(f"not a layerscope result: no {_DOCUMENT}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CodecError("not a layerscope result: unknown format")
    if document.get("version") not in READABLE:
        raise UnsupportedVersion(f"a layerscope result of format version {document.get('version')}, which this "
                                 f"version does not read (it reads {', '.join(map(str, READABLE))})")
    return document


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _under(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in allowed)


# -- writing ------------------------------------------------------------------------------------------------


class _Encoder:
    def __init__(self, allowed: tuple[str, ...]):
        self.allowed = allowed
        self.arrays: dict[str, Any] = {}
        self.frames: dict[str, bytes] = {}

    def value(self, obj: Any, path: str) -> Any:
        if obj is None or type(obj) in (bool, str, int):  # exact types: a str or int enum stays an enum
            return obj
        if type(obj) is float:
            return obj if math.isfinite(obj) else {"$float": repr(obj)}  # 'nan', 'inf', '-inf'
        if type(obj) is list:
            return [self.value(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        if type(obj) is tuple:
            return {"$tuple": [self.value(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
        if type(obj) in (set, frozenset):
            items = [self.value(v, f"{path}{{…}}") for v in obj]
            items.sort(key=lambda v: json.dumps(v, sort_keys=True))  # the same set gives the same file
            return {"$set" if type(obj) is set else "$frozenset": items}
        if type(obj) is dict:
            if all(type(k) is str and not k.startswith("$") for k in obj):
                return {k: self.value(v, f"{path}[{k!r}]") for k, v in obj.items()}
            return {"$dict": [[self.value(k, f"{path} key"), self.value(v, f"{path}[{k!r}]")] for k, v in obj.items()]}
        if isinstance(obj, enum.Enum):
            return {"$enum": self._class(type(obj), path), "name": obj.name}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {"$dataclass": self._class(type(obj), path),
                    "fields": {f.name: self.value(getattr(obj, f.name), f"{path}.{f.name}")
                               for f in dataclasses.fields(obj)}}
        if isinstance(obj, complex):
            return {"$complex": [self.value(obj.real, path), self.value(obj.imag, path)]}
        if isinstance(obj, (bytes, bytearray)):
            return {"$bytes": base64.b64encode(bytes(obj)).decode("ascii")}
        if isinstance(obj, range):
            return {"$range": [obj.start, obj.stop, obj.step]}
        if isinstance(obj, pathlib.PurePath):
            return {"$path": str(obj)}
        numpy = sys.modules.get("numpy")  # none of these types can exist unless their module was imported
        if numpy is not None and isinstance(obj, (numpy.ndarray, numpy.generic)):
            return self._numpy(obj, path, numpy)
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(obj, (pandas.DataFrame, pandas.Series, pandas.Index)):
            return self._pandas(obj, path, pandas)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            tensor = obj.detach().cpu()
            exact = tensor if tensor.dtype not in (torch.bfloat16,) else tensor.float()  # numpy has no bfloat16
            return {"$tensor": self._array(exact.numpy(), path), "dtype": str(tensor.dtype).removeprefix("torch.")}
        raise CodecError(f"cannot store {path}: a {type(obj).__module__}.{type(obj).__qualname__} (results are "
                         f"stored as dataclasses under {', '.join(self.allowed)}, lists, tuples, dicts, numbers, "
                         "strings, numpy arrays and pandas tables)")

    def _class(self, cls: type, path: str) -> str:
        if not _under(cls.__module__, self.allowed) or "<locals>" in cls.__qualname__:
            raise CodecError(f"cannot store {path}: {class_name(cls)} is not a module-level class under "
                             f"{', '.join(self.allowed)}, so it could not be rebuilt safely")
        return class_name(cls)

    def _array(self, array, path: str) -> str:
        if type(array).__name__ != "ndarray":
            raise CodecError(f"cannot store {path}: an array subclass {class_name(type(array))}")
        name = f"a{len(self.arrays)}"
        self.arrays[name] = array
        return name

    def _numpy(self, obj, path: str, numpy) -> Any:
        if isinstance(obj, numpy.generic):
            if obj.dtype.kind in "biuf" and obj.dtype.itemsize <= 8:  # .item() is exact for these
                return {"$scalar": obj.dtype.str, "value": self.value(obj.item(), path)}
            return {"$scalar0d": self._array(numpy.asarray(obj), path)}
        if obj.dtype.hasobject:  # object arrays hold Python values: stored in the tree, element by element
            return {"$objects": [self.value(v, f"{path}[{i}]") for i, v in enumerate(obj.ravel(order="C"))],
                    "shape": list(obj.shape)}
        return {"$array": self._array(obj, path)}

    def _pandas(self, obj, path: str, pandas) -> Any:
        if isinstance(obj, pandas.Index):
            return {"$index": self._frame(pandas.DataFrame(index=obj), path)}
        if isinstance(obj, pandas.Series):
            return {"$series": self._frame(obj.to_frame("values"), path), "name": self.value(obj.name, f"{path}.name")}
        return {"$frame": self._frame(obj, path)}

    def _frame(self, frame, path: str) -> dict:
        """Parquet of the columns (named by position) and of a row index of typed values; in the tree the
        column labels, a range or object row index, and object columns holding anything but strings."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = {}  # position -> column stored in the Parquet file
        in_tree = {}  # position -> [value, …]
        for i in range(frame.shape[1]):
            column = frame.iloc[:, i]
            if column.dtype == object and not all(v is None or type(v) is str for v in column):
                in_tree[str(i)] = self.value(column.tolist(), f"{path} column {frame.columns[i]!r}")
            else:
                columns[str(i)] = column
        import pandas as pd

        index = frame.index
        table = pd.DataFrame({key: column.array for key, column in columns.items()}, index=index)
        plain = type(index).__name__ == "RangeIndex"
        # A row index of numbers, strings, times … goes in the Parquet file; one of Python objects in the tree.
        in_file = not plain and all(index.get_level_values(i).dtype != object for i in range(index.nlevels))
        if in_file:
            table = table.set_axis(index.set_names([f"index{level}" for level in range(index.nlevels)]), axis=0)
        else:
            table = table.reset_index(drop=True)
        buffer = io.BytesIO()
        try:
            pq.write_table(pa.Table.from_pandas(table, preserve_index=in_file), buffer)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise CodecError(f"cannot store the table {path}: {err}") from err
        name = f"f{len(self.frames)}"
        self.frames[name] = buffer.getvalue()
        return {
            "file": name,
            "columns": self._labels(frame.columns, f"{path} columns"),
            "index": ({"names": self.value(list(index.names), f"{path} index names")} if in_file
                      else {"labels": self._labels(index, f"{path} index")}),
            "objects": in_tree,
        }

    def _labels(self, index, path: str) -> dict:
        """An index in the tree (column labels; a row index of objects): a range, levels, or values and dtype."""
        if type(index).__name__ == "RangeIndex":
            return {"range": [index.start, index.stop, index.step], "name": self.value(index.name, path)}
        if index.nlevels > 1:
            return {"levels": [self._labels(index.get_level_values(i), path) for i in range(index.nlevels)]}
        return {"values": self.value(index.tolist(), path), "dtype": str(index.dtype), "name": self.value(index.name, path)}


# -- reading ------------------------------------------------------------------------------------------------


class _Decoder:
    def __init__(self, archive: zipfile.ZipFile, allowed: tuple[str, ...]):
        self.archive = archive
        self.allowed = allowed

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if not isinstance(node, dict):
            return node
        tag = next((key for key in node if key.startswith("$")), None)  # plain dicts have no "$" keys
        if tag is None:
            return {k: self.value(v) for k, v in node.items()}
        body = node[tag]
        if tag == "$float":
            return float(body)
        if tag == "$tuple":
            return tuple(self.value(v) for v in body)
        if tag in ("$set", "$frozenset"):
            return (set if tag == "$set" else frozenset)(self.value(v) for v in body)
        if tag == "$dict":
            return {self.value(k): self.value(v) for k, v in body}
        if tag == "$enum":
            return getattr(self._class(body, enum.Enum), node["name"])
        if tag == "$dataclass":
            return self._dataclass(body, node["fields"])
        if tag == "$complex":
            return complex(*(self.value(v) for v in body))
        if tag == "$bytes":
            return base64.b64decode(body)
        if tag == "$range":
            return range(*body)
        if tag == "$path":
            return pathlib.Path(body)
        if tag == "$scalar":
            import numpy as np

            return np.dtype(body).type(self.value(node["value"]))
        if tag == "$scalar0d":
            return self._array(body)[()]
        if tag == "$array":
            return self._array(body)
        if tag == "$objects":
            import numpy as np

            return _objects([self.value(v) for v in body]).reshape(node["shape"])
        if tag == "$tensor":
            import torch

            dtype = getattr(torch, str(node["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise CodecError(f"bad tensor dtype {node['dtype']!r} in the file")
            return torch.from_numpy(self._array(body)).to(dtype)
        if tag in ("$frame", "$series", "$index"):
            frame = self._frame(body)
            if tag == "$index":
                return frame.index
            return frame if tag == "$frame" else frame.iloc[:, 0].rename(self.value(node["name"]))
        raise CodecError(f"unknown tag {tag!r} in the file")

    def _class(self, name: str, base: type | None = None) -> type:
        module, _, qualname = str(name).partition(":")
        if not _MODULE.fullmatch(module) or not _under(module, self.allowed) or not qualname:
            raise CodecError(f"the file names the class {name!r}, which is not under {', '.join(self.allowed)}")
        try:
            cls = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError) as err:
            raise CodecError(f"the file names the class {name!r}, which this version does not have") from err
        ok = isinstance(cls, type) and (issubclass(cls, base) if base else dataclasses.is_dataclass(cls))
        if not ok:
            raise CodecError(f"the file names {name!r}, which is not a {'dataclass' if base is None else base.__name__}")
        return cls

    def _dataclass(self, name: str, fields: dict) -> Any:
        cls = self._class(name)
        known = {f.name for f in dataclasses.fields(cls)}
        if set(fields) != known:
            raise CodecError(f"{name} has fields {sorted(known)} in this version, the file {sorted(fields)}")
        obj = cls.__new__(cls)  # not __init__/__post_init__: the stored state is restored as it was
        for key, node in fields.items():
            object.__setattr__(obj, key, self.value(node))
        return obj

    def _array(self, name: str):
        import numpy as np

        if not re.fullmatch(r"a\d+", str(name)):
            raise CodecError(f"bad array name {name!r} in the file")
        with self.archive.open(f"arrays/{name}.npy") as f:
            return np.lib.format.read_array(f, allow_pickle=False)

    def _frame(self, body: dict):
        import pandas as pd
        import pyarrow.parquet as pq

        if not re.fullmatch(r"f\d+", str(body["file"])):
            raise CodecError(f"bad table name {body['file']!r} in the file")
        table = pq.read_table(io.BytesIO(self.archive.read(f"frames/{body['file']}.parquet"))).to_pandas()
        index = body["index"]
        if "labels" in index:
            table.index = self._labels(index["labels"])
        else:
            table.index = table.index.set_names(self.value(index["names"]))
        objects = {k: _objects(self.value(v)) for k, v in body["objects"].items()}
        labels = self._labels(body["columns"])
        keys = [str(i) for i in range(len(labels))]
        frame = pd.DataFrame({k: objects[k] if k in objects else table[k].array for k in keys}, index=table.index)
        frame.columns = labels
        return frame

    def _labels(self, body: dict):
        import pandas as pd

        if "range" in body:
            return pd.RangeIndex(*body["range"], name=self.value(body["name"]))
        if "levels" in body:
            return pd.MultiIndex.from_arrays([self._labels(level) for level in body["levels"]])
        return pd.Index(self.value(body["values"]), dtype=body["dtype"], name=self.value(body["name"]), tupleize_cols=False)


def _objects(values: list):
    """A 1-d object array of ``values`` (element by element: numpy would turn equal-length lists into rows)."""
    import numpy as np

    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out
