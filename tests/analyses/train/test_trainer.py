"""The trainer: learning happens, runs are reproducible, stop + resume equals one run, baselines are right."""

import math
import threading

import pytest
import torch

from core.errors import UserError
from core.analyses.train.background import TrainingRun
from core.analyses.train.corpora import Corpus, load_corpus
from core.models.tinylm import TinyLMConfig
from core.analyses.train.trainer import TrainConfig, Trainer, bigram_loss_nats, tokenize_corpus, val_windows

SHAPE = TinyLMConfig(n_layers=2, n_heads=2, d_model=32, context_length=32)


@pytest.fixture(scope="module")
def synthetic():
    return tokenize_corpus(load_corpus("synthetic"), "char")


def quick(data, steps=20, **overrides) -> Trainer:
    config = dict(steps=steps, batch_size=16, learning_rate=1e-2, warmup_steps=5, eval_every=10, eval_tokens=2048)
    return Trainer(data, SHAPE, TrainConfig(**(config | overrides)))


def test_loss_decreases_on_the_synthetic_corpus(synthetic):
    trainer = quick(synthetic, steps=60, eval_every=30)
    history = trainer.run()
    first, last = history.evals[0], history.evals[-1]
    assert first.step == 0 and last.step == 60
    assert first.val_loss_nats == pytest.approx(math.log(len(synthetic.tokenizer)), abs=0.3)  # untrained: ~uniform
    assert last.val_loss_nats < first.val_loss_nats - 1.5
    assert last.val_loss_nats < history.bigram_val_loss_nats + 0.3  # already about as good as a bigram model
    assert sum(history.train_loss_nats[-10:]) < sum(history.train_loss_nats[:10]) - 10
    assert set(last.skill_accuracy) == {"counting", "addition", "brackets"}
    assert all(0.0 <= acc <= 1.0 for acc in last.skill_accuracy.values())
    assert history.tokens_per_s > 0 and history.train_tokens == 60 * 16 * 32


def test_same_seed_same_loss_curve_and_other_seed_differs(synthetic):
    curve_a = quick(synthetic, seed=3).run().train_loss_nats
    curve_b = quick(synthetic, seed=3).run().train_loss_nats
    curve_c = quick(synthetic, seed=4).run().train_loss_nats
    assert curve_a == curve_b  # bit for bit
    assert curve_a != curve_c


def test_same_seed_same_curve_with_dropout(synthetic):
    shape = TinyLMConfig(n_layers=1, n_heads=2, d_model=32, context_length=32, dropout=0.2)
    config = TrainConfig(steps=8, batch_size=8, eval_every=8, eval_tokens=1024, seed=1)
    curves = [Trainer(synthetic, shape, config).run().train_loss_nats for _ in range(2)]
    assert curves[0] == curves[1]


class StopAfter(threading.Event):
    """A stop signal that turns on once the trainer has taken `steps` steps (deterministic)."""

    def __init__(self, trainer, steps):
        super().__init__()
        self.trainer, self.steps = trainer, steps

    def is_set(self):
        return self.trainer.step >= self.steps


def test_stop_and_resume_gives_the_uninterrupted_curve(synthetic):
    reference = quick(synthetic, steps=24).run().train_loss_nats
    trainer = quick(synthetic, steps=24)
    trainer.run(StopAfter(trainer, 7))
    assert trainer.step == 7 and not trainer.finished
    history = trainer.run()
    assert history.train_loss_nats == reference
    assert [e.step for e in history.evals] == [0, 7, 10, 20, 24]  # stopping scores the model once more


def test_background_run_stops_and_resumes(synthetic):
    reference = quick(synthetic, steps=30).run().train_loss_nats
    run = TrainingRun(quick(synthetic, steps=30)).start()
    run.stop()
    assert run.wait(60)
    stopped_at = run.status().step
    assert stopped_at < 30 and run.can_resume
    run.resume()
    assert run.wait(60)
    status = run.status()
    assert status.step == 30 and status.error is None and not status.running and not run.can_resume
    assert status.history.train_loss_nats == reference
    lm = run.trained()
    assert lm.meta["step"] == 30 and lm.history.train_loss_nats == reference


def test_learning_rate_warms_up_then_follows_a_cosine():
    config = TrainConfig(steps=110, learning_rate=1e-3, warmup_steps=10, min_lr_fraction=0.1)
    assert config.learning_rate_at(0) == pytest.approx(1e-4)
    assert config.learning_rate_at(9) == pytest.approx(1e-3)
    assert config.learning_rate_at(60) == pytest.approx(0.55e-3)  # half way down the cosine
    assert config.learning_rate_at(110) == pytest.approx(1e-4)
    lrs = [config.learning_rate_at(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_bigram_baseline_matches_a_hand_count():
    train = torch.tensor([0, 1, 0, 1, 0, 2])  # after 0: 1 twice, 2 once
    windows = torch.tensor([[0, 1], [0, 2]])
    # add-alpha smoothing over 3 symbols, alpha = 0.1: p(1|0) = 2.1/3.3, p(2|0) = 1.1/3.3
    expected = -(math.log(2.1 / 3.3) + math.log(1.1 / 3.3)) / 2
    assert bigram_loss_nats(train, windows, vocab_size=3, alpha=0.1) == pytest.approx(expected)


def test_val_windows_are_spread_and_capped():
    ids = torch.arange(1001)
    windows = val_windows(ids, context_length=10, max_tokens=50)
    assert windows.shape == (5, 11)
    assert windows[0, 0] == 0 and windows[-1, -1] == 1000  # first and last chunk both used
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(5, 10, dtype=torch.long))


def test_split_is_at_a_line_start_and_holds_out_the_end():
    data = tokenize_corpus(Corpus("lines", "".join(f"line {i}\n" for i in range(100))), "char", val_fraction=0.1)
    assert data.val_text.startswith("line 9")
    assert data.tokenizer.decode(data.val_ids.tolist()) == data.val_text


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(steps=0), "steps"),
        (dict(batch_size=0), "batch size"),
        (dict(learning_rate=0.0), "learning rate"),
    ],
)
def test_bad_training_settings_are_user_errors(settings, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**settings)


def test_context_longer_than_the_corpus_is_a_user_error():
    data = tokenize_corpus(Corpus("short", "a few words, repeated. " * 12), "char")
    with pytest.raises(UserError, match="shorter context"):
        Trainer(data, TinyLMConfig(context_length=64), TrainConfig(steps=1))
