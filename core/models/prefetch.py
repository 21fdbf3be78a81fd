"""The tokenizer of a converted GGUF folder, built in another process while this one imports torch.

A ``python -m core`` run spends about 1 s building the default model's tokenizer from its 33 MB
``tokenizer.json`` (262k pieces, 515k merges, 6k special tokens), and about 4 s importing torch and
transformers. The Rust parser holds the GIL, so a thread cannot overlap the two; a second process can. The
CLI calls ``start(spec)`` before it imports torch: a child Python builds the same tokenizer
(``converted_tokenizer``) and answers calls over a pipe. ``take(folder)`` then hands the loader a
``RemoteTokenizer`` in place of the local one.

``RemoteTokenizer`` answers what the analyses ask of a tokenizer most: encoding (``__call__``, ``encode``,
``tokenize``), decoding (``decode``, ``batch_decode``), ids <-> pieces, ``len()`` and the special tokens.
Everything else (``get_vocab``, setting an attribute, handing it to nnsight, ``return_tensors=...``), a call
the child cannot answer, or more than ``MAX_REMOTE_CALLS`` calls builds the tokenizer here (as without a
prefetch) and hands every later call to it, so results never differ from a local tokenizer's.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

from core.models import gguf_cache

# After this many calls the tokenizer is built here: a round trip through the pipes costs 0.1-0.25 ms (measured
# on 2 cores), a local call 0.005-0.05 ms, so an analysis making thousands of calls (translation's word sets)
# is faster with a local tokenizer. The lens of one prompt makes about 200.
MAX_REMOTE_CALLS = 1000

_REMOTE_METHODS = frozenset({"__call__", "__len__", "encode", "tokenize", "decode", "batch_decode",
                             "convert_ids_to_tokens", "convert_tokens_to_ids"})
# Read once from the child: plain values the analyses and the loader ask for.
_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "pad_token", "bos_token_id", "eos_token_id", "unk_token_id",
               "pad_token_id", "all_special_ids", "all_special_tokens", "padding_side", "truncation_side",
               "model_max_length", "name_or_path", "vocab_size", "is_fast", "chat_template")
_MISSING = "<layerscope: no such attribute>"

# The default padding side of the classes core.models.gguf_tokenizer names (tests check them against transformers).
PADDING_SIDES = {"GemmaTokenizer": "left", "TokenizersBackend": "right"}
_TOKENIZER_SETTINGS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "add_bos_token",
                       "add_eos_token", "model_max_length", "padding_side")


def converted_tokenizer(folder: Path):
    """The tokenizer of a folder layerscope converted from GGUF, built straight from its ``tokenizer.json``.

    ``AutoTokenizer`` parses the 33 MB file in Python and then rebuilds the tokenizer from its vocabulary and
    merges (GemmaTokenizer), about 4 s of a 10 s CLI run on 2 cores; the Rust parser alone gives the same
    tokens (tests/models/test_gguf_direct.py compares the two). Other folders: None (they keep ``AutoTokenizer``).
    """
    import json

    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    if not (folder / gguf_cache.MARKER).is_file() or not (folder / "tokenizer.json").is_file():
        return None
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return None
    settings = {key: config[key] for key in _TOKENIZER_SETTINGS if key in config}
    if "padding_side" not in settings:  # the class's own default (Gemma's is left)
        name = str(config.get("tokenizer_class"))
        if name not in PADDING_SIDES:  # finding a class by name builds transformers' whole model index (~0.8 s)
            import transformers

            PADDING_SIDES[name] = getattr(getattr(transformers, name, None), "padding_side", "right")
        settings["padding_side"] = PADDING_SIDES[name]
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **settings)


# -- the parent's side ------------------------------------------------------------------------------------

_started: dict[Path, "RemoteTokenizer"] = {}


def start(spec: str) -> "RemoteTokenizer | None":
    """Start building the tokenizer of ``spec`` in a child process, if ``spec`` names a GGUF model that is
    already converted (``core.models.specs.converted_folder``); None otherwise. Imports no torch."""
    from core.models.specs import converted_folder

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cpus < 2:  # the two processes would share one core: nothing to gain
        return None
    folder = converted_folder(spec)
    if folder is None or not (folder / "tokenizer.json").is_file():
        return None
    folder = folder.resolve()
    if folder not in _started:
        _started[folder] = RemoteTokenizer(folder)
    return _started[folder]


def take(folder: Path) -> "RemoteTokenizer | None":
    """The prefetched tokenizer of ``folder``, if ``start`` began one (each is handed out once)."""
    return _started.pop(Path(folder).resolve(), None)


def _plain(value):
    """Arguments as the child can read them without torch or numpy: tensors and arrays become lists."""
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if type(value).__module__.split(".")[0] in ("torch", "numpy") and hasattr(value, "tolist"):
        return value.tolist()
    return value


class RemoteTokenizer:
    """A tokenizer answered by a child process until it is worth building here (see the module docstring)."""

    def __init__(self, folder: Path):
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the `core` package
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        state = self.__dict__
        state["_folder"] = Path(folder)
        state["_local"] = None
        state["_lock"] = threading.RLock()
        state["_calls"] = 0
        state["_attributes"] = None
        state["_process"] = subprocess.Popen(
            [sys.executable, "-m", "core.models.prefetch", str(folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        atexit.register(self._stop)

    # -- the child --

    def _stop(self) -> None:
        process = self.__dict__.get("_process")
        if process is None:
            return
        self.__dict__["_process"] = None
        try:
            process.stdin.close()  # the child exits when its input ends
            process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
        process.stdout.close()

    def _ready(self) -> bool:
        """Wait for the child's tokenizer; False when there is no child (or it failed)."""
        if self._attributes is None and self._process is not None:
            try:
                kind, payload = pickle.load(self._process.stdout)
            except Exception:
                kind, payload = "failed", None
            if kind != "ready":
                self._stop()
                return False
            self.__dict__["_attributes"] = payload
        return self._process is not None and self._local is None

    def _request(self, name: str, args: tuple = (), kwargs: dict | None = None):
        """(True, result) from the child, or (False, None) when the call is to run here."""
        kwargs = kwargs or {}
        with self._lock:
            if kwargs.get("return_tensors") or self._calls >= MAX_REMOTE_CALLS or not self._ready():
                return False, None
            self.__dict__["_calls"] += 1
            try:
                pickle.dump((name, _plain(args), _plain(kwargs)), self._process.stdin)
                self._process.stdin.flush()
                kind, payload = pickle.load(self._process.stdout)
            except Exception:  # the child is gone, or sent what cannot be read here
                self._stop()
                return False, None
            return (True, payload) if kind == "ok" else (False, None)  # an error: raised by the local call

    def materialize(self):
        """The tokenizer built in this process (built now if need be); the child is stopped."""
        with self._lock:
            if self._local is None:
                self._stop()
                local = converted_tokenizer(self._folder)
                if local is None:
                    from transformers import AutoTokenizer

                    local = AutoTokenizer.from_pretrained(self._folder)
                self.__dict__["_local"] = local
            return self._local

    def _call(self, name: str, *args, **kwargs):
        answered, result = self._request(name, args, kwargs)
        if answered:
            return result
        return getattr(self.materialize(), name)(*args, **kwargs)

    # -- the tokenizer's interface --

    def __call__(self, *args, **kwargs):
        return self._call("__call__", *args, **kwargs)

    def __len__(self) -> int:
        return self._call("__len__")

    def __bool__(self) -> bool:  # a tokenizer always has a vocabulary; `if tokenizer:` must not wait for the child
        return True

    def __getattr__(self, name: str):  # only for names not found on this object
        if "_folder" not in self.__dict__:  # not initialised (copy, unpickling): no tokenizer behind it
            raise AttributeError(name)
        if name.startswith("__") or self._local is not None:
            return getattr(self.materialize(), name)
        if name in _REMOTE_METHODS:
            return lambda *args, **kwargs: self._call(name, *args, **kwargs)
        with self._lock:
            ready = self._ready()
        if ready and name in self._attributes:
            value = self._attributes[name]
            if value == _MISSING:
                raise AttributeError(name)
            return value
        return getattr(self.materialize(), name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.materialize(), name, value)

    def __reduce__(self):
        return self.materialize().__reduce__()

    def __repr__(self) -> str:
        where = "here" if self._local is not None else f"in process {getattr(self._process, 'pid', '?')}"
        return f"RemoteTokenizer({str(self._folder)!r}, built {where})"


