"""A dictionary wired to a loaded model: which handle ``Site`` it reads and writes, its activations, splicing.

One mapping between the two numberings (``model_site``). ``core.features`` counts layers as the lens does:
the residual at layer ℓ is the stream after block ℓ (ℓ = 0: the embeddings) and a sub-layer site at layer ℓ
belongs to block ℓ (blocks 1..L). The handle's ``Site`` counts blocks from 0. So

    resid ℓ      -> Site("resid_post", ℓ − 1)   (ℓ = 0: Site("resid_pre", 0), the embeddings)
    mlp_in ℓ     -> Site("mlp_in", ℓ − 1)       (a transcoder's input)
    mlp_out ℓ    -> Site("mlp_out", ℓ − 1)      (an MLP SAE's input, a transcoder's output)
    attn_out ℓ   -> Site("attn_out", ℓ − 1)
    attn_z ℓ     -> Site("z", ℓ − 1), heads flattened to [.., n_heads·head_dim]

e.g. Gemma Scope's ``resid_post/layer_12`` (``model.layers.12.output``) is our resid 13 = Site("resid_post", 12).

BOS positions are left out of every figure (FVU, L0, training) and are never spliced: a Gemma BOS residual is
hundreds of times larger than the others, and the model reads it as an attention sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from core.errors import UserError
from core.features import Dictionary
from core.models.handle import Batch, ModelHandle
from core.models.sites import Edit, Site


def layer_range(site: str, n_layers: int) -> range:
    """The layers a site has in a model of ``n_layers`` blocks (lens numbering)."""
    return range(0, n_layers + 1) if site == "resid" else range(1, n_layers + 1)


def model_site(site: str, layer: int, n_layers: int) -> Site:
    """The handle's ``Site`` for ``core.features``' (site, layer); ``UserError`` for a layer the model lacks."""
    valid = layer_range(site, n_layers)
    if layer is None or layer not in valid:
        raise UserError(f"{site} layer {layer} is outside the model: it has {site} layers {valid.start}..{valid.stop - 1} "
                        f"(the lens's numbering: resid ℓ is the residual after block ℓ)")
    if site == "resid":
        return Site("resid_pre", 0) if layer == 0 else Site("resid_post", layer - 1)
    kinds = {"mlp_in": "mlp_in", "mlp_out": "mlp_out", "attn_out": "attn_out", "attn_z": "z"}
    if site not in kinds:
        raise UserError(f"a dictionary reading {site!r} cannot be wired to a model: use one of {', '.join(kinds)} or resid")
    return Site(kinds[site], layer - 1)


@dataclass(frozen=True)
class Wiring:
    """Where one dictionary reads (``read``) and what it reconstructs or predicts (``write``) in the model."""

    read: Site
    write: Site

    @property
    def sites(self) -> list[Site]:
        return list(dict.fromkeys([self.read, self.write]))


def wire(dictionary: Dictionary, handle: ModelHandle) -> Wiring:
    """The sites of ``dictionary`` in ``handle``'s model, after checking it fits (one ``UserError`` line)."""
    if dictionary.site is None or dictionary.layer is None:
        raise UserError("the dictionary does not say which site and layer it reads: re-save it with its site and layer")
    read = model_site(dictionary.site, dictionary.layer, handle.n_layers)
    out_site = dictionary.site_out or dictionary.site
    write = model_site(out_site, dictionary.layer, handle.n_layers)
    width = handle.n_heads * handle.head_dim if dictionary.site == "attn_z" else handle.d_model
    if dictionary.d_in != width:
        raise UserError(f"the dictionary reads vectors of {dictionary.d_in} numbers but {dictionary.site} of "
                        f"{handle.spec} has {width}: choose a dictionary made for this model")
    return Wiring(read, write)


def flat(site: Site, tensor: torch.Tensor) -> torch.Tensor:
    """A site's recorded tensor as [batch, pos, width] float32 (``z``: heads flattened; 4-bit models: de-quantized
    bf16 activations become float32)."""
    if site.kind == "z":
        tensor = tensor.flatten(-2)
    return tensor.float()


def excluded(handle: ModelHandle, batch: Batch) -> torch.Tensor:
    """Bool [batch, pos]: positions left out of every figure: BOS and padding."""
    ids = batch.input_ids
    keep = batch.attention_mask.bool().clone()
    if batch.attention_mask.all():  # right-padded: the padding is past each row's length
        positions = torch.arange(ids.shape[1])[None, :]
        keep &= positions < torch.tensor(batch.lengths)[:, None]
    bos = getattr(handle.tokenizer, "bos_token_id", None)
    if bos is not None:
        keep &= ids != int(bos)
    return ~keep


def kept(tensor: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``tensor`` [batch, pos, ...] at the positions ``skip`` [batch, pos] leaves in -> [n, ...] (any device)."""
    return tensor[~skip.to(tensor.device)]


def read(handle: ModelHandle, batch: Batch, wirings: Sequence[Wiring], edits: Sequence[Edit] = ()) -> dict:
    """One pass (stopped after the last layer needed) -> {Site: Float[Tensor, "batch pos width"]} for every site
    the wirings read or write."""
    sites = list(dict.fromkeys(s for w in wirings for s in w.sites))
    recording = handle.record(batch, sites, edits=edits)
    return {site: flat(site, recording[site]) for site in sites}


def splice_edit(handle: ModelHandle, dictionary: Dictionary, wiring: Wiring, values: dict, skip: torch.Tensor) -> Edit:
    """An edit replacing the written site by the dictionary's output wherever ``skip`` [batch, pos] is False
    (BOS and padding keep their clean values). ``values``: ``read``'s tensors."""
    x, y = values[wiring.read], values[wiring.write]
    with torch.no_grad():
        out = dictionary(x.to(dictionary.device)).to(y)
    spliced = torch.where(skip[..., None].to(y.device), y, out)
    if wiring.write.kind == "z":  # back to [batch, pos, head, head_dim]
        spliced = spliced.unflatten(-1, (handle.n_heads, -1))
    return Edit(wiring.write, "replace", spliced)
