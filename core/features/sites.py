"""Where a dictionary reads: our (site, layer) and the hook names other tools give the same place.

Layers follow the project's numbering (``core/lens.py``): blocks are 1..L, the residual at layer ℓ is
the residual stream after block ℓ (ℓ = 0: the embedding output), and a sub-layer site at layer ℓ
belongs to block ℓ. Hugging Face module paths and TransformerLens hooks count blocks from 0, so
``model.layers.12.output`` and ``blocks.12.hook_resid_post`` are our residual at layer 13.

Sites:
    resid     the residual stream after block ℓ                      [d_model]
    mlp_out   the output of block ℓ's MLP (what it adds to the residual) [d_model]
    attn_out  the output of block ℓ's attention (after o_proj)       [d_model]
    mlp_in    block ℓ's MLP input, after its pre-norm (transcoder input) [d_model]
    attn_z    block ℓ's concatenated head outputs before o_proj      [n_heads·d_head]
"""

from __future__ import annotations

import re
from typing import Optional

SITES = ("resid", "mlp_out", "attn_out", "mlp_in", "attn_z")

# TransformerLens hook suffix -> (site, offset added to the 0-based block index).
_TL_HOOKS = {
    "hook_resid_pre": ("resid", 0),
    "hook_resid_post": ("resid", 1),
    "hook_mlp_out": ("mlp_out", 1),
    "hook_attn_out": ("attn_out", 1),
    # TransformerLens' own hook_mlp_in is the MLP input before ln2, but SAELens names Gemma Scope 2
    # transcoders (which read the post-norm input) with it; ln2.hook_normalized is the exact name.
    "hook_mlp_in": ("mlp_in", 1),
    "ln2.hook_normalized": ("mlp_in", 1),
    "attn.hook_z": ("attn_z", 1),
}
_TL_WRITE = {"resid": "hook_resid_post", "mlp_out": "hook_mlp_out", "attn_out": "hook_attn_out",
             "mlp_in": "ln2.hook_normalized", "attn_z": "attn.hook_z"}

# Hugging Face module paths as Gemma Scope 2's config.json names them (hf_hook_point_in/out).
_HF_POINTS = (
    (r"layers\.(\d+)\.output", "resid"),
    (r"layers\.(\d+)\.pre_feedforward_layernorm\.output", "mlp_in"),
    (r"layers\.(\d+)\.post_feedforward_layernorm\.output", "mlp_out"),
    (r"layers\.(\d+)\.mlp\.output", "mlp_out"),
    (r"layers\.(\d+)\.self_attn\.o_proj\.input", "attn_z"),
    (r"layers\.(\d+)\.self_attn\.output", "attn_out"),
)
_HF_WRITE = {"resid": "model.layers.{i}.output", "mlp_in": "model.layers.{i}.pre_feedforward_layernorm.output",
             "mlp_out": "model.layers.{i}.post_feedforward_layernorm.output",
             "attn_z": "model.layers.{i}.self_attn.o_proj.input", "attn_out": "model.layers.{i}.self_attn.output"}


def from_transformerlens(hook_name: str) -> Optional[tuple[str, int]]:
    """``blocks.9.hook_resid_post`` -> ("resid", 10); ``hook_embed`` -> ("resid", 0); None if not a site we know."""
    if hook_name in ("hook_embed", "embed.hook_embed"):
        return "resid", 0
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook_name or "")
    if not match or match.group(2) not in _TL_HOOKS:
        return None
    site, offset = _TL_HOOKS[match.group(2)]
    return site, int(match.group(1)) + offset


def to_transformerlens(site: str, layer: int) -> str:
    """("resid", 10) -> ``blocks.9.hook_resid_post``; the embeddings (resid 0) -> ``blocks.0.hook_resid_pre``."""
    if site == "resid" and layer == 0:
        return "blocks.0.hook_resid_pre"
    return f"blocks.{layer - 1}.{_TL_WRITE[site]}"


def from_hf_point(point: str) -> Optional[tuple[str, int]]:
    """``model.layers.12.output`` -> ("resid", 13); None if not a module path we know."""
    for pattern, site in _HF_POINTS:
        match = re.search(r"(?:^|\.)" + pattern + r"$", point or "")
        if match:
            return site, int(match.group(1)) + 1
    if re.search(r"(?:^|\.)embed_tokens\.output$", point or ""):
        return "resid", 0
    return None


def to_hf_point(site: str, layer: int) -> str:
    """("resid", 13) -> ``model.layers.12.output`` (Gemma-style module names, as Gemma Scope 2 writes them)."""
    if site == "resid" and layer == 0:
        return "model.embed_tokens.output"
    return _HF_WRITE[site].format(i=layer - 1)


def from_sparsify_hookpoint(name: str, transcode: bool) -> Optional[tuple[str, int]]:
    """A sparsify hookpoint (its folder name) -> (input site, layer).

    ``layers.9`` (or ``h.9``, ``model.layers.9``, ``gpt_neox.layers.9``) is the block's output: resid 10;
    ``layers.9.mlp`` is mlp_out 10, or for a transcoder its input mlp_in 10; ``layers.9.self_attn`` is attn_out 10.
    """
    match = re.fullmatch(r"(?:.*\.)?(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attn|attention))?", name or "")
    if not match:
        return None
    layer, module = int(match.group(1)) + 1, match.group(2)
    if module is None:
        return "resid", layer
    if module == "mlp":
        return ("mlp_in" if transcode else "mlp_out"), layer
    return "attn_out", layer


def folder_hint(name: str) -> Optional[tuple[str, int]]:
    """Gemma Scope folder names, e.g. ``resid_post/layer_12_width_16k_l0_small`` -> ("resid", 13)."""
    match = re.search(r"layer_(\d+)", name)
    if not match:
        return None
    layer = int(match.group(1)) + 1
    # Gemma Scope 2's attn_out dictionaries read the head outputs before o_proj (SAELens: attn.hook_z).
    for key, site in (("transcoder", "mlp_in"), ("resid", "resid"), ("mlp_out", "mlp_out"), ("attn_out", "attn_z")):
        if key in name:
            return site, layer
    return None


def same_model(a: Optional[str], b: Optional[str]) -> bool:
    """Loose equality of model names: ``google/gemma-3-270m-pt`` matches ``gemma-3-270m`` (no org, no -pt, any case).

    An unknown name (None) matches anything: a file that does not say its model cannot be checked.
    """

    def norm(name: str) -> str:
        name = name.strip().rstrip("/").split("/")[-1].lower()
        return re.sub(r"-pt$", "", name)

    return a is None or b is None or norm(a) == norm(b)