# -- the child's side -------------------------------------------------------------------------------------


def _serve(folder: str) -> None:
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but replies on the pipe
    if hasattr(os, "nice"):  # on a busy machine the parent's imports go first: the tokenizer has seconds to spare
        os.nice(10)
    try:
        tokenizer = converted_tokenizer(Path(folder))
        if tokenizer is None:
            raise ValueError(f"{folder} is not a converted GGUF folder")
        attributes = {}
        for name in _ATTRIBUTES:
            value = getattr(tokenizer, name, _MISSING)
            attributes[name] = value if isinstance(value, (str, int, float, bool, list, type(None))) else _MISSING
    except Exception as err:
        pickle.dump(("failed", str(err)), replies)
        replies.flush()
        return
    pickle.dump(("ready", attributes), replies)
    replies.flush()
    while True:
        try:
            name, args, kwargs = pickle.load(requests)
        except EOFError:  # the parent is done: nothing here needs the interpreter's teardown (0.3 s)
            os._exit(0)
        try:
            reply = ("ok", getattr(tokenizer, name)(*args, **kwargs))
            data = pickle.dumps(reply)
        except Exception as err:
            data = pickle.dumps(("error", repr(err)))
        replies.write(data)
        replies.flush()


if __name__ == "__main__":
    _serve(sys.argv[1])
