"""Quanta: corpus and index, losses, sketched per-token gradients, clustering, caches, exports, CLI, page."""

import io
import json
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from core.analyses.quanta import Corpus, Settings, corpus_from_bytes, load_corpus, run
from core.analyses.quanta.clustering import (
    angular_affinity,
    cosine_similarity,
    rank_frequency_slope,
    relabel_by_size,
    spectral_clusters,
)
from core.analyses.quanta.corpus import build_index
from core.analyses.quanta.export import export_html, tokens_csv
from core.analyses.quanta.gradients import GradientSketch, GradientStore
from core.analyses.quanta.losses import document_losses
from core.errors import UserError
from tests import tiny
from tests.apptest import chart_specs


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Every test gets its own empty quanta cache (the models' conversion cache is shared, read-only)."""
    from core.models.gguf_cache import cache_home as real_home

    converted = real_home() / "converted"
    home = tmp_path / "cache"
    home.mkdir()
    if converted.is_dir():
        (home / "converted").symlink_to(converted, target_is_directory=True)
    monkeypatch.setenv("LAYERSCOPE_HOME", str(home))
    return home


def exact_gradient(handle, sketcher, context, target):
    """The full gradient of one token's loss (plain autograd), as one matrix [out, in (+bias)] per sketched layer."""
    logits = handle.model(input_ids=torch.tensor([context])).logits[0, -1]
    loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([target]))
    modules = handle.weights.linear_modules(sketcher.params)
    params = [p for layer in sketcher.layers for p in ([modules[layer.name].weight]
                                                        + ([modules[layer.name].bias] if layer.has_bias else []))]
    grads = iter(torch.autograd.grad(loss, params))
    matrices = []
    for layer in sketcher.layers:
        weight = next(grads)
        if type(modules[layer.name]).__name__ == "Conv1D":  # GPT-2 stores [in, out]
            weight = weight.T
        matrices.append(torch.cat([weight, next(grads)[:, None]], dim=1) if layer.has_bias else weight)
    return matrices, float(loss)


def count_sketch_of(sketcher, matrices):
    """The CountSketch with the product hash, applied to materialised gradients (the definition)."""
    out = torch.zeros(sketcher.dim, dtype=torch.float64)
    for layer, g in zip(sketcher.layers, matrices):
        in_bucket, in_sign = sketcher.input_hash(layer)
        bucket = (layer.out_bucket[:, None] + in_bucket[None, :]) % sketcher.dim
        sign = layer.out_sign[:, None] * in_sign[None, :]
        out.index_add_(0, bucket.reshape(-1), (g * sign).reshape(-1).double())
    return out


def plain_random_handle(family):
    """A tiny model with the library's default (small) initialisation: near-uniform predictions, so the
    gradient of a token's loss is dominated by what it predicts."""
    from transformers import AutoModelForCausalLM

    from core.models import wrap_model

    tok = tiny.tokenizer("gpt2" if family == "gpt2" else "llama")
    torch.manual_seed(0)
    config = tiny.config(family, len(tok))
    config._attn_implementation = "eager"
    return wrap_model(AutoModelForCausalLM.from_config(config), tok, f"plain-{family}")


def with_corpus(settings, corpus):
    """The settings, run on these documents."""
    return replace(settings, corpus=corpus)


def numbers_and_days(n_docs=6):
    """Two clearly different patterns the tiny tokenizer knows: counting, and the days of the week."""
    numbers = "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15"
    days = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday"
    texts = tuple([numbers] * n_docs + [days] * n_docs)
    return Corpus("planted", texts, ("numbers",) * n_docs + ("days",) * n_docs)


# -- corpus and the canonical index -----------------------------------------------------------------------


