"""Checkpoints: reload to identical logits, atomic replacement, the default location, clear errors."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from core.errors import UserError
from core.analyses.train.checkpoint import (
    TrainedLM,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from core.analyses.train.corpora import load_corpus
from core.models.tinylm import TinyLMConfig
from core.analyses.train.trainer import TrainConfig, Trainer, tokenize_corpus


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def trained():
    data = tokenize_corpus(load_corpus("synthetic"), "bpe", bpe_vocab_size=300)
    shape = TinyLMConfig(n_layers=2, n_heads=2, d_model=32, context_length=24, positional="sinusoidal")
    trainer = Trainer(data, shape, TrainConfig(steps=6, batch_size=8, eval_every=6, eval_tokens=512))
    trainer.run()
    return trainer


def test_reload_gives_identical_logits(trained, tmp_path):
    path = save_checkpoint(tmp_path / "ck", trained.model, trained.data.tokenizer, trained.metadata())
    model, tokenizer, meta = load_checkpoint(path)
    assert same_weights(model, trained.model)
    assert model.lm_head.weight is model.tok_emb.weight  # still tied after loading
    ids = tokenizer(["count: 4 5 6", "add: 2+2="], padding=True, return_tensors="pt")
    trained.model.eval()
    with torch.no_grad():
        expected = trained.model(ids["input_ids"], attention_mask=ids["attention_mask"])
        assert torch.equal(model(ids["input_ids"], attention_mask=ids["attention_mask"]), expected)
    assert meta["config"] == trained.model.config.to_dict()
    assert meta["step"] == 6 and meta["corpus"] == "synthetic" and meta["tokenizer"] == "bpe"
    assert tokenizer.padding_side == "left" and tokenizer.model_max_length == 24


def test_layout_is_readable_by_generic_code(trained, tmp_path):
    path = save_checkpoint(tmp_path / "ck", trained.model, trained.data.tokenizer, trained.metadata())
    assert {"tinylm.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    assert json.loads((path / "tinylm.json").read_text())["format"] == "layerscope-tinylm/1"
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.decode(tokenizer("brackets: ( |")["input_ids"]) == "brackets: ( |"


def test_saving_again_replaces_atomically(trained, tmp_path):
    target = tmp_path / "ck"
    save_checkpoint(target, trained.model, trained.data.tokenizer, {"note": "first"})
    save_checkpoint(target, trained.model, trained.data.tokenizer, {"note": "second"})
    assert load_checkpoint(target)[2]["note"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no staging or retired folders left


def test_failed_save_leaves_the_old_checkpoint_untouched(trained, tmp_path):
    target = tmp_path / "ck"
    save_checkpoint(target, trained.model, trained.data.tokenizer, {"note": "good"})
    with pytest.raises(TypeError):
        save_checkpoint(target, trained.model, trained.data.tokenizer, {"note": object()})  # not JSON
    assert load_checkpoint(target)[2]["note"] == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_names_go_under_layerscope_home(trained, layerscope_home):
    lm = TrainedLM(trained.model, trained.data.tokenizer, trained.metadata())
    path = lm.save(lm.name)
    assert path == layerscope_home / "checkpoints" / "synthetic-bpe-2x32-seed0"
    assert list_checkpoints() == [path]
    again = TrainedLM.load("synthetic-bpe-2x32-seed0")
    assert again.history.train_loss_nats == trained.history.train_loss_nats
    assert again.total_steps == 6


def test_bad_names_and_non_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="may only use"):
        checkpoint_path("my model!")
    with pytest.raises(UserError, match="not a TinyLM checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "tinylm.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot load"):
        load_checkpoint(tmp_path)
