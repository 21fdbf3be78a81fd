"""History: the runs of the server, newest first, with their link and command line; filter, pin with a title and
a note, bundle, delete."""

from __future__ import annotations

import io
import zipfile

from tests.apptest import widget
from tests.ui.conftest import ok, open_app


def test_history_lists_pins_bundles_and_deletes_runs(tiny_folder):
    model = {"model": str(tiny_folder)}
    first = ok(open_app(model))  # the lens's default run
    first.text_area[0].input("one two three")
    ok(widget(first.button, "Run the lens").click().run())
    ok(widget(first.button, "Attribute").click().run())

    history = ok(open_app(model, page="pages/history.py"))
    runs = history.dataframe[0].value
    assert list(runs["analysis"]) == ["attribute", "lens", "lens"]  # newest first
    assert set(runs["page"]) == {"Logit lens"} and set(runs["model"]) == {str(tiny_folder)}
    assert runs["settings"].iloc[1] == "prompt=one two three"  # what the page's link said, in one line
    assert runs["settings"].iloc[2] == "the page's defaults"
    assert runs["command line"].iloc[1].startswith(f"python -m core lens --model {tiny_folder}")
    assert "prompt=one+two+three" in runs["open"].iloc[1] and "run=logit_lens" in runs["open"].iloc[1].replace("%2C", ",")
    assert (runs["seconds"] >= 0).all() and "when" in runs

    from ui.stored import result_store, stored_bundle

    store = result_store()
    newest = store.list()[0]
    names = zipfile.ZipFile(io.BytesIO(stored_bundle(newest.id))).namelist()
    assert {"settings.json", "result.json", "command.txt", "tables/components.csv"} <= set(names)

    widget(history.text_input, "Title").input("Paris at layer 14")
    widget(history.text_area, "Note").input("look at L12H2")
    ok(widget(history.button, "Pin").click().run())
    entry = store.entry(newest.id)
    assert entry.pinned and entry.title == "Paris at layer 14" and entry.note == "look at L12H2"
    assert history.dataframe[0].value["pinned"].iloc[0] == "📌 Paris at layer 14"

    widget(history.checkbox, "Pinned only").check()
    ok(history.run())
    assert len(history.dataframe[0].value) == 1
    widget(history.checkbox, "Pinned only").uncheck()
    ok(history.run())

    ok(widget(history.button, "Delete").click().run())
    assert [e.analysis for e in store.list()] == ["lens", "lens"]
    assert len(history.dataframe[0].value) == 2
