"""4-bit models (bitsandbytes NF4 on the CPU): quanta's sketched gradients equal those of the de-quantized layers,
and quanta and the sequence sweep finish on a 4-bit tiny Llama."""

import core  # noqa: F401  (before torch: OMP settings)
import pytest
import torch

from core.models import LoadOptions, load_model, wrap_model
from core.models.loading import resolve_dtype
from tests import tiny

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    model, tok = tiny.model("llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def quantized(folder):
    return load_model(str(folder), LoadOptions(quantization="4bit", dtype="float32"))


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps")
def test_no_checkpoint_file_stays_mapped_after_a_quantized_load(folder):
    """Unquantized tensors (norms, embeddings) are copied out of the memory-mapped safetensors: otherwise each keeps
    its whole shard mapped (10.7 GB of a Llama-2-7B-shaped checkpoint in 4-bit)."""
    handle = load_model(str(folder), LoadOptions(quantization="4bit", dtype="float32"))
    with open("/proc/self/maps") as maps:
        mapped = [line for line in maps if str(folder) in line]
    assert mapped == []
    norm = handle.model.model.norm.weight
    assert norm.dtype == torch.float32 and norm.requires_grad  # still a parameter, now in memory of its own
    batch = handle.encode(["one two three"])
    assert torch.isfinite(handle.logits(batch)).all()


def dequantized_copy(handle):
    """The same model with every 4-bit linear replaced by a float32 nn.Linear holding its de-quantized weight."""
    model, tok = tiny.model("llama")
    state = {}
    for name, module in handle.model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            state[f"{name}.weight"] = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    missing = model.load_state_dict(state, strict=False)
    assert not missing.unexpected_keys and len(state) == 3 * 7
    return model


def test_auto_dtype_is_bf16_compute_for_4bit_on_cpu(folder):
    assert resolve_dtype("auto", "cpu", "4bit") == torch.bfloat16 and resolve_dtype("auto", "cpu") == torch.float32
    handle = load_model(str(folder), LoadOptions(quantization="4bit"))
    assert handle.dtype == "bfloat16" and handle.quantization == "4bit"
    linear = handle.model.model.layers[0].mlp.down_proj
    assert isinstance(linear, bnb.nn.Linear4bit) and linear.weight.dtype == torch.uint8


def sketch_of(grad, bucket_out, sign_out, bucket_in, sign_in, dim):
    """CountSketch of a full gradient matrix [out, in] with the product hash (the definition, coordinate by coordinate)."""
    buckets = (bucket_out[:, None] + bucket_in[None, :]) % dim
    return torch.zeros(dim).index_add_(0, buckets.reshape(-1), (grad * sign_out[:, None] * sign_in[None, :]).reshape(-1))


def test_sketched_gradients_of_4bit_layers_equal_the_dequantized_layers_exact_gradients(quantized):
    from core.analyses.quanta.gradients import GradientSketch

    sketcher = GradientSketch(quantized, "all", dim=512)
    contexts = [[1, 40, 41, 42, 43, 44], [1, 50, 51], [1, 60, 61, 62, 63]]
    targets = [45, 52, 64]
    sketches, losses = sketcher.sketch(contexts, targets)
    model = dequantized_copy(quantized)
    name_of = {id(m): name for name, m in quantized.model.named_modules()}
    modules = quantized.weights.linear_modules("all")
    linears = {layer.name: model.get_submodule(name_of[id(modules[layer.name])]) for layer in sketcher.layers}
    for row, (context, target) in enumerate(zip(contexts, targets)):
        model.zero_grad()
        logits = model(torch.tensor([context])).logits[0, -1]
        loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([target]))
        loss.backward()
        assert float(loss.detach()) == pytest.approx(float(losses[row]), rel=1e-4)
        expected = torch.zeros(512)
        for layer in sketcher.layers:
            weight_grad = linears[layer.name].weight.grad  # grad_W = sum over positions of g_out^T x
            bucket_in, sign_in = sketcher.input_hash(layer)
            expected += sketch_of(weight_grad, layer.out_bucket, layer.out_sign, bucket_in, sign_in, 512)
        assert torch.allclose(torch.from_numpy(sketches[row]), expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))


def test_quanta_finishes_on_a_4bit_llama(quantized, tmp_path, monkeypatch):
    from core.analyses import quanta
    from tests.analyses.quanta.test_result import SETTINGS

    monkeypatch.setenv("LAYERSCOPE_HOME", str(tmp_path))
    result = quanta.run(quantized, SETTINGS)
    assert result.gradients_computed == 20 and len(result.clusters) == 2
    assert result.n_params == 3 * (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128)


def own_prediction_pairs(handle, n=4):
    """Custom pairs the random model 'gets right': the answer is its own top-1 token, a whole word after a space."""
    import random

    words = "one two three four five six seven eight nine ten Monday Tuesday Wednesday Thursday Friday".split()
    rng = random.Random(0)
    prompts = [" ".join(rng.choice(words) for _ in range(3)) for _ in range(256)]
    lines = []
    for begin in range(0, len(prompts), 64):
        chunk = prompts[begin : begin + 64]
        top = handle.logits(handle.encode(chunk))[:, -1].topk(40).indices
        for clean, ids in zip(chunk, top.tolist()):
            pieces = handle.tokenizer.convert_ids_to_tokens(ids)
            whole = [p[1:] for p in pieces if p.startswith("▁") and p[1:].isalpha()]  # one token after a space
            if len(whole) >= 2 and pieces[0] == "▁" + whole[0]:
                lines.append(f"{clean} | {' '.join(reversed(clean.split()))} | {whole[0]} | {whole[-1]}")
    assert len(lines) >= n, "the random model predicts too few whole words: change the seed"
    return "\n".join(lines)


@pytest.mark.parametrize("method", ["ablation", "attribution"])
def test_the_sequence_sweep_finishes_on_a_4bit_llama(quantized, method):
    from core.analyses import sequences as sq

    custom = own_prediction_pairs(quantized)
    result = sq.run(quantized, sq.Settings(custom=custom, n=4, method=method))
    sweep = result.sweeps.main
    assert len(sweep.heads) == 3 * 4 and len(sweep.mlps) == 3
    assert torch.isfinite(torch.tensor(sweep.heads["logit_diff"].to_numpy())).all()
    assert sweep.heads["logit_diff"].abs().sum() > 0
