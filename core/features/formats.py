"""Read and write dictionaries in the three layouts people publish them in, from one folder each.

Layouts (tensor shapes as stored; ``Dictionary`` holds W_enc [d_in, width], W_dec [width, d_out]):

gemmascope  Gemma Scope 2 (Google DeepMind): ``params.safetensors`` with ``w_enc`` [d_in, width],
            ``w_dec`` [width, d_out], ``b_enc`` [width], ``b_dec`` [d_out], ``threshold`` [width],
            optional ``affine_skip_connection`` [d_in, d_out]; ``config.json`` with ``architecture``
            ("jump_relu"), ``model_name``, ``hf_hook_point_in``/``_out``, ``width``, ``type``, ``affine_connection``.
            Read liberally: any key case (``W_enc``), ``W_skip``, ``log_threshold``; Gemma Scope 1's
            ``params.npz`` (read without pickle); no config.json (site from the folder name).
saelens     ``sae_weights.safetensors`` with ``W_enc`` [d_in, width], ``W_dec`` [width, d_out], ``b_enc``,
            ``b_dec``, ``threshold`` (or ``log_threshold``), ``W_skip`` [d_out, d_in] (transposed from ours);
            ``cfg.json`` with ``architecture``, ``d_in``, ``d_sae``, ``d_out``, ``k``, ``apply_b_dec_to_input``,
            and ``metadata.hook_name``/``model_name`` (SAELens < 6: top-level ``hook_name``/``hook_point``,
            ``activation_fn_str``, ``hook_layer``).
sparsify    EleutherAI's sparsify, one folder per hookpoint named like ``layers.9``: ``sae.safetensors`` with
            ``encoder.weight`` [width, d_in] (an nn.Linear), ``encoder.bias`` [width], ``W_dec`` [width, d_in],
            ``b_dec`` [d_in], optional ``W_skip`` [d_in, d_in] (used as x @ W_skip.T); ``cfg.json`` with
            ``activation`` "topk", ``k``, ``num_latents`` or ``expansion_factor``, ``d_in``, ``transcode``,
            ``skip_connection``. Its SAEs encode x − b_dec: folded into b_enc on reading, unfolded on writing.

Every layout we write also carries our metadata in a ``"layerscope"`` block of its JSON (sparsify and
SAELens ignore unknown keys), so a dictionary reads back with its site, layer, model and activation.
Writing is atomic: a temporary sibling folder, renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from core.errors import UserError
from core.features import sites
from core.features.dictionary import Dictionary

LAYOUTS = ("gemmascope", "saelens", "sparsify")
WEIGHTS = {"gemmascope": "params.safetensors", "saelens": "sae_weights.safetensors", "sparsify": "sae.safetensors"}
CONFIGS = {"gemmascope": "config.json", "saelens": "cfg.json", "sparsify": "cfg.json"}
_KNOWN_FILES = {"params.safetensors", "params.npz", "config.json", "cfg.json", "sae_weights.safetensors",
                "sae.safetensors", "sparsity.safetensors"}
_D_MODEL_SITES = ("resid", "mlp_out", "attn_out", "mlp_in")
_SAELENS_ARCH = {  # SAELens architecture -> (kind, activation, has W_skip)
    "standard": ("sae", "relu", False), "topk": ("sae", "topk", False), "jumprelu": ("sae", "jumprelu", False),
    "transcoder": ("transcoder", "relu", False), "skip_transcoder": ("transcoder", "relu", True),
    "jumprelu_transcoder": ("transcoder", "jumprelu", False),
    "jumprelu_skip_transcoder": ("transcoder", "jumprelu", True),
}
_GS_ARCH = {"jump_relu": "jumprelu", "jumprelu": "jumprelu", "topk": "topk", "batchtopk": "batchtopk", "relu": "relu"}


# -- reading files ---------------------------------------------------------------------------------

def _read_json(file: Path) -> dict:
    if not file.exists():
        raise UserError(f"{file}: missing; this layout keeps its config next to the weights: re-download both files")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{file}: not readable JSON ({error}); re-download it or fix it") from None
    if not isinstance(data, dict):
        raise UserError(f"{file}: expected a JSON object, found {type(data).__name__}; re-download it")
    return data


def _read_tensors(file: Path) -> dict[str, Tensor]:
    """Every tensor of a .safetensors (or pickle-free .npz) file, as float32."""
    try:
        if file.suffix == ".npz":
            import numpy as np

            with np.load(file, allow_pickle=False) as data:
                tensors = {key: torch.from_numpy(data[key].copy()) for key in data.files}
        else:
            from safetensors.torch import load_file

            tensors = load_file(str(file))
    except Exception as error:  # safetensors raises its own SafetensorError; numpy ValueError/OSError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{file}: not a readable {file.suffix[1:]} file ({reason}); it is truncated, corrupt or "
                        "another format: re-download it or re-save it as safetensors") from None
    for key, tensor in tensors.items():
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise UserError(f"{file}: tensor {key} holds non-finite or non-float values; the file is corrupt: "
                            "re-download it")
    return {key: tensor.to(torch.float32) for key, tensor in tensors.items()}


def _need(tensors: dict[str, Tensor], file: Path, *names: str) -> Tensor:
    for name in names:
        if name in tensors:
            return tensors[name]
    raise UserError(f"{file}: no {names[0]} tensor (it holds {', '.join(sorted(tensors)) or 'nothing'}); "
                    "re-download the file or give the folder of a complete dictionary")


def _threshold(tensors: dict[str, Tensor]) -> Optional[Tensor]:
    if "threshold" in tensors:
        return tensors["threshold"]
    return tensors["log_threshold"].exp() if "log_threshold" in tensors else None


def _build(file: Path, **fields) -> Dictionary:
    """A Dictionary, or one UserError line naming ``file`` and what is wrong."""
    if fields.get("activation") in ("jumprelu", "batchtopk") and fields.get("threshold") is None:
        raise UserError(f"{file}: a JumpReLU dictionary needs a threshold [width] tensor and this file has none; "
                        "re-download it (Gemma Scope ships 'threshold'), or set the config's architecture to the "
                        "one it was trained with")
    try:
        return Dictionary(**fields)
    except UserError as error:
        raise UserError(f"{file}: {error}; the file is inconsistent: re-download it or re-save it") from None


def _ours(config: dict) -> dict:
    block = config.get("layerscope")
    return block if isinstance(block, dict) else {}


def _fold_b_dec(dictionary: Dictionary) -> Dictionary:
    """Encoding x − b_dec is encoding x with b_enc − b_dec @ W_enc."""
    return replace(dictionary, b_enc=dictionary.b_enc - dictionary.b_dec @ dictionary.W_enc)


def _read_gemmascope(folder: Path) -> Dictionary:
    file = folder / "params.safetensors"
    if not file.exists():
        file = folder / "params.npz"
    tensors = {key.lower(): value for key, value in _read_tensors(file).items()}
    if tensors.get("w_dec", torch.zeros(0, 0)).ndim == 3:
        raise UserError(f"{file}: a cross-layer transcoder (w_dec {list(tensors['w_dec'].shape)}) is not supported yet; "
                        "choose a per-layer transcoder or SAE")
    config = _read_json(folder / "config.json") if (folder / "config.json").exists() else {}
    ours = _ours(config)
    threshold, skip = _threshold(tensors), tensors.get("affine_skip_connection", tensors.get("w_skip"))
    architecture = str(config.get("architecture", "jump_relu")).lower()
    if architecture not in _GS_ARCH:
        raise UserError(f"{folder / 'config.json'}: architecture {architecture!r} is not one we read "
                        f"({', '.join(_GS_ARCH)})")
    point_in, point_out = config.get("hf_hook_point_in"), config.get("hf_hook_point_out")
    found = sites.from_hf_point(point_in) if point_in else sites.folder_hint(f"{folder.parent.name}/{folder.name}")
    transcoder = (skip is not None or "affine_connection" in config or config.get("type") == "transcoder"
                  or bool(point_out and point_out != point_in) or (found or ("", 0))[0] == "mlp_in")
    out = sites.from_hf_point(point_out) if point_out else None
    fields = dict(
        W_enc=_need(tensors, file, "w_enc"), b_enc=_need(tensors, file, "b_enc"), W_dec=_need(tensors, file, "w_dec"),
        b_dec=_need(tensors, file, "b_dec"), threshold=threshold, W_skip=skip,
        activation=ours.get("activation", _GS_ARCH[architecture]), k=ours.get("k", config.get("k")),
        kind=ours.get("kind", "transcoder" if transcoder else "sae"),
        site=ours.get("site", found[0] if found else None), layer=ours.get("layer", found[1] if found else None),
        site_out=ours.get("site_out", (out[0] if out else "mlp_out") if transcoder else None),
        model=ours.get("model", config.get("model_name")), d_model=ours.get("d_model"), info=ours.get("info", {}))
    return _build(file, **fields)


def _read_saelens(folder: Path) -> Dictionary:
    file, config = folder / "sae_weights.safetensors", _read_json(folder / "cfg.json")
    tensors, ours, meta = _read_tensors(file), _ours(config.get("metadata") or {}), config.get("metadata") or {}
    activation_fn = config.get("activation_fn", config.get("activation_fn_str"))
    architecture = config.get("architecture") or ("topk" if activation_fn == "topk" else "standard")
    if architecture not in _SAELENS_ARCH:
        raise UserError(f"{folder / 'cfg.json'}: SAELens architecture {architecture!r} is not supported "
                        f"(supported: {', '.join(_SAELENS_ARCH)})")
    if config.get("normalize_activations") not in (None, "none", False):
        raise UserError(f"{folder / 'cfg.json'}: normalize_activations={config['normalize_activations']!r} needs "
                        "SAELens at run time; fold it into the weights first (SAELens: "
                        "fold_activation_norm_scaling_factor) and save again")
    if config.get("rescale_acts_by_decoder_norm"):
        raise UserError(f"{folder / 'cfg.json'}: rescale_acts_by_decoder_norm is not supported; fold the decoder "
                        "norms into the encoder (SAELens: fold_W_dec_norm) and save again")
    kind, activation, has_skip = _SAELENS_ARCH[architecture]
    hook = meta.get("hook_name") or config.get("hook_name") or config.get("hook_point")
    hook_out = meta.get("hook_name_out") or config.get("hook_name_out")
    found, out = sites.from_transformerlens(hook), sites.from_transformerlens(hook_out) if hook_out else None
    W_dec = _need(tensors, file, "W_dec")
    if "scaling_factor" in tensors:  # SAELens' finetuning scale multiplies the latents before decoding
        W_dec = W_dec * tensors["scaling_factor"][:, None]
    skip = tensors.get("W_skip") if has_skip or "W_skip" in tensors else None
    k = config.get("k") or (config.get("activation_fn_kwargs") or {}).get("k")
    fields = dict(
        W_enc=_need(tensors, file, "W_enc"), b_enc=_need(tensors, file, "b_enc"), W_dec=W_dec,
        b_dec=_need(tensors, file, "b_dec"), threshold=_threshold(tensors), W_skip=skip.T if skip is not None else None,
        activation=ours.get("activation", activation), k=ours.get("k", k), kind=ours.get("kind", kind),
        site=ours.get("site", found[0] if found else None), layer=ours.get("layer", found[1] if found else None),
        site_out=ours.get("site_out", (out[0] if out else "mlp_out") if kind == "transcoder" else None),
        model=ours.get("model", meta.get("model_name") or config.get("model_name")),
        d_model=ours.get("d_model"), info=ours.get("info", {}))
    dictionary = _build(file, **fields)
    for key, value in (("d_sae", dictionary.width), ("d_in", dictionary.d_in)):
        if key in config and config[key] != value:
            raise UserError(f"{folder / 'cfg.json'}: {key} is {config[key]} but the weights have {value}; "
                            "the config belongs to another dictionary: re-download both files")
    if config.get("apply_b_dec_to_input", kind == "sae"):
        dictionary = _fold_b_dec(dictionary)
    return dictionary


def _read_sparsify(folder: Path) -> Dictionary:
    file, config = folder / "sae.safetensors", _read_json(folder / "cfg.json")
    tensors, ours = _read_tensors(file), _ours(config)
    if config.get("activation", "topk") != "topk":
        raise UserError(f"{folder / 'cfg.json'}: sparsify activation {config['activation']!r} is not supported "
                        "(only topk)")
    transcode = bool(config.get("transcode", False))
    found = sites.from_sparsify_hookpoint(folder.name, transcode)
    encoder = _need(tensors, file, "encoder.weight")
    skip = tensors.get("W_skip")
    fields = dict(
        W_enc=encoder.T, b_enc=_need(tensors, file, "encoder.bias"), W_dec=_need(tensors, file, "W_dec"),
        b_dec=_need(tensors, file, "b_dec"), W_skip=skip.T if skip is not None else None, activation="topk",
        k=config.get("k"), kind="transcoder" if transcode else "sae",
        site=ours.get("site", found[0] if found else None), layer=ours.get("layer", found[1] if found else None),
        site_out=ours.get("site_out", "mlp_out" if transcode else None),
        model=ours.get("model"), d_model=ours.get("d_model"), info=ours.get("info", {}))
    dictionary = _build(file, **fields)
    width = config.get("num_latents") or config.get("expansion_factor", 0) * config.get("d_in", 0)
    if width and width != dictionary.width or config.get("d_in", dictionary.d_in) != dictionary.d_in:
        raise UserError(f"{folder / 'cfg.json'}: says d_in {config.get('d_in')} and {width} latents but the weights "
                        f"have d_in {dictionary.d_in} and {dictionary.width}; re-download both files")
    return dictionary if transcode else _fold_b_dec(dictionary)


_READERS = {"gemmascope": _read_gemmascope, "saelens": _read_saelens, "sparsify": _read_sparsify}


def detect_layout(folder: Path) -> str:
    """Which layout a folder holds, by its weight file; one UserError line when none."""
    folder = Path(folder)
    for layout, name in WEIGHTS.items():
        if (folder / name).exists():
            return layout
    if (folder / "params.npz").exists():
        return "gemmascope"
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    pickles = [n for n in names if n.endswith((".pt", ".pth", ".bin", ".ckpt", ".pkl"))]
    if pickles:
        raise UserError(f"{folder / pickles[0]}: pickle checkpoints are not read (loading them can run code); "
                        "convert it to safetensors (params.safetensors, sae_weights.safetensors or sae.safetensors)")
    subfolders = [n for n in names if (folder / n).is_dir()]
    hint = f"; it holds folders {', '.join(subfolders[:4])}{'…' if len(subfolders) > 4 else ''}: give one of them" \
        if subfolders else ""
    raise UserError(f"{folder}: no dictionary here: expected params.safetensors (Gemma Scope), "
                    f"sae_weights.safetensors + cfg.json (SAELens) or sae.safetensors + cfg.json (sparsify){hint}")


def load_dictionary(path, expect_model: Optional[str] = None, expect_d_model: Optional[int] = None,
                    expect_site: Optional[str] = None, expect_layer: Optional[int] = None) -> Dictionary:
    """Read the dictionary in ``path`` (its folder, or a file in it), in whichever layout it is.

    Checks what is given: the model name (loosely, see ``sites.same_model``; a file that names no model
    passes), d_model, the site and the layer. Each failure is one ``UserError`` line naming the file.
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"{path}: no such folder; give the folder that holds the dictionary's weights")
    layout = detect_layout(folder)
    dictionary = _READERS[layout](folder)
    where = folder / WEIGHTS[layout]
    if dictionary.d_model is None and dictionary.site in _D_MODEL_SITES:
        dictionary.d_model = dictionary.d_in
    if expect_d_model is not None and dictionary.d_model is not None and dictionary.d_model != expect_d_model:
        raise UserError(f"{where}: made for d_model {dictionary.d_model} but the model has d_model {expect_d_model}: "
                        "choose a dictionary trained on this model")
    if expect_model is not None and not sites.same_model(dictionary.model, expect_model):
        raise UserError(f"{where}: trained on {dictionary.model!r}, not {expect_model!r}: choose a dictionary for "
                        "this model")
    for name, expected in (("site", expect_site), ("layer", expect_layer)):
        found = getattr(dictionary, name)
        if expected is not None and found is None:
            raise UserError(f"{where}: does not say which {name} it reads (no config names a hook and the folder "
                            "name is not a hookpoint like layers.9); re-save it with save_dictionary")
        if expected is not None and found != expected:
            raise UserError(f"{where}: reads {name} {found}, not {expected}: choose the dictionary for {name} "
                            f"{expected}")
    return dictionary


