"""``handle.tail_variants``: the last positions run again per copy over cached keys and values give what whole-prompt
passes give, for left-padded prompts of different lengths (longer than Gemma 3's sliding window here)."""

import pytest
import torch

from core.errors import UserError
from core.interventions.tail import _whole
from core.models.sites import Edit, Site

PROMPTS = ["The capital of France is Paris. The capital of", "one two three four five six seven eight nine ten one two"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("tail", [1, 2])
def test_cached_tail_equals_whole_passes(handle, tail):
    batch = handle.encode(PROMPTS)
    width = batch.input_ids.shape[1]
    assert min(batch.lengths) > 8 and batch.lengths[0] != batch.lengths[1]  # past the sliding window; left padding
    values = torch.randn(6, handle.d_model, generator=torch.Generator().manual_seed(0))
    edits = [Edit(Site("resid_pre", 1), "replace", values[:2], cells=((0, 3), (width - tail, width - tail))),
             Edit(Site("resid_post", handle.n_layers - 1), "add", values[2:4], cells=((1, 5), (width - 1, width - 1))),
             Edit(Site("mlp", 0), "scale", 0.5, rows=(2,), positions=(width - 1,))]
    cached = handle.tail_variants(batch, 3, edits, tail=tail)
    whole = _whole(handle, batch, 3, edits)
    assert cached.shape == (6, handle.d_model)
    torch.testing.assert_close(cached, whole, atol=2e-5, rtol=1e-5)
    untouched = handle.tail_variants(batch, 1, [], tail=tail)
    torch.testing.assert_close(untouched, handle.run_with_edits(batch, []).final[:, -1], atol=2e-5, rtol=1e-5)
    assert not torch.allclose(cached[3], untouched[1], atol=1e-3)  # the edits bite


def test_an_edit_before_the_tail_is_refused(handle):
    batch = handle.encode(PROMPTS)
    edit = Edit(Site("resid_pre", 0), "zero", positions=(batch.input_ids.shape[1] - 3,))
    with pytest.raises(UserError, match="before the last 2 position"):
        handle.tail_variants(batch, 2, [edit], tail=2)
