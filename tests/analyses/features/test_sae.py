"""`sae`: a dictionary trained on a tiny random Llama from the shipped corpora, BOS left out, written in Gemma Scope
2's layout, scored on held-out text; the loss weighting folded back exactly; the activation stream's shapes."""

import json

import pytest
import torch

from core.analyses import features, sae
from core.analyses.features.wiring import Wiring
from core.analyses.sae import corpus
from core.analyses.sae.analysis import _Timer, stream, wiring_of
from core.analyses.sae.weighting import Weighting, identity
from core.errors import UserError
from core.features import load_dictionary
from core.models.sites import Site
from tests.analyses.features.conftest import random_dictionary

SMALL = dict(width=64, k=4, tokens=3000, epochs=1, seq_len=32, batch_size=256, layer=2)


def test_windows_mix_corpora_and_begin_with_bos(llama):
    rows = corpus.training_windows(llama, 5000, seq_len=32, seed=0)
    bos = llama.tokenizer.bos_token_id
    assert all(row[0] == bos and bos not in row[1:] and len(row) <= 32 for row in rows)
    assert sum(len(r) - 1 for r in rows) >= 5000
    assert rows != corpus.training_windows(llama, 5000, seq_len=32, seed=1)  # the seed shuffles


def test_the_stream_drops_bos_and_padding_and_stops_at_the_layer(llama):
    rows = corpus.training_windows(llama, 600, seq_len=32, seed=0)
    wiring = Wiring(Site("resid_post", 1), Site("resid_post", 1))
    batches = list(stream(llama, wiring, rows, False, _Timer(), identity(llama.d_model), batch_rows=4))
    assert sum(len(b) for b in batches) == sum(len(r) - 1 for r in rows)
    first = llama.residuals(llama.batch_of(rows[:1], pad="right"))[2, 0, 1:]  # the lens's row 2, BOS dropped
    assert torch.allclose(batches[0][: len(first)], first, atol=1e-5)


def test_folding_the_weighting_changes_nothing_the_dictionary_computes():
    g = torch.Generator().manual_seed(0)
    d = random_dictionary(16, width=40, k=3)
    w = Weighting(torch.randn(16, generator=g), torch.rand(16, generator=g) + 0.2)
    x = torch.randn(50, 16, generator=g) * 3
    folded = w.fold(d, transcoder=False)
    assert torch.equal(folded.encode(x) != 0, d.encode(w.apply(x)) != 0)  # the same TopK choices
    assert torch.allclose(w.apply(folded(x)), d(w.apply(x)), atol=1e-4)
    transcoder = random_dictionary(16, width=40, k=3, site="mlp_in")
    transcoder.kind, transcoder.site_out = "transcoder", "mlp_out"
    assert torch.allclose(w.apply(w.fold(transcoder, transcoder=True)(x)), transcoder(x), atol=1e-4)


@pytest.mark.parametrize("site", ["resid", "transcoder"])
def test_training_writes_gemma_scope_and_reports_the_figures(llama, home, tmp_path, site):
    out = tmp_path / site
    result = sae.run(llama, sae.Settings(site=site, out=str(out), **SMALL))
    report = result.to_json()
    assert {"model", "path", "site", "layer", "width", "k", "tokens", "fvu", "l0", "dead_fraction", "delta_ce_nats",
            "loss_recovered", "seconds"} <= set(report)
    assert report["tokens"] >= 3000 and report["l0"] == pytest.approx(4, abs=0.01)
    assert 0 <= report["dead_fraction"] <= 1 and report["fvu"] > 0 and report["seconds"] > 0
    assert report["loss_recovered"] == pytest.approx(
        (result.scores.ce_zero_nats - result.scores.ce_spliced_nats) / (result.scores.ce_zero_nats - result.scores.ce_clean_nats), abs=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "params.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["hf_hook_point_in"] == ("model.layers.1.output" if site == "resid"
                                          else "model.layers.1.pre_feedforward_layernorm.output")
    d = load_dictionary(out, expect_model="tiny-llama", expect_d_model=64)
    assert (d.kind, d.layer, d.site) == (("sae", 2, "resid") if site == "resid" else ("transcoder", 2, "mlp_in"))
    # written and read back, it encodes and decodes identically; the page reads it at once (cards made)
    x = torch.randn(20, 64)
    assert torch.equal(d.encode(x), load_dictionary(out).encode(x)) and torch.equal(d(x), load_dictionary(out)(x))
    readout = features.run(llama, features.Settings("The capital of France is Paris.", (str(out),)))
    assert readout.layers[0].loaded.wiring == wiring_of(llama, result.settings)
    with pytest.raises(UserError, match="already holds a dictionary"):
        sae.run(llama, sae.Settings(site=site, out=str(out), **SMALL))


@pytest.mark.parametrize("changes, message", [
    (dict(layer=4), "outside the model"), (dict(site="attn"), "unknown site"), (dict(k=100, width=64), "--k"),
    (dict(tokens=10), "--tokens"), (dict(eval_text=("/no/such/file",)), "not found"),
])
def test_bad_training_settings_are_one_line_and_write_nothing(llama, home, tmp_path, changes, message):
    settings = sae.Settings(**{**SMALL, "out": str(tmp_path / "d"), **changes})
    with pytest.raises(UserError, match=message) as error:
        sae.run(llama, settings)
    assert "\n" not in str(error.value) and not (tmp_path / "d").exists()


def test_a_4bit_model_trains_on_dequantized_activations_and_reads_features(tmp_path, home):
    pytest.importorskip("bitsandbytes")
    from core.models import LoadOptions, load_model
    from tests import tiny

    model, tok = tiny.model("llama")
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    handle = load_model(str(tmp_path / "model"), LoadOptions(quantization="4bit", dtype="bfloat16"))
    (tmp_path / "eval.txt").write_text("The river rose after the storm.\nShe bought two apples and a pear.\n")
    result = sae.run(handle, sae.Settings(out=str(tmp_path / "d"), cards=False, eval_text=(str(tmp_path / "eval.txt"),),
                                          **SMALL))
    assert result.scores.fvu == result.scores.fvu and result.scores.delta_ce_nats == result.scores.delta_ce_nats
    d = load_dictionary(tmp_path / "d")
    assert d.W_enc.dtype == torch.float32
    readout = features.run(handle, features.Settings("The capital of France is Paris.", (str(tmp_path / "d"),)))
    assert readout.layers[0].positions[-1] and readout.layers[0].fvu == readout.layers[0].fvu