# -- writing ---------------------------------------------------------------------------------------

def _unit_rows(matrix: Tensor) -> bool:
    return bool(torch.allclose(matrix.norm(dim=1), torch.ones(matrix.shape[0], device=matrix.device), atol=1e-4))


def _write_gemmascope(d: Dictionary) -> tuple[dict[str, Tensor], dict]:
    tensors = {"w_enc": d.W_enc, "w_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec}
    if d.threshold is not None:
        tensors["threshold"] = d.threshold
    if d.W_skip is not None:
        tensors["affine_skip_connection"] = d.W_skip
    config = {"architecture": {"jumprelu": "jump_relu", "batchtopk": "jump_relu"}.get(d.activation, d.activation),
              "model_name": d.model, "width": d.width, "type": d.kind}
    if d.site is not None and d.layer is not None:
        config["hf_hook_point_in"] = sites.to_hf_point(d.site, d.layer)
        config["hf_hook_point_out"] = sites.to_hf_point(d.site_out or d.site, d.layer)
    if d.kind == "transcoder":
        config["affine_connection"] = d.W_skip is not None
    if d.k is not None:
        config["k"] = d.k
    if "l0" in d.info:
        config["l0"] = d.info["l0"]
    return tensors, config


def _write_saelens(d: Dictionary) -> tuple[dict[str, Tensor], dict]:
    arch = {v: k for k, v in _SAELENS_ARCH.items()}
    activation = "jumprelu" if d.activation == "batchtopk" else d.activation  # SAELens saves BatchTopK so too
    key = (d.kind, activation, d.W_skip is not None)
    if key not in arch:
        raise UserError(f"SAELens has no {d.activation} {'skip ' if key[2] else ''}{d.kind} architecture; save it "
                        "in the gemmascope or sparsify layout")
    tensors = {"W_enc": d.W_enc, "W_dec": d.W_dec, "b_enc": d.b_enc, "b_dec": d.b_dec}
    if d.threshold is not None:
        tensors["threshold"] = d.threshold
    if d.W_skip is not None:
        tensors["W_skip"] = d.W_skip.T
    metadata = {"sae_lens_version": "6.0.0", "sae_lens_training_version": None, "model_name": d.model,
                "hook_name": sites.to_transformerlens(d.site, d.layer) if d.site and d.layer is not None else None}
    if d.kind == "transcoder" and d.layer is not None:
        metadata["hook_name_out"] = sites.to_transformerlens(d.site_out or "mlp_out", d.layer)
    config = {"architecture": arch[key], "d_in": d.d_in, "d_sae": d.width, "dtype": "float32", "device": "cpu",
              "apply_b_dec_to_input": False, "normalize_activations": "none",
              "reshape_activations": "hook_z" if d.site == "attn_z" else "none", "metadata": metadata}
    if d.activation == "topk":
        config.update(k=d.k, rescale_acts_by_decoder_norm=False)
    if d.kind == "transcoder":
        config["d_out"] = d.d_out
    return tensors, config


def _write_sparsify(d: Dictionary) -> tuple[dict[str, Tensor], dict]:
    if d.activation != "topk":
        raise UserError(f"sparsify holds only TopK dictionaries, not {d.activation}; save it in the gemmascope or "
                        "saelens layout")
    if d.d_in != d.d_out:
        raise UserError(f"sparsify needs d_out == d_in, not {d.d_out} != {d.d_in}; save it in the gemmascope layout")
    transcode = d.kind == "transcoder"
    tensors = {"encoder.weight": d.W_enc.T, "encoder.bias": d.b_enc if transcode else d.b_enc + d.b_dec @ d.W_enc,
               "W_dec": d.W_dec, "b_dec": d.b_dec}
    if d.W_skip is not None:
        tensors["W_skip"] = d.W_skip.T
    config = {"activation": "topk", "expansion_factor": max(1, d.width // d.d_in), "normalize_decoder":
              _unit_rows(d.W_dec), "num_latents": d.width, "k": d.k, "multi_topk": False,
              "skip_connection": d.W_skip is not None, "transcode": transcode, "d_in": d.d_in}
    return tensors, config


_WRITERS = {"gemmascope": _write_gemmascope, "saelens": _write_saelens, "sparsify": _write_sparsify}


def save_dictionary(dictionary: Dictionary, path, layout: str = "gemmascope", overwrite: bool = False) -> Path:
    """Write ``dictionary`` into the folder ``path`` in ``layout``; atomic, never half-written. Returns the folder.

    ``overwrite`` replaces an existing dictionary folder (one holding only dictionary files).
    """
    if layout not in _WRITERS:
        raise UserError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    folder = Path(path)
    tensors, config = _WRITERS[layout](dictionary)
    block = dictionary.metadata()
    (config["metadata"] if layout == "saelens" else config)["layerscope"] = {"format": 1, **block}
    if folder.exists():
        foreign = sorted({p.name for p in folder.iterdir()} - _KNOWN_FILES) if folder.is_dir() else [folder.name]
        if foreign:
            raise UserError(f"{folder}: exists and {'holds ' + foreign[0] + ', which is' if folder.is_dir() else 'is'} "
                            "not a dictionary file; choose a new folder")
        if not overwrite:
            raise UserError(f"{folder}: already holds a dictionary; pass overwrite=True to replace it, or choose a "
                            "new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        from safetensors.torch import save_file

        weights = temporary / WEIGHTS[layout]
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}, str(weights),
                  metadata={"format": "pt"})
        with open(temporary / CONFIGS[layout], "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=1, default=_json_default)
            handle.flush()
            os.fsync(handle.fileno())
        with open(weights, "rb") as handle:
            os.fsync(handle.fileno())
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.rename(folder, old / "dictionary")
            os.rename(temporary, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


def _json_default(value):
    if hasattr(value, "item"):  # numpy and 0-d torch scalars in ``info``
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
