"""The quanta protocol: Settings (a corpus by name or the documents themselves) → run → Result.frames()."""

import json
import re
from dataclasses import replace

import numpy as np
import pytest

from core.analyses import quanta
from core.analyses.quanta import Corpus
from core.analyses.quanta.export import samples_html
from tests import tiny

DOCUMENTS = Corpus("planted", ("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15",) * 4 + ("<i>&</i> Monday Tuesday Wednesday",) * 4,
                   ("numbers",) * 4 + ("days",) * 4)
SETTINGS = quanta.Settings(corpus=DOCUMENTS, max_length=16, tokens=20, loss_threshold=1000.0, induction="none",
                           n_clusters=2, proj_dim=256)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # a quanta cache of its own
        patch.setenv("LAYERSCOPE_HOME", str(tmp_path_factory.mktemp("home")))
        return quanta.run(tiny.handle("llama"), SETTINGS)


def test_settings_holding_documents_are_hashable_and_say_what_ran(result):
    assert hash(SETTINGS) == hash(replace(SETTINGS)) and SETTINGS != replace(SETTINGS, corpus="mixed")
    assert result.settings is SETTINGS and result.corpus_name == "planted" and result.n_documents == 8
    assert json.loads(json.dumps(result.to_json()))["n_tokens"] == 20


def test_frames_hold_every_table_the_page_shows(result):
    frames = result.frames()
    assert list(frames) == ["tokens", "clusters", "losses", "similarity"]
    assert frames["tokens"] is result.tokens and frames["clusters"]["size"].sum() == 20
    losses = frames["losses"]
    assert len(losses) == result.n_scored and np.allclose(losses["loss_bits"] * np.log(2), losses["loss_nats"])
    similarity = frames["similarity"]
    assert len(similarity) == 20 * 20 and similarity.query("row == col")["similarity"].min() == pytest.approx(1.0)


def test_the_page_samples_are_escaped(result):
    cluster = next(c for c in result.clusters if "days" in dict(c.kinds))
    html = samples_html(result, cluster, 30)
    assert html.startswith("<style>\n.sample {") and html.count('<div class="sample">') == min(30, cluster.size)
    text = re.sub(r"</?(style|div|span|mark)\b[^>]*>", "", html)  # the markup the template writes
    assert "&lt;" in text and "<" not in text  # the documents' own "<" is escaped
