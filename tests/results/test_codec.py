"""The result codec: real Results of several analyses come back equal (JSON contract and every table identical),
every supported type round-trips exactly, and what cannot be stored or safely read says so."""

import dataclasses
import enum
import io
import json
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from core.results import codec
from core.results.keys import settings_key
from tests.results.equal import assert_same
from tests.results.real import results

TESTS = ("core", "tests")  # these tests' own dataclasses may be stored too


@pytest.mark.parametrize("name", ["lens", "lens-sublayer", "attribute", "attribute-gpt2", "translation", "sequences",
                                  "lens-compare"])
def test_real_results_come_back_equal(name):
    analysis, settings, result = results()[name]
    data = codec.dumps(result)
    back = codec.loads(data)
    assert type(back) is type(result) and back is not result
    assert_same(result, back)
    assert json.dumps(back.to_json(), sort_keys=True) == json.dumps(result.to_json(), sort_keys=True)
    frames, again = result.frames(), back.frames()
    assert list(frames) == list(again) and frames
    for table in frames:
        pd.testing.assert_frame_equal(frames[table], again[table], check_exact=True)
        assert list(frames[table].dtypes) == list(again[table].dtypes)
    assert settings_key(analysis, back.settings if hasattr(back, "settings") else settings, "1") == \
        settings_key(analysis, settings, "1")


def test_the_file_is_a_zip_of_json_npy_and_parquet_without_pickle():
    _, _, result = results()["translation"]
    with zipfile.ZipFile(io.BytesIO(codec.dumps(result, meta={"analysis": "translation"}))) as archive:
        names = archive.namelist()
        document = json.loads(archive.read("result.json"))
    assert names[0] == "result.json" and any(n.startswith("arrays/a") and n.endswith(".npy") for n in names)
    assert any(n.startswith("frames/f") and n.endswith(".parquet") for n in names)
    assert document["format"] == "layerscope-result" and document["version"] == 1
    assert document["meta"] == {"analysis": "translation"}
    assert document["root"]["$dataclass"] == "core.analyses.translation.analysis:Result"
    # token sets are dicts of frozensets; WordList (inside the Settings) a dict of tuples
    assert codec.read_meta(io.BytesIO(codec.dumps(result)))["version"] == 1


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


class Level(str, enum.Enum):
    LOW = "low"


@dataclasses.dataclass(frozen=True)
class Inner:
    values: tuple = (1, 2.5, float("nan"))
    colour: Colour = Colour.BLUE
    level: Level = Level.LOW


@dataclasses.dataclass
class Everything:
    inner: Inner
    items: dict
    extra: list = dataclasses.field(default_factory=list)
    later: int = dataclasses.field(init=False, default=7)

    def __post_init__(self):
        raise AssertionError("decoding must not run __init__ or __post_init__")


def _objects(values):
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _everything():
    frame = pd.DataFrame({
        "str": pd.array(["a", None, "ü中"], dtype="str"),
        "object_strings": np.array(["x", "y", None], dtype=object),
        "mixed": np.array([1, "a", None], dtype=object),
        "lists": _objects([[1, 2], [3, 4], []]),
        "nullable": pd.array([1, None, 3], dtype="Int64"),
        "category": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
        "float32": np.array([1.5, np.nan, -np.inf], dtype=np.float32),
        "bool": [True, False, True],
        "time": pd.to_datetime(["2026-01-01 00:00", None, "2026-12-01 10:00"]),
        "uint8": np.array([1, 2, 255], dtype=np.uint8),
    }, index=pd.Index([5, 6, 5], name="k"))
    frame[3] = [1, 2, 3]  # a non-string column label
    frame.columns.name = "columns"
    multi = pd.DataFrame({("a", 1): [1.0, 2.0], ("b", 2): ["u", "v"]},
                         index=pd.MultiIndex.from_tuples([(1, "x"), (2, "y")], names=["n", None]))
    obj = Everything.__new__(Everything)
    for key, value in dict(
        inner=Inner(),
        items={
            "nan": float("nan"), "inf": float("inf"), "-inf": -float("inf"), "big": 2**80, "none": None,
            1: {frozenset({1, 2}), (3, "x")}, "$dollar": "a key that looks like a tag", (1, 2): "tuple key",
            "scalars": [np.float32(1.5), np.float64("nan"), np.int8(-3), np.uint64(2**63), np.bool_(True), np.float16(0.1),
                        np.complex64(1 + 2j), np.datetime64("2026-01-01")],
            "arrays": [np.arange(12, dtype=np.float16).reshape(3, 4), np.zeros((0, 3), dtype=np.int64),
                       np.asfortranarray(np.eye(3)), np.arange(10)[::2], np.array([b"ab", b"c"]), np.array(["ä", "bc"])],
            "objects": np.array([[1, "a"], [None, [2]]], dtype=object),
            "tensors": [torch.arange(6, dtype=torch.bfloat16).reshape(2, 3), torch.tensor([1, 2], dtype=torch.int32)],
            "frame": frame, "multi": multi, "empty": pd.DataFrame(), "series": pd.Series([1.0, np.nan], name=("s", 1)),
            "index": pd.Index(["p", "q"], name="letters"), "path": pathlib.Path("/tmp/x"), "bytes": b"\x00\xff",
            "range": range(2, 10, 3), "complex": 1 - 2j, "set": {"b", "a"},
        },
        extra=[Colour.RED, Level.LOW, (), [], {}],
        later=8,
    ).items():
        object.__setattr__(obj, key, value)
    return obj


