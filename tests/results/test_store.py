"""The result store: put/find/get/list/pin, the size bound by last opening, history off, damaged files, an index
of an older version, many threads and processes at once, and a writer killed mid-write (SIGKILL)."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

from core.results import store as store_module
from core.results.keys import settings_key
from core.results.store import CorruptResult, ResultStore, UnknownResult
from tests.results.equal import assert_same
from tests.results.real import results


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path))
    monkeypatch.delenv("LAYERSCOPE_HISTORY", raising=False)
    monkeypatch.delenv("LAYERSCOPE_RESULTS_MB", raising=False)
    return tmp_path


def payload(seed: int, kb: int = 16) -> dict:
    """A light result: an array of about ``kb`` KB and a table."""
    rng = np.random.default_rng(seed)
    return {"seed": seed, "values": rng.standard_normal(kb * 128),
            "table": pd.DataFrame({"token": [f"t{seed}", "b"], "p": [0.5, float("nan")]})}


def test_put_find_get_list_pin_delete(home):
    store = ResultStore()
    analysis, settings, result = results()["lens"]
    id = store.put(analysis, settings, "tiny-llama;float32", result, 1.25, page="logit_lens", link="?prompt=x")
    assert (home / "results" / "files" / f"{id}.lsr").is_file() and (home / "results" / "index.sqlite").is_file()
    key = settings_key(analysis, settings, "1")
    assert store.find(analysis, key, "tiny-llama;float32", "1") == id
    assert store.find(analysis, key, "another model", "1") is None and store.find(analysis, key, "tiny-llama;float32", "2") is None
    assert_same(store.get(id), result)
    entry = store.entry(id)
    assert (entry.analysis, entry.page, entry.model, entry.link, entry.version) == ("lens", "logit_lens", "tiny-llama", "?prompt=x", "1")
    assert entry.settings["track"] == [" Paris", "capital"] and entry.seconds == 1.25 and entry.size_bytes > 1000
    assert entry.cli.startswith("python -m core lens --model tiny-llama --prompt 'The capital of France is' --top-k 3")
    _, attribute_settings, attribution = results()["attribute"]
    other = store.put("attribute", attribute_settings, "fp", attribution, 0.5)
    assert [e.id for e in store.list()] == [other, id]  # newest first
    assert [e.id for e in store.list(page="logit_lens")] == [other, id] and store.list(analysis="lens")[0].id == id
    assert store.list(model="nobody") == []
    store.pin(id, title="Paris at layer 2", note="for the meeting")
    entry = store.entry(id)
    assert entry.pinned and entry.title == "Paris at layer 2" and entry.note == "for the meeting"
    assert [e.id for e in store.list(pinned=True)] == [id]
    store.unpin(id)
    assert not store.entry(id).pinned and store.entry(id).title == "Paris at layer 2"
    assert store.delete(id) and not store.delete(id)
    assert not (home / "results" / "files" / f"{id}.lsr").exists() and store.find(analysis, key, "tiny-llama;float32", "1") is None
    for call in (lambda: store.get("nope"), lambda: store.pin("nope"), lambda: store.touch("nope")):
        with pytest.raises(UnknownResult, match="no stored result 'nope'"):
            call()


def test_bound_drops_the_least_recently_opened_unpinned_results(home, monkeypatch):
    store = ResultStore()
    ids = [store.put("x", {"i": i}, "fp", payload(i), 0.1) for i in range(3)]
    size = store.entry(ids[0]).size_bytes
    monkeypatch.setenv("LAYERSCOPE_RESULTS_MB", str(3.5 * size / 2**20))  # room for three
    store.pin(ids[0])  # oldest, pinned: stays
    time.sleep(0.01)
    store.get(ids[1])  # opened: now the most recently opened of the unpinned
    ids.append(store.put("x", {"i": 3}, "fp", payload(3), 0.1))
    assert {e.id for e in store.list()} == {ids[0], ids[1], ids[3]}  # ids[2]: least recently opened
    assert not (store.files / f"{ids[2]}.lsr").exists() and store.size_bytes() <= 3.5 * size
    monkeypatch.setenv("LAYERSCOPE_RESULTS_MB", "0")
    ids.append(store.put("x", {"i": 4}, "fp", payload(4), 0.1))
    assert {e.id for e in store.list()} == {ids[0], ids[4]}  # the pinned one and the newest stay


def test_history_off_stores_and_finds_nothing(home, monkeypatch):
    store = ResultStore()
    id = store.put("x", {"a": 1}, "fp", payload(0), 0.1)
    monkeypatch.setenv("LAYERSCOPE_HISTORY", "off")
    assert store.put("x", {"a": 2}, "fp", payload(1), 0.1) is None
    assert store.find("x", settings_key("x", {"a": 1}, "1"), "fp", "1") is None
    assert [e.id for e in store.list()] == [id]  # what was stored can still be read
    monkeypatch.setenv("LAYERSCOPE_HISTORY", "on")
    assert store.find("x", settings_key("x", {"a": 1}, "1"), "fp", "1") == id


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing"])
def test_a_damaged_file_raises_corrupt_result_and_its_entry_goes(home, damage):
    store = ResultStore()
    id = store.put("x", {"a": 1}, "fp", payload(0), 0.1)
    path = store.files / f"{id}.lsr"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 200])
    elif damage == "garbage":
        path.write_bytes(data[:100] + bytes(reversed(data[100:])))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(CorruptResult, match=f"stored result {id} cannot be read") as caught:
        store.get(id)
    assert caught.value.removed and store.list() == [] and not path.exists()
    assert store.find("x", settings_key("x", {"a": 1}, "1"), "fp", "1") is None


def test_an_index_of_an_older_version_is_upgraded_and_its_rows_ignored(home):
    folder = home / "results"
    (folder / "files").mkdir(parents=True)
    old = sqlite3.connect(folder / "index.sqlite")
    old.execute("CREATE TABLE results (id TEXT PRIMARY KEY, analysis TEXT, settings TEXT, created REAL, path TEXT)")
    old.execute("INSERT INTO results VALUES ('old1', 'lens', '{\"prompt\": \"x\"}', 1.0, 'pickles/old1.pkl')")
    old.commit()
    old.close()
    store = ResultStore()
    assert store.list() == []  # the old row is not readable by this version: left out, not fatal
    with pytest.raises(CorruptResult, match="format 0") as caught:
        store.get("old1")
    assert not caught.value.removed and store.entry("old1").settings == {"prompt": "x"}
    id = store.put("x", {"a": 1}, "fp", payload(0), 0.1)  # the upgraded index takes new rows
    assert [e.id for e in store.list()] == [id]
    # a file of another format version in a current row: refused, left alone
    from core.results import codec

    path = store.files / f"{id}.lsr"
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["result.json"] = files["result.json"].replace(b'"version": 1', b'"version": 9', 1)
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    with pytest.raises(CorruptResult, match="format version 9") as caught:
        store.get(id)
    assert not caught.value.removed and path.exists() and codec.READABLE == (1,)


def test_an_unreadable_index_is_set_aside(home):
    (home / "results").mkdir()
    (home / "results" / "index.sqlite").write_bytes(b"this is not a database" * 100)
    store = ResultStore()
    id = store.put("x", {"a": 1}, "fp", payload(0), 0.1)
    assert [e.id for e in store.list()] == [id]
    assert any(p.name.startswith("index.sqlite.unreadable-") for p in (home / "results").iterdir())


def test_cleanup_removes_what_a_crash_leaves(home):
    store = ResultStore()
    keep = store.put("x", {"a": 1}, "fp", payload(0), 0.1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan, temp_dead, temp_live = "abcdef123456.lsr", f".tmp-{dead.stdout.strip()}-aaaa", f".tmp-{os.getpid()}-bbbb"
    for name in (orphan, temp_dead, temp_live):
        (store.files / name).write_bytes(b"partial")
    with sqlite3.connect(store.index) as db:  # a row whose file went (by hand)
        db.execute("INSERT INTO results (id, format, file) VALUES ('gone', 1, 'gone.lsr')")
    assert store.cleanup() == {"orphans": 1, "temporary": 1, "rows": 1}
    assert sorted(p.name for p in store.files.iterdir()) == sorted([f"{keep}.lsr", temp_live])  # a live writer's stays


def test_threads_and_processes_write_at_once(home):
    store = ResultStore()
    errors, ids = [], []

    def writer(t):
        try:
            for i in range(5):
                ids.append(store.put("x", {"t": t, "i": i}, "fp", payload(10 * t + i, kb=64), 0.1))
                store.list()
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    code = textwrap.dedent("""
        import sys, numpy as np
        from core.results.store import ResultStore
        store = ResultStore()
        for i in range(5):
            store.put("x", {"process": sys.argv[1], "i": i}, "fp", {"v": np.full(8192, i)}, 0.1)
    """)
    children = [subprocess.Popen([sys.executable, "-c", code, str(p)]) for p in range(2)]
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [c.wait(120) for c in children] == [0, 0] and not errors
    entries = store.list()
    assert len(entries) == 30 and set(ids) <= {e.id for e in entries}
    for entry in entries:
        store.get(entry.id)
    assert len(list(store.files.iterdir())) == 30


CHILD = textwrap.dedent("""
    import numpy as np, pandas as pd, sys
    from core.results.store import ResultStore
    store = ResultStore()
    rng = np.random.default_rng(int(sys.argv[1]))
    for i in range(10**6):
        n = int(rng.integers(1, 400_000))  # up to 3 MB: the kill lands inside writes too
        store.put("crash", {"i": i}, "fp", {"v": rng.standard_normal(n), "t": pd.DataFrame({"i": [i]})}, 0.1)
        print(i, flush=True)
