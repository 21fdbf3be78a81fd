"""A GGUF file's tokenizer fields -> ``tokenizer.json`` + ``tokenizer_config.json``, with ``tokenizers`` alone.

The tokenizer built here is the one transformers builds from the same file
(``transformers/integrations/gguf/gguf_tokenizer_mapping.py``, then the tokenizer class's
``__init__``), piece for piece: same vocabulary, merges, normalizer, pre-tokenizer, decoder,
added tokens and BOS template, so the ids agree on every string. Two kinds are covered:

- ``sentencepiece-gemma``: tokenizer model ``llama`` in a Gemma file. BPE with byte fallback
  over "▁"-spelled text; the file carries no merges, so they are rebuilt from the vocabulary,
  best first in file order (Gemma's scores do not follow its merge order).
- ``byte-level``: tokenizer model ``gpt2`` with GPT-2's own pre-tokenizer (SmolLM2). BPE over
  GPT-2's byte alphabet, merges from the file.

``tokenizer_kind`` returns None for anything else; the caller then asks transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from core.models.gguf_reader import GGUFFile

CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types
GEMMA_ARCHITECTURES = ("gemma", "gemma2", "gemma3")
# pre-tokenizer names whose split is GPT-2's own (transformers adds a regex split for the others)
BYTE_LEVEL_PLAIN = ("smollm", "gpt2", "default")
_SPECIALS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
             "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


def tokenizer_kind(gguf: GGUFFile) -> str | None:
    model = gguf.metadata.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in gguf.metadata:
        return None
    if model == "llama" and gguf.architecture in GEMMA_ARCHITECTURES:
        # transformers would append a missing <mask> to the vocabulary; leave that case to it
        return "sentencepiece-gemma" if "<mask>" in gguf.metadata["tokenizer.ggml.tokens"] else None
    pre = gguf.metadata.get("tokenizer.ggml.pre", "default")
    if model == "gpt2" and pre in BYTE_LEVEL_PLAIN and "tokenizer.ggml.merges" in gguf.metadata:
        return "byte-level"
    return None


def write_tokenizer(gguf: GGUFFile, folder: Path) -> None:
    """Write tokenizer.json, tokenizer_config.json (and chat_template.jinja when the file has one)."""
    kind = tokenizer_kind(gguf)
    meta = gguf.metadata
    tokens = list(meta["tokenizer.ggml.tokens"])
    types = meta.get("tokenizer.ggml.token_type")
    types = [int(t) for t in types] if types is not None else [1] * len(tokens)
    specials = {name: tokens[meta[f"tokenizer.ggml.{key}"]] if f"tokenizer.ggml.{key}" in meta else None
                for name, key in _SPECIALS.items()}
    try:
        tokenizer, vocab, tokenizer_class, spelled = _build(kind, tokens, meta)
    except Exception as err:  # tokenizers raises a bare Exception for e.g. a merge of unknown tokens
        raise ValueError(f"its tokenizer fields do not fit together ({err})") from None
    if kind == "sentencepiece-gemma":
        specials["mask_token"] = "<mask>"  # GemmaTokenizer's default; the file names no mask id
    _add_file_tokens(tokenizer, vocab, tokens, types, spelled)
    # the tokenizer class then registers its named specials (already in the vocabulary: special now)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials.values() if t])

    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "sentencepiece-gemma"))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    tokenizer.post_processor = _template(tokenizer, specials["bos_token"], specials["eos_token"], add_bos, add_eos)
    tokenizer.save(str(folder / "tokenizer.json"))

    # No add_bos_token here: transformers ignores it beside a tokenizer.json, whose template rules.
    config = {"backend": "tokenizers", **{k: v for k, v in specials.items() if v is not None},
              "model_max_length": 1000000000000000019884624838656, "tokenizer_class": tokenizer_class}
    text = json.dumps(dict(sorted(config.items())), indent=2, ensure_ascii=False)
    (folder / "tokenizer_config.json").write_text(text + "\n")
    if meta.get("tokenizer.chat_template"):
        (folder / "chat_template.jinja").write_text(meta["tokenizer.chat_template"])


def _build(kind: str, tokens: list[str], meta: dict):
    """-> (tokenizer, vocab, the transformers class that loads it, byte alphabet or None)."""
    if kind == "sentencepiece-gemma":
        tokenizer, vocab = _gemma(tokens)
        return tokenizer, vocab, "GemmaTokenizer", None
    tokenizer, vocab, spelled = _byte_level(tokens, meta["tokenizer.ggml.merges"])
    return tokenizer, vocab, "TokenizersBackend", spelled


def _gemma(tokens: list[str]) -> tuple[Tokenizer, dict[str, int]]:
    # A token of only whitespace is stored with real spaces ("  "), but looked up as "▁▁".
    tokens = ["▁" * len(t) if " " in t and not t.strip() else t for t in tokens]
    vocab = {token: index for index, token in enumerate(tokens)}
    merges = _merges_from_vocab(vocab, {token: -index for index, token in enumerate(tokens)})
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token="<unk>", dropout=None,
                              byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer, vocab


def _merges_from_vocab(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """Every split of a token into two tokens, highest-scoring token first, longer left part first.

    The order transformers' ``generate_merges`` gives with ``vocab_scores``; BPE applies merges in
    this order, so a different order would give different ids.
    """
    merges = []
    for token, score in scores.items():
        pairs = [(token[:i], token[i:], score) for i in range(1, len(token))
                 if token[:i] in vocab and token[i:] in vocab]
        merges.extend(sorted(pairs, key=lambda pair: (vocab[pair[0]], vocab[pair[1]])))
    merges.sort(key=lambda pair: (pair[2], len(pair[0]), len(pair[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of each byte (its ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def _byte_level(tokens: list[str], merges: list[str]) -> tuple[Tokenizer, dict[str, int], set[str]]:
    spelling = _byte_alphabet()
    alphabet = set(spelling.values())
    # a token spelled outside the alphabet (raw text) is respelled byte by byte, as transformers does
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(tokens)}
    pairs = [tuple(merge.split(" ")) for merge in merges]
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=pairs, dropout=None, continuing_subword_prefix="",
                              end_of_word_suffix="", fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer, vocab, alphabet


def _add_file_tokens(tokenizer: Tokenizer, vocab: dict, tokens: list[str], types: list[int], spelled: set | None):
    """Control tokens become special added tokens, user-defined ones plain added tokens: both stay whole.

    In a byte-level vocabulary a "control" token spelled outside the byte alphabet is a llama.cpp
    mislabel; transformers skips it (adding it would grow the vocabulary), and so do we.
    """
    control = [t for t, kind in zip(tokens, types) if kind == CONTROL and (spelled is None or set(t) <= spelled)]
    if control:
        tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    user = [t for t, kind in zip(tokens, types) if kind == USER_DEFINED and t in vocab]
    if user:
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])


def _template(tokenizer: Tokenizer, bos: str | None, eos: str | None, add_bos: bool, add_eos: bool):
    """The BOS/EOS template transformers' ``update_post_processor`` writes."""
    add_bos, add_eos = add_bos and bos is not None, add_eos and eos is not None
    single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
    specials = [(t, tokenizer.token_to_id(t)) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