def test_every_supported_type_round_trips_exactly():
    obj = _everything()
    back = codec.loads(codec.dumps(obj, allowed=TESTS), allowed=TESTS)
    assert_same(obj, back)
    assert back.inner.colour is Colour.BLUE and back.extra[1] is Level.LOW and back.later == 8
    assert back.items["tensors"][0].dtype == torch.bfloat16
    frame = back.items["frame"]
    assert frame.columns.tolist()[-1] == 3 and frame["mixed"].tolist() == [1, "a", None]
    assert frame["lists"].tolist() == [[1, 2], [3, 4], []] and frame["str"].tolist()[2] == "ü中"


TABLES = {
    "duplicate labels": lambda: pd.DataFrame([[1, 2]], columns=["a", "a"]),
    "a tuple label": lambda: pd.DataFrame({"x": [1]}).set_axis(pd.Index([("a", 1)], tupleize_cols=False), axis=1),
    "multi-level labels": lambda: pd.DataFrame([[1, "x"]], columns=pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["l", None])),
    "float labels": lambda: pd.DataFrame([[1, 2]], columns=[0.5, 1.5]),
    "object string index": lambda: pd.DataFrame({"x": [1, 2]}, index=pd.Index(["a", "b"], dtype=object)),
    "mixed index": lambda: pd.DataFrame({"x": [1, 2]}, index=pd.Index([1, "a"], dtype=object)),
    "mixed multi-index": lambda: pd.DataFrame({"x": [1, 2]}, index=pd.MultiIndex.from_arrays(
        [pd.Index([1, 2]), pd.Index(["a", None], dtype=object)], names=["i", "o"])),
    "index named by a number": lambda: pd.DataFrame({"x": [1, 2]}, index=pd.Index([3, 4], name=7)),
    "stepped range": lambda: pd.DataFrame({"x": [1, 2]}, index=pd.RangeIndex(10, 14, 2, name="r")),
    "no rows": lambda: pd.DataFrame({"x": pd.Series([], dtype="float32"), "s": pd.Series([], dtype=object)}),
    "time zone": lambda: pd.DataFrame({"t": pd.date_range("2026-01-01", periods=2, tz="Europe/Paris")}),
    "NaN among object strings": lambda: pd.DataFrame({"s": np.array(["a", np.nan], dtype=object)}),
    "series, repeated index": lambda: pd.Series([1, 2], index=[1, 1], name="s"),
}


@pytest.mark.parametrize("name", list(TABLES))
def test_tables_keep_labels_index_and_dtypes(name):
    table = TABLES[name]()
    assert_same(table, codec.loads(codec.dumps(table)))


def test_a_value_that_cannot_be_stored_is_named_with_its_place():
    with pytest.raises(codec.CodecError, match=r"Everything\.items\['lock'\]: a _thread.lock"):
        obj = _everything()
        obj.items = {"lock": __import__("threading").Lock()}
        codec.dumps(obj, allowed=TESTS)
    with pytest.raises(codec.CodecError, match="tests.results.test_codec:Inner is not a module-level class under core"):
        codec.dumps([Inner()])  # only core's dataclasses by default

    @dataclasses.dataclass
    class Local:
        x: int = 1

    with pytest.raises(codec.CodecError, match="Local"):
        codec.dumps(Local(), allowed=TESTS)


def _tampered(document_edit):
    data = codec.dumps(Inner(), allowed=TESTS)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    document = json.loads(files["result.json"])
    document_edit(document)
    files["result.json"] = json.dumps(document).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


@pytest.mark.parametrize("name", ["subprocess:Popen", "os:system", "tests_not_a_module_xyz:Thing",
                                  "core.errors:UserError", "core..x:Y", "core.results.codec:json.loads"])
def test_a_tampered_file_cannot_name_a_class_outside_core(name):
    data = _tampered(lambda d: d["root"].update({"$dataclass": name}))
    with pytest.raises(codec.CodecError):
        codec.loads(data, allowed=("core",))
    assert "tests_not_a_module_xyz" not in sys.modules


def test_arrays_are_read_without_pickle():
    data = _tampered(lambda d: d.update(root={"$array": "a0"}))
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["arrays/a0.npy"] = buffer.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    with pytest.raises(ValueError, match="allow_pickle"):
        codec.loads(out.getvalue())


def test_other_versions_and_damaged_files_are_refused():
    with pytest.raises(codec.UnsupportedVersion, match="version 0"):
        codec.loads(_tampered(lambda d: d.update(version=0)), allowed=TESTS)
    with pytest.raises(codec.CodecError, match="not a layerscope result"):
        codec.loads(_tampered(lambda d: d.update(format="something else")), allowed=TESTS)
    data = codec.dumps(results()["lens"][2])
    with pytest.raises(zipfile.BadZipFile):
        codec.loads(data[: len(data) // 2])


def test_settings_key_is_stable_across_processes_and_says_every_field():
    from core.results.store import Entry  # a light core dataclass (no torch) for the child process

    fields = dict(id="x", analysis="a", page="", model="m", fingerprint="f", settings={"s": ["b", "a"]},
                  settings_key="", version="1", created=0.0, last_opened=0.0, seconds=1.5, size_bytes=0,
                  pinned=False, title="t", note="", link="", cli="", format=1)
    key = settings_key("lens", Entry(**fields), "1")
    code = ("from core.results.store import Entry; from core.results.keys import settings_key; "
            f"print(settings_key('lens', Entry(**{fields!r}), '1'))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": "123"})
    assert child.stdout.strip() == key and len(key) == 32
    assert settings_key("lens", Entry(**fields), "2") != key and settings_key("attribute", Entry(**fields), "1") != key
    for field, other in (("seconds", 1.25), ("settings", {"s": ("b", "a")}), ("title", "T"), ("pinned", 0)):
        assert settings_key("lens", Entry(**{**fields, field: other}), "1") != key, field