""")


def test_a_writer_killed_mid_write_leaves_a_store_that_opens_lists_and_reads(home):
    store_module._cleaned.clear()
    env = {**os.environ, "LAYERSCOPE_RESULTS_MB": "12"}  # small: evictions (deletes) run between writes too
    rng = np.random.default_rng(0)
    killed_after, left = [], {"orphans": 0, "temporary": 0, "rows": 0}  # what each kill left, before cleanup
    for round in range(5):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(round)], env=env, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline()  # it has written one
        time.sleep(float(rng.uniform(0.05, 0.6)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_after.append(child.stdout.read().count("\n") + 1)
        files = {p.name for p in (home / "results" / "files").iterdir()}
        with sqlite3.connect(home / "results" / "index.sqlite") as db:
            rows = {file for (file,) in db.execute("SELECT file FROM results")}
        left["temporary"] += sum(name.startswith(".tmp-") for name in files)
        left["orphans"] += len({name for name in files if not name.startswith(".tmp-")} - rows)
        left["rows"] += len(rows - files)
        store_module._cleaned.clear()  # as a new process would: the next store cleans up
        store = ResultStore()
        entries = store.list()
        assert entries and len(list(store.files.iterdir())) == len(entries)
        for entry in entries:
            assert store.get(entry.id)["t"]["i"].tolist() == [entry.settings["i"]]
    assert left["rows"] == 0  # never a row without its file
    print(f"killed after {killed_after} writes; left by the kills, then cleaned up: {left}")
