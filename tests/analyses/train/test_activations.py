"""Attention patterns and the residual PCA of a TinyLM, read through its ModelHandle like any other model."""

import pytest
import torch

from core.analyses.train.activations import attention_frame, residual_pca
from core.models.tinylm import TinyLM, TinyLMConfig
from core.analyses.train.tokenization import char_tokenizer, encode
from core.errors import UserError
from core.models.handle import Batch
from core.models.loading import wrap_model

TEXT = "count: 1 2 3 4 5 6 7 8 9\nadd: 2+3=5\nbrackets: ( [ | ] )\n"


@pytest.fixture(scope="module")
def handle():
    torch.manual_seed(0)
    tokenizer = char_tokenizer(TEXT)
    model = TinyLM(TinyLMConfig(vocab_size=len(tokenizer), n_layers=2, n_heads=2, d_model=16, context_length=16))
    return wrap_model(model, tokenizer, "tiny-tinylm")


def test_attention_frame_is_the_models_own_pattern(handle):
    prompt = "count: 1 2 3"
    frame = attention_frame(handle, prompt, layer=1)
    ids = encode(handle.tokenizer, prompt)
    pattern = handle.model.trace(torch.tensor([ids])).patterns[1][0]  # [head, query, key]
    assert len(frame) == 2 * len(ids) * (len(ids) + 1) // 2  # every head, every key <= query
    want = pattern.numpy()[frame["head"], frame["query_pos"], frame["key_pos"]]
    assert frame["weight"].to_numpy() == pytest.approx(want, abs=1e-6)
    assert frame.groupby(["head", "query_pos"])["weight"].sum().to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert set(frame["layer"]) == {1} and frame["query_token"].iloc[0] == "0:c"
    assert not any(block.attn.eager for block in handle.model.blocks)  # switched back to the fused kernel


def test_long_prompts_keep_their_last_context_tokens_and_bad_layers_are_user_errors(handle):
    frame = attention_frame(handle, TEXT, layer=0)
    assert frame["query_pos"].max() == 15  # context 16
    assert frame["query_token"].iloc[-1].endswith(":⏎")
    with pytest.raises(UserError, match="layer 2 does not exist"):
        attention_frame(handle, "count", layer=2)


def test_residual_pca_reads_the_residual_after_each_block(handle):
    ids = encode(handle.tokenizer, TEXT)
    for layer in (0, 2):
        pca = residual_pca(handle, TEXT, layer)
        assert len(pca.points) == len(ids) - 1 and pca.points["next_token"].iloc[0] == "o"
        assert 0 < pca.explained_variance_ratio[1] <= pca.explained_variance_ratio[0] < 1
    # the first chunk's residual after block 2 is what the model's own trace keeps
    first = torch.tensor([ids[:16]])
    residuals = handle.residuals(Batch(first, torch.ones_like(first), [16]))
    torch.testing.assert_close(residuals[2, 0], handle.model.trace(first).residuals[2][0])
    with pytest.raises(UserError, match="between 0"):
        residual_pca(handle, TEXT, 3)
