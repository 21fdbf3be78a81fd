"""The training analysis: Settings → run(None, settings) → Result (the CLI contract, frames, save and load)."""

from dataclasses import replace

import pytest

from core.analyses import train
from core.analyses.train.corpora import Corpus
from core.models.tinylm import TinyLMConfig
from core.analyses.train.trainer import TrainConfig
from core.errors import UserError

SETTINGS = train.Settings(
    corpus="synthetic",
    shape=TinyLMConfig(n_layers=1, n_heads=2, d_model=32, context_length=32),
    training=TrainConfig(steps=6, batch_size=8, eval_every=5, eval_tokens=1024, seed=2),
)


@pytest.fixture(scope="module")
def reported():
    """The result of a 6-step run, and what it told its progress callback."""
    seen = []
    return train.run(None, SETTINGS, progress=lambda fraction, message: seen.append((fraction, message))), seen


@pytest.fixture
def result(reported):
    return reported[0]


def test_run_reports_each_evaluation_and_returns_the_cli_contract(reported):
    result, seen = reported
    assert [round(f, 3) for f, _ in seen] == [0.0, 0.833, 1.0]  # steps 0, 5 and the last
    assert seen[-1][1].startswith("step 6/6: validation loss")
    out = result.to_json()
    assert list(out) == ["steps", "tokens_per_s", "train_loss", "val_loss", "bigram_val_loss", "checkpoint"]
    assert out["steps"] == 6 and len(out["train_loss"]) == 6 and out["checkpoint"] is None
    assert out["val_loss"] == round(result.history.evals[-1].val_loss_nats, 5) < out["train_loss"][0]
    assert result.settings == SETTINGS and result.total_steps == 6


def test_frames_are_the_history_as_tables(result):
    frames = result.frames()
    loss, evaluations = frames["loss"], frames["evaluations"]
    assert list(loss["split"].value_counts().sort_index()) == [6, 3]  # 6 train steps, 3 evaluations
    assert evaluations["step"].tolist() == [0, 5, 6]
    assert evaluations["val_loss_nats"].tolist() == [round(e.val_loss_nats, 4) for e in result.history.evals]
    assert {"skill: counting", "skill: addition", "skill: brackets"} <= set(evaluations.columns)
    assert len(frames["skills"]) == 9 and set(frames["skills"].columns) == {"step", "skill", "accuracy"}


def test_save_then_load_gives_the_same_model_and_history(result, layerscope_home):
    path = result.save()
    assert path == layerscope_home / "checkpoints" / "synthetic-char-1x32-seed2" and result.checkpoint == path
    assert result.to_json()["checkpoint"] == str(path)
    loaded = train.Result.load(path)
    assert loaded.history.train_loss_nats == result.history.train_loss_nats and loaded.steps == 6
    assert loaded.settings is None
    state = result.trained.model.state_dict()
    assert all((loaded.trained.model.state_dict()[k] == v).all() for k, v in state.items())


def test_the_text_itself_trains_like_its_file(result, tmp_path):
    (tmp_path / "synthetic.txt").write_text(train.Settings(corpus="synthetic").text().text, encoding="utf-8")
    for corpus in (str(tmp_path / "synthetic.txt"), Corpus("synthetic", train.Settings(corpus="synthetic").text().text)):
        again = train.run(None, replace(SETTINGS, corpus=corpus))
        assert again.history.train_loss_nats == result.history.train_loss_nats


def test_bad_settings_and_a_handle_are_refused():
    with pytest.raises(UserError, match="unknown tokenizer 'words'"):
        replace(SETTINGS, tokenizer="words").validate()
    with pytest.raises(UserError, match="at least 260"):
        replace(SETTINGS, tokenizer="bpe", bpe_vocab=100).validate()
    replace(SETTINGS, bpe_vocab=100).validate()  # ignored by the char tokenizer
    with pytest.raises(TypeError, match="from scratch"):
        train.run(object(), SETTINGS)
