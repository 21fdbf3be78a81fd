"""The door's additions for circuits: value vectors (site ``v``) and norms frozen at every position (pre-norms too)."""

import pytest
import torch

from core.errors import UserError
from core.models.sites import Site
from tests import tiny
from tests.interventions.batches import equal_length_batch

CASES = [("llama", "llama"), ("gemma3", "sentencepiece")]  # grouped-query attention; Gemma 3's four norms a block


def _record(handle, batch):
    sites = [Site(kind, layer) for layer in range(handle.n_layers)
             for kind in ("resid_pre", "resid_mid", "v", "pattern", "z", "attn_out", "mlp_in")]
    return handle.record(batch, sites, norms_at=(1, None))


@pytest.mark.parametrize("family,style", CASES)
def test_heads_mix_value_vectors_by_their_pattern(family, style):
    """z[t, h] = Σ_s pattern[h, t, s] · v[s, kv(h)]: a head's output is the sum of what it reads from each source."""
    handle = tiny.handle(family, style=style)
    batch = equal_length_batch(handle, n=2, length=6)
    seen = _record(handle, batch)
    for layer in range(handle.n_layers):
        v = seen[Site("v", layer)]  # [b, p, kv, hd]
        assert v.shape[-1] == handle.head_dim and handle.n_heads % v.shape[2] == 0
        per_kv = handle.n_heads // v.shape[2]
        v_heads = v.repeat_interleave(per_kv, dim=2)  # [b, p, head, hd]
        mixed = torch.einsum("bhts,bshk->bthk", seen[Site("pattern", layer)], v_heads)
        assert torch.allclose(mixed, seen[Site("z", layer)], atol=1e-4)


@pytest.mark.parametrize("family,style", CASES)
def test_norms_frozen_at_every_position_are_each_positions_norms(family, style):
    handle = tiny.handle(family, style=style)
    batch = equal_length_batch(handle, n=2, length=6)
    seen = _record(handle, batch)
    norms = seen.norms
    assert norms.final.scale.shape == (6, handle.d_model)
    for layer in range(handle.n_layers):
        pre, mid = seen[Site("resid_pre", layer)][1], seen[Site("resid_mid", layer)][1]
        # What transcoders read is the MLP's pre-norm, frozen per position, of the mid residual.
        assert torch.allclose(norms.mlp_pre[layer](mid).float(), seen[Site("mlp_in", layer)][1], atol=1e-4)
        # The values are the value projection of the attention's pre-norm, frozen per position.
        w_v = handle.weights.value_proj(layer)  # [kv, d, hd]
        v = torch.einsum("pd,kdj->pkj", norms.attn_pre[layer](pre).float(), w_v)
        assert torch.allclose(v, seen[Site("v", layer)][1], atol=1e-4)
        # Gemma's post-attention norm, frozen per position, maps the heads' projected outputs onto attn_out.
        projected = torch.einsum("phk,hkd->pd", seen[Site("z", layer)][1], handle.weights.out_proj(layer))
        post = norms.attn_post[layer]
        assert (post is None) == (family == "llama")
        written = post(projected).float() if post is not None else projected
        assert torch.allclose(written, seen[Site("attn_out", layer)][1], atol=1e-4)
    for position in (0, 3, 5):  # the same scales as freezing at that one position
        one = handle.record(batch, [Site("resid_pre", 0)], norms_at=(1, position)).norms
        assert torch.allclose(one.final.scale, norms.final.scale[position], atol=1e-9)
        assert torch.allclose(one.mlp_pre[1].scale, norms.mlp_pre[1].scale[position], atol=1e-9)


def test_a_fused_value_projection_is_refused_in_one_line():
    handle = tiny.handle("gpt2", style="gpt2")
    with pytest.raises(UserError, match="site v"):
        handle.record(equal_length_batch(handle, n=1, length=4), [Site("v", 0)])
