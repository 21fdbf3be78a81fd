"""The local backend: every operation of the handle, by hooks on the model loaded in this process."""

from __future__ import annotations

from core.interventions import access, attention, generation, passes, patching, recorded, sweep, tail, variants
from core.interventions import gradients as per_token
from core.models.handle import OPERATIONS


class LocalBackend:
    """Implements every operation of ``core.models.handle.OPERATIONS`` except the remote-only ``reduced_lens``."""

    name = "local"
    reductions_only = False
    operations = frozenset(OPERATIONS) - {"reduced_lens"}

    residuals = staticmethod(passes.residuals)
    decode = staticmethod(passes.decode)
    token_logits = staticmethod(passes.token_logits)
    logits = staticmethod(passes.logits)
    generate = staticmethod(generation.generate)
    record = staticmethod(access.record)
    run_with_edits = staticmethod(access.run_with_edits)
    gradients = staticmethod(access.gradients)
    frozen_norms = staticmethod(access.frozen_norms)
    capture = staticmethod(recorded.capture)
    record_run = staticmethod(recorded.record)
    run_variants = staticmethod(variants.run_variants)
    resume = staticmethod(variants.resume)
    forward_with = staticmethod(variants.forward_with)
    attribution = staticmethod(patching.attribution)
    attention_pattern = staticmethod(attention.attention_pattern)
    head_ov = staticmethod(attention.head_outputs)
    after_first_mlp = staticmethod(attention.after_first_mlp)
    linear_gradients = staticmethod(per_token.linear_gradients)
    ablation_sweep = staticmethod(sweep.ablation_sweep)
    tail_variants = staticmethod(tail.tail_variants)