def test_shipped_corpus_is_mixed_and_a_few_hundred_kilobytes():
    corpus = load_corpus("mixed")
    assert sum(len(t.encode()) for t in corpus.texts) > 200_000
    assert {"prose", "python", "numbered_list", "dates", "urls", "tables"} <= set(corpus.kinds)
    assert any("Four score and seven years ago" in t for t in corpus.texts)
    assert any("https://" in t for t in corpus.texts) and any("def " in t for t in corpus.texts)


def test_uploads_txt_split_at_blank_lines_and_jsonl_with_errors_named():
    text = "Title\n\n" + "A long paragraph. " * 20 + "\n\n" + "Second paragraph, also long enough. " * 8
    corpus = corpus_from_bytes("notes.txt", text.encode())
    assert len(corpus) == 2 and corpus.texts[0].startswith("Title\n\nA long paragraph.")  # the heading is merged
    jsonl = corpus_from_bytes("data.jsonl", b'{"text": "one document", "kind": "a"}\n\n{"text": "two"}\n')
    assert jsonl.texts == ("one document", "two") and jsonl.kinds == ("a", "text")
    with pytest.raises(UserError, match="line 2 has no \"text\""):
        corpus_from_bytes("bad.jsonl", b'{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(UserError, match="line 1 is not valid JSON"):
        corpus_from_bytes("bad.jsonl", b"not json\n")
    with pytest.raises(UserError, match="not UTF-8"):
        corpus_from_bytes("bad.txt", b"\xff\xfe\x00")
    with pytest.raises(UserError, match="corpus not found"):
        load_corpus("/no/such/file.txt")


def test_index_cuts_documents_and_flags_induction():
    tok = tiny.tokenizer("llama")
    corpus = Corpus("c", ("1 2 3 1 2 3 1 2 3 1 2 3 1 2 3", "Monday Tuesday Wednesday Thursday Friday"), ("a", "b"))
    index = build_index(corpus, tok, max_length=8)
    for i in range(len(index)):  # context + answer is the document's prefix
        d, p = index.document[i], index.position[i]
        assert index.context(i) + [int(index.token_id[i])] == index.ids[d][: p + 1].tolist()
    assert len(index.ids[0]) == 8 and len(index) == sum(len(ids) - 1 for ids in index.ids)
    ids = index.ids[0].tolist()
    trigram, bigram = index.induction_mask(3), index.induction_mask(2)
    for p in range(1, len(ids)):
        earlier_bi = any(tuple(ids[q - 1 : q + 1]) == tuple(ids[p - 1 : p + 1]) for q in range(1, p))
        earlier_tri = any(tuple(ids[q - 2 : q + 1]) == tuple(ids[p - 2 : p + 1]) for q in range(2, p)) if p >= 2 else False
        assert bigram[p - 1] == earlier_bi and trigram[p - 1] == earlier_tri
    assert trigram.sum() >= 1 and (trigram <= bigram).all()


# -- losses and gradients ---------------------------------------------------------------------------------


def test_batched_document_losses_equal_the_models_own_cross_entropy():
    handle = tiny.handle("gemma3")
    docs = [np.array(handle.tokenizer(t)["input_ids"]) for t in ("1 2 3 4 5 6 7", "Monday Tuesday", "def f(x):\n    return x")]
    losses = document_losses(handle, docs)
    for ids, got in zip(docs, losses):
        logits = handle.model(input_ids=torch.tensor([ids.tolist()])).logits[0, :-1]
        want = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3", "gpt_neox"])
def test_sketch_is_the_count_sketch_of_the_exact_per_token_gradient(family):
    """One batched forward/backward with hooks gives, per token, exactly the CountSketch of its full gradient."""
    handle = tiny.handle(family)
    sketcher = GradientSketch(handle, "all", dim=128)
    ids = handle.tokenizer("1 2 3 4 5 6 7 8 9 10 11 12 13")["input_ids"]
    positions = [2, 5, 9, len(ids) - 1]
    sketches, losses = sketcher.sketch([ids[:p] for p in positions], [ids[p] for p in positions])
    for b, p in enumerate(positions):
        matrices, loss = exact_gradient(handle, sketcher, ids[:p], ids[p])
        want = count_sketch_of(sketcher, matrices)
        np.testing.assert_allclose(sketches[b], want.numpy(), rtol=1e-4, atol=1e-5 * float(want.abs().max()))
        assert losses[b] == pytest.approx(loss, rel=1e-5)
    assert sketcher.n_params == sum(m.numel() for m in matrices)
    if family in ("llama", "gemma3"):  # k, v share q's input (one stacked sketch); up shares gate's
        shared = sketcher.shared_input
        assert shared["layers.0.attention.k_proj"] == shared["layers.0.attention.v_proj"] == "layers.0.attention.q_proj"
        assert shared["layers.0.mlp.up_proj"] == "layers.0.mlp.gate_proj" and shared["layers.0.mlp.down_proj"] == "layers.0.mlp.down_proj"


def test_sketch_excludes_embeddings_and_norms_and_subsets_partition_the_parameters():
    handle = tiny.handle("gemma3")
    every, mlp, attention = (GradientSketch(handle, p, 64) for p in ("all", "mlp", "attention"))
    assert every.n_params == mlp.n_params + attention.n_params
    embedding = handle.adapter.embed(handle.model).weight.numel()
    norms = sum(p.numel() for n, p in handle.model.named_parameters() if "norm" in n)
    assert every.n_params == sum(p.numel() for p in handle.model.parameters()) - embedding - norms
    assert not any("norm" in layer.name for layer in every.layers)
    with pytest.raises(UserError, match="unknown parameter subset"):
        GradientSketch(handle, "embeddings", 64)


def test_sketch_preserves_cosine_similarities():
    """The JL property: cosines of 2048-d sketches are within 0.1 of the cosines of the full gradients."""
    import random

    handle = plain_random_handle("llama")
    tok, rng = handle.tokenizer, random.Random(1)
    sketcher = GradientSketch(handle, "all", dim=2048)
    words = "1 2 3 4 5 6 7 8 9 Monday Tuesday Friday Sunday".split()
    contexts = [tok(" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))))["input_ids"] for _ in range(20)]
    answers = [tok(t, add_special_tokens=False)["input_ids"][-1] for t in (" Monday", " 7", " 3", " Sunday")]
    targets = [rng.choice(answers) for _ in contexts]  # shared answers: some gradients are close, some are not
    sketches, _ = sketcher.sketch(contexts, targets)
    full = torch.stack([torch.cat([g.reshape(-1) for g in exact_gradient(handle, sketcher, c, t)[0]])
                        for c, t in zip(contexts, targets)]).double()
    unit = full / full.norm(dim=1, keepdim=True)
    exact = (unit @ unit.T).numpy()
    s = sketches / np.linalg.norm(sketches, axis=1, keepdims=True)
    estimated = s @ s.T
    off = ~np.eye(len(contexts), dtype=bool)
    assert exact[off].std() > 0.1 and exact[off].max() > 0.5  # the cosines vary, so the test can fail
    assert np.abs(estimated - exact)[off].max() < 0.1
    assert np.abs(estimated - exact)[off].mean() < 0.03
    # norms are preserved too (CountSketch is unbiased for squared norms)
    ratio = np.linalg.norm(sketches, axis=1) / full.norm(dim=1).numpy()
    assert np.all(np.abs(ratio - 1) < 0.15)


# -- clustering -----------------------------------------------------------------------------------------------


def test_affinity_relabelling_and_rank_frequency_slope():
    np.testing.assert_allclose(angular_affinity(np.array([1.0, 0.0, -1.0, 0.5])), [1.0, 0.5, 0.0, 2 / 3])
    assert relabel_by_size(np.array([2, 2, 0, 1, 1, 1])).tolist() == [1, 1, 2, 0, 0, 0]
    assert relabel_by_size(np.array([5, 3, 3, 5])).tolist() == [0, 1, 1, 0]  # tie: first seen first
    assert rank_frequency_slope([12, 6, 4, 3]) == pytest.approx(-1.0)
    assert rank_frequency_slope([3, 12, 6, 4]) == pytest.approx(-1.0)  # order does not matter
    assert np.isnan(rank_frequency_slope([7]))


def planted_settings(**kw):
    base = dict(max_length=16, tokens=40, loss_threshold=1000.0, induction="none", n_clusters=2, proj_dim=512, seed=0)
    base.update(kw)
    return Settings(**base)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_planted_groups_with_different_gradients_are_separated(family):
    """Random contexts of numbers always answered by ' Monday', random contexts of days always answered by ' 7'."""
    import random

    handle = plain_random_handle(family)
    tok, rng = handle.tokenizer, random.Random(0)
    days = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
    numbers = [tok(" ".join(str(rng.randint(1, 15)) for _ in range(rng.randint(3, 8))))["input_ids"] for _ in range(12)]
    weekdays = [tok(" ".join(rng.choice(days) for _ in range(rng.randint(2, 5))))["input_ids"] for _ in range(12)]
    monday, seven = (tok(t, add_special_tokens=False)["input_ids"][-1] for t in (" Monday", " 7"))
    sketches, _ = GradientSketch(handle, "all", 512).sketch(numbers + weekdays, [monday] * 12 + [seven] * 12)
    planted = np.repeat([0, 1], 12)
    similarity = cosine_similarity(sketches)
    same = planted[:, None] == planted[None, :]
    assert similarity[same].mean() > similarity[~same].mean() + 0.2
    labels = spectral_clusters(similarity, 2, seed=0)
    assert adjusted_rand_score(planted, labels) == 1.0


def test_planted_patterns_are_separated_by_the_whole_pipeline():
    handle = plain_random_handle("llama")
    texts = tuple(" ".join(["7"] * n) for n in range(6, 14)) + tuple(" ".join(["Monday"] * n) for n in range(6, 14))
    corpus = Corpus("planted", texts, ("sevens",) * 8 + ("mondays",) * 8)
    result = run(handle, with_corpus(planted_settings(tokens=30), corpus))
    assert result.n_tokens == 30 and set(result.tokens["kind"]) == {"sevens", "mondays"}
    assert adjusted_rand_score(result.tokens["kind"], result.labels) == 1.0


def test_same_seed_gives_the_same_clusters_from_scratch_and_from_the_cache(cache_home, monkeypatch, tmp_path):
    handle = tiny.handle("llama")
    settings = planted_settings(n_clusters=4, tokens=30)
    first = run(handle, with_corpus(settings, numbers_and_days()))
    again = run(handle, with_corpus(settings, numbers_and_days()))
    assert first.gradients_computed == 30 and again.gradients_computed == 0 and again.gradients_cached == 30
    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path / "other"))
    fresh = run(handle, with_corpus(settings, numbers_and_days()))
    assert fresh.gradients_computed == 30
    for other in (again, fresh):
        assert other.tokens["token"].tolist() == first.tokens["token"].tolist()
        assert other.labels.tolist() == first.labels.tolist()
    sizes = [c.size for c in first.clusters]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == 30
    reseeded = run(handle, with_corpus(planted_settings(n_clusters=4, tokens=30, seed=1), numbers_and_days()))
    assert reseeded.tokens["token"].tolist() != first.tokens["token"].tolist()


def test_runs_resume_from_the_cache_and_rebuild_a_corrupt_one(cache_home):
    handle = tiny.handle("llama")
    corpus = numbers_and_days()
    settings = planted_settings(tokens=20)
    index = build_index(corpus, handle.tokenizer, settings.max_length)
    full = run(handle, with_corpus(settings, corpus))
    # an interrupted run: only some gradients were cached before it stopped
    for path in (cache_home / "quanta" / "gradients").rglob("*.npz"):
        path.unlink()
    GradientStore(handle, index, settings.params, settings.proj_dim).compute(full.tokens["token"].to_numpy()[:7])
    resumed = run(handle, with_corpus(settings, corpus))
    assert resumed.gradients_cached == 7 and resumed.gradients_computed == 13
    assert resumed.labels.tolist() == full.labels.tolist()
    # corrupt caches are detected, dropped and rebuilt
    for path in (cache_home / "quanta").rglob("*.npz"):
        path.write_bytes(b"not a zip file")
    rebuilt = run(handle, with_corpus(settings, corpus))
    assert rebuilt.gradients_computed == 20 and any("loss cache" in n for n in rebuilt.notes)
    assert rebuilt.labels.tolist() == full.labels.tolist()
    np.testing.assert_allclose(rebuilt.tokens["loss_nats"], full.tokens["loss_nats"], rtol=1e-5)


def test_filters_and_errors_say_what_to_change():
    handle = tiny.handle("llama")
    corpus = numbers_and_days()
    result = run(handle, with_corpus(planted_settings(tokens=1000, induction="trigram", n_clusters=2), corpus))
    # the filter looks within each document: the six identical copies of a pattern do not filter each other
    assert result.n_after_induction <= result.n_below_threshold == result.n_scored
    assert result.n_tokens == result.n_after_induction  # the cap is above the pool
    with pytest.raises(UserError, match="raise the threshold"):
        run(handle, with_corpus(planted_settings(loss_threshold=1e-6), corpus))
    with pytest.raises(UserError, match="fewer clusters"):
        run(handle, with_corpus(planted_settings(tokens=5, n_clusters=5), corpus))
    with pytest.raises(UserError, match="unknown unit"):
        run(handle, with_corpus(planted_settings(unit="hartleys"), corpus))


# -- exports ----------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.links, self.options, self.script, self.external = [], {}, [], "", []
        self._section, self._in_script = None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs["id"]
            self.sections.append(self._section)
        if tag == "a" and attrs.get("rel") in ("prev", "next"):
            self.links[(self._section, attrs["rel"])] = attrs["href"].lstrip("#")
        if tag == "option":
            self.options.append(attrs["value"])
        if tag in ("script", "link", "img") and (attrs.get("src") or attrs.get("href")):
            self.external.append(attrs)
        self._in_script = tag == "script"

    def handle_data(self, data):
        if self._in_script:
            self.script += data


def test_html_export_opens_and_navigates_and_csv_round_trips():
    handle = tiny.handle("llama")
    result = run(handle, with_corpus(planted_settings(n_clusters=3, tokens=24), numbers_and_days()))
    page = _Page()
    page.feed(export_html(result))
    ids = [f"cluster-{c}" for c in range(3)]
    assert page.sections == ids and page.options == ids and not page.external  # self-contained
    seen, here = [], "cluster-0"
    for _ in range(3):  # "next" visits every cluster once and comes back
        seen.append(here)
        here = page.links[(here, "next")]
    assert sorted(seen) == ids and here == "cluster-0"
    assert all(page.links[(page.links[(i, "next")], "prev")] == i for i in ids)
    assert "ArrowRight" in page.script and "ArrowLeft" in page.script and "hashchange" in page.script
    table = pd.read_csv(io.StringIO(tokens_csv(result)), keep_default_na=False)
    assert len(table) == 24 and list(table.columns) == list(result.tokens.columns)
    assert table["cluster"].tolist() == result.labels.tolist()


# -- the real model: CLI and page ---------------------------------------------------------------------------


def test_gemma_gradient_pass_and_loss_pass_agree(gemma):
    """Right padding, soft-capping and the differentiable decode give the same losses as the loss pass."""
    index = build_index(load_corpus("mixed"), gemma.tokenizer, 24)
    docs = [index.ids[d] for d in (0, 100, 300)]
    losses = document_losses(gemma, docs)
    contexts = [ids[:p].tolist() for ids in docs for p in (5, len(ids) - 1)]
    targets = [int(ids[p]) for ids in docs for p in (5, len(ids) - 1)]
    _, grad_losses = GradientSketch(gemma, "mlp", 256).sketch(contexts, targets)
    want = [float(l[p - 1]) for l, ids in zip(losses, docs) for p in (5, len(ids) - 1)]
    np.testing.assert_allclose(grad_losses, want, rtol=2e-3, atol=2e-3)


def test_cli_json_contract_on_gemma(gemma, capsys):
    from core.cli import main

    code = main(["quanta", "--tokens", "10", "--clusters", "3", "--max-length", "24", "--proj-dim", "512", "--documents",
                 "4", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["model", "n_tokens", "n_clusters", "clusters", "rank_frequency_slope"]
    assert out["model"] == "gemma-3-270m" and out["n_tokens"] == 10 and out["n_clusters"] == 3
    assert [c["id"] for c in out["clusters"]] == [0, 1, 2]
    sizes = [c["size"] for c in out["clusters"]]
    assert sum(sizes) == 10 and sizes == sorted(sizes, reverse=True)
    for c in out["clusters"]:
        assert list(c) == ["id", "size", "top_answers", "examples"]
        assert 1 <= len(c["examples"]) <= min(5, c["size"]) and all(list(e) == ["context", "answer"] for e in c["examples"])
        assert c["examples"][0]["answer"] in c["top_answers"] or len(set(c["top_answers"])) == 5
    assert isinstance(out["rank_frequency_slope"], float) and out["rank_frequency_slope"] <= 0
    assert main(["quanta", "--unit", "bits", "--loss-threshold", "-1", "--json"]) == 2
    assert "loss threshold must be positive" in capsys.readouterr().err


def test_page_runs_and_browses_clusters(gemma):
    from streamlit.testing.v1 import AppTest

    # The page on its own (the sidebar's default model): through streamlit_app.py, AppTest starts every run in
    # the old pages-folder mode, ui.shell.require_shell reruns it and the click on "Find quanta" is lost.
    at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "pages" / "quanta.py"), default_timeout=600)
    at.run()
    assert not at.exception and not at.error
    assert at.title[0].value.startswith("🧩 Quanta") and "Find quanta" in at.info[0].value
    number = {n.label: n for n in at.number_input}
    number["Tokens per document (documents are cut there)"].set_value(24)
    number["Tokens to cluster (cap on the sample)"].set_value(8)
    number["Clusters"].set_value(2)
    number["Documents to score (0 = until twice the cap pass the filters)"].set_value(3)
    next(b for b in at.button if b.label == "Find quanta").click().run()
    assert not at.exception and not at.error
    specs = chart_specs(at)
    assert len(specs) == 3 and any("fitted slope" in s for s in specs) and any('"rect"' in s for s in specs)
    clusters = at.dataframe[0].value
    assert len(clusters) == 2 and clusters["size"].sum() == 8
    assert {m.label for m in at.metric} >= {"Clustered", "Rank-frequency slope"}
    assert next(m for m in at.metric if m.label == "Clustered").value == "8"
    picker = next(s for s in at.selectbox if s.label == "Cluster")
    assert picker.value == 0
    next(b for b in at.button if b.label == "Next ▶").click().run()
    assert next(s for s in at.selectbox if s.label == "Cluster").value == 1 and not at.exception
    next(b for b in at.button if b.label == "Next ▶").click().run()
    assert next(s for s in at.selectbox if s.label == "Cluster").value == 0  # wraps around
    labels = [b.proto.label for b in at.get("download_button") if not b.proto.label.startswith("⬇")]  # not the bundle
    # the HTML report and the two tables, then each of the three charts' data and picture (CSV, PNG, SVG)
    assert labels[:3] == ["Download all clusters as HTML", "Download tokens as CSV", "Download clusters as CSV"]
    assert labels[3:] == ["CSV", "PNG", "SVG"] * 3
