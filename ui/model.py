"""The shared model picker: sidebar widgets, the model loaded once per server, errors as st.error.

Pages never touch torch and never wait for a model they do not need: ``chosen_model()`` says which model the
sidebar names (no load), ``loaded_model()`` gives it only if it is loaded already, ``current_model()`` waits for
it (with progress). A model is loaded by a background job of the server (``core.models.jobs``), not inside the
script run of the visitor who asked first: that visitor may leave, every session asking for the same model
waits on the same job and sees its progress, and the handle is shared by every session; inference on it is
serialized by the handle's lock inside ``core``. (A ``st.cache_resource`` function with a progress bar written
from inside it broke every later session: Streamlit cannot replay an element created outside the function.)

When a load finishes, the server remembers the model's fingerprint per spec and options
(``core.results.models``): a stored result can then be found after a restart before the model is loaded again.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.errors import UserError
from core.models import DEFAULT_MODEL, DEVICES, DTYPES, QUANTIZATIONS, LoadOptions, ModelHandle, embedded_models, load_model
from core.models.jobs import LoadJob, ModelLoads
from ui.links import link_state

log = logging.getLogger("layerscope")
CUSTOM = "other (folder, .gguf file or hub id)…"
LOADS = ModelLoads(max_models=int(os.environ.get("LAYERSCOPE_MAX_MODELS", "2")))  # one per server process
_LOAD_LOCK = threading.Lock()  # one model load at a time: two different models never load at once
DEFAULT_OPTIONS = {"dtype": "auto", "quantization": "none", "device": "auto"}


@dataclass(frozen=True)
class ModelChoice:
    """The model a session's sidebar names, and how to load it (nothing is loaded by making one)."""

    spec: str
    dtype: str = "auto"
    quantization: str = "none"
    device: str = "auto"
    trust_remote_code: bool = False
    ndif: bool = False

    @property
    def key(self) -> str:
        """Spec and load options as one string: what sessions, links and the fingerprint memo key on."""
        parts = [self.spec, self.dtype, self.quantization, self.device] + (["trust"] if self.trust_remote_code else [])
        return "|".join(parts) + ("|ndif" if self.ndif else "")

    def params(self) -> dict[str, list[str]]:
        """The model's part of a page's link."""
        out = {"model": [self.spec]}
        for name, default in DEFAULT_OPTIONS.items():
            if getattr(self, name) != default:
                out[name] = [getattr(self, name)]
        if self.ndif:
            out["backend"] = ["ndif"]
        return out


def offered_models() -> list[str] | None:
    """The server's fixed list from $LAYERSCOPE_MODELS (comma-separated), or None = any spec allowed."""
    raw = os.environ.get("LAYERSCOPE_MODELS", "").strip()
    return [m.strip() for m in raw.split(",") if m.strip()] or None


def extra_choices() -> list[str]:
    """Specs the session added (e.g. a tinylm checkpoint trained on the from-scratch page)."""
    return st.session_state.setdefault("extra_models", [])


def model_choices() -> list[str]:
    """The models this server lets a session pick (for a second model beside the first)."""
    return offered_models() or (embedded_models() or [DEFAULT_MODEL]) + extra_choices()


def ndif_offered() -> bool:
    """Whether the server's operator set an NDIF key (the sidebar then offers "Run on: NDIF"; the key is never shown)."""
    return bool(os.environ.get("NDIF_API_KEY", "").strip())


def on_ndif() -> bool:
    """Whether the sidebar asks for the model to run on NDIF (only offered when the operator set a key)."""
    return ndif_offered() and st.session_state.get("model_run_on") == "NDIF"


# -- loads ---------------------------------------------------------------------------------------------------


def _remember(key: str, handle: ModelHandle) -> None:
    """Note the loaded model's fingerprint (and what pages need to know of it) for lookups after a restart."""
    from core.results.models import remember

    try:
        from core.lenses import default_lens_dir

        info = {name: handle.summary()[name] for name in ("architecture", "n_layers", "n_heads", "d_model", "vocab_size")}
        info["lens_dir"] = str(default_lens_dir(handle))
        remember(key, handle.fingerprint(), info)
    except Exception:  # noqa: BLE001 - a model without a fingerprint (NDIF) is simply never looked up early
        log.debug("no fingerprint remembered for %s", key, exc_info=True)


def _request(spec: str, dtype: str, quantization: str, device: str, trust_remote_code: bool) -> tuple[LoadJob, bool]:
    """The server's load job for this model (started now unless running or done)."""
    options = LoadOptions(dtype, quantization, device, trust_remote_code)
    key = ModelChoice(spec, dtype, quantization, device, trust_remote_code).key

    def load(progress):
        with _LOAD_LOCK:
            handle = load_model(spec, options, progress=progress)  # looked up at call time (tests wrap it)
        _remember(key, handle)
        return handle

    return LOADS.request((spec, options), load)


def _request_ndif(spec: str) -> tuple[LoadJob, bool]:
    """The server's job building the NDIF handle of ``spec``: NDIF checked (key, reachability, model running,
    within seconds), then the model's config and tokenizer read, its weights left on the meta device."""

    def load(progress):
        from core.backends import check_ndif, ndif_handle

        progress(0.1, "asking NDIF whether it runs this model")
        check_ndif(spec)
        progress(0.5, "reading the model's config and tokenizer")
        return ndif_handle(spec)

    return LOADS.request((spec, "ndif"), load)


def _job(choice: ModelChoice) -> tuple[LoadJob, bool]:
    if choice.ndif:
        return _request_ndif(choice.spec)
    return _request(choice.spec, choice.dtype, choice.quantization, choice.device, choice.trust_remote_code)


def _load(spec: str, dtype: str, quantization: str, device: str, trust_remote_code: bool) -> ModelHandle:
    """The loaded model, waiting for its job (for code that needs the handle without a page)."""
    return _request(spec, dtype, quantization, device, trust_remote_code)[0].result()


_load.clear = LOADS.clear  # tests empty the server's models with ui.model._load.clear()


# -- the sidebar ---------------------------------------------------------------------------------------------


def _apply_link() -> None:
    """A link being opened sets the model picker (before it is drawn); a model this server does not offer refuses
    the link with a line naming the model it needs."""
    link = link_state()
    raw = link.value("model")
    if not link.fresh or not raw or not raw[0]:
        return
    spec, s = raw[0], st.session_state
    fixed = offered_models()
    choices = fixed or (embedded_models() or [DEFAULT_MODEL]) + extra_choices()
    known = spec in choices or (fixed is None and spec not in _embedded_names())
    if not known:
        link.reject(f"it was made with the model '{spec}', which this server does not offer "
                    f"(it offers: {', '.join(choices)})")
        return
    for name, allowed in (("dtype", DTYPES), ("quantization", QUANTIZATIONS), ("device", DEVICES)):
        value = (link.value(name) or [DEFAULT_OPTIONS[name]])[0]
        if value not in allowed:
            link.reject(f"{name} cannot be '{value[:40]}' (choose one of {', '.join(allowed)})")
            return
        s[f"model_{name}"] = value
    s["model_choice"], s["model_spec"] = (spec, spec) if spec in choices else (CUSTOM, spec)
    if spec not in choices:
        s["model_custom"] = spec
    if ndif_offered():
        s["model_run_on"] = "NDIF" if (link.value("backend") or [""])[0] == "ndif" else "this machine"


def _embedded_names() -> set[str]:
    from core.models.specs import EMBEDDED

    return set(EMBEDDED)


def sidebar() -> None:
    """Model, dtype, quantization and device widgets, shared by every page (state in session_state)."""
    _apply_link()
    with st.sidebar:
        st.header("Model")
        fixed = offered_models()
        choices = fixed or (embedded_models() or [DEFAULT_MODEL]) + extra_choices() + [CUSTOM]
        choice = st.selectbox("Model", choices, key="model_choice", help="Embedded models need no network.")
        if choice == CUSTOM:
            spec = st.text_input("Model folder, .gguf file or hub id", key="model_custom",
                                 placeholder="/models/Llama-2-7b-hf").strip()
        else:
            spec = choice
        with st.expander("Precision and device"):
            st.selectbox("dtype", DTYPES, key="model_dtype")
            st.selectbox("Quantization", QUANTIZATIONS, key="model_quantization",
                         help="8-bit / 4-bit NF4 through bitsandbytes")
            st.selectbox("Device", DEVICES, key="model_device")
            if ndif_offered():  # only when the operator set a key; the key is never shown
                st.radio("Run on", ("this machine", "NDIF"), key="model_run_on", horizontal=True,
                         help="NDIF runs models it hosts (a hub id such as meta-llama/Llama-3.1-70B) remotely; only "
                              "reduced statistics come back: the lens at chosen positions, translation, the head "
                              "sweep. Precision and device are NDIF's.")
            if fixed is None:
                st.checkbox("Trust remote code", key="model_trust_remote_code",
                            help="Runs code shipped with the model. Only for models whose authors you trust.")
        st.session_state["model_spec"] = spec


def chosen_model() -> ModelChoice:
    """The model the sidebar names, and its options (nothing is loaded)."""
    s = st.session_state
    spec = s.get("model_spec") or DEFAULT_MODEL
    if on_ndif():
        return ModelChoice(spec, ndif=True)
    # A server with a fixed model list never runs model code: the checkbox is hidden and its state ignored.
    trust = offered_models() is None and bool(s.get("model_trust_remote_code", False))
    return ModelChoice(spec, s.get("model_dtype", "auto"), s.get("model_quantization", "none"), s.get("model_device", "auto"),
                       trust)


def model_key() -> str:
    """A string naming the current model and options (sessions compare results' requests with it)."""
    return chosen_model().key


def _refusal(choice: ModelChoice) -> str | None:
    fixed = offered_models()
    if fixed is not None and choice.spec not in fixed:
        return f"This server offers only: {', '.join(fixed)}."
    return None


def loaded_model(choice: ModelChoice | None = None) -> ModelHandle | None:
    """The model if it is loaded already (its load is started otherwise, and None returned at once)."""
    choice = choice or chosen_model()
    if _refusal(choice) or not choice.spec:
        return None
    job, _ = _job(choice)
    return job.handle if job.done and job.error is None else None


def current_model() -> ModelHandle:
    """The sidebar's model, loaded (with progress the first time); stops the page with st.error if it cannot be."""
    choice = chosen_model()
    refusal = _refusal(choice)
    if refusal:
        st.error(refusal)
        st.stop()
    if not choice.spec:
        st.info("Type a model folder, .gguf file or hub id in the sidebar.")
        st.stop()
    return _wait_job(choice.spec, *_job(choice))


def model_info(choice: ModelChoice | None = None) -> dict | None:
    """Layers, heads, d_model… of the model, from the loaded handle or from when it was last loaded here (None
    if never): enough for widgets' ranges without waiting for a load."""
    from core.results.models import recall

    choice = choice or chosen_model()
    handle = loaded_model(choice)
    if handle is not None:
        return handle.summary()
    remembered = recall(choice.key)
    return remembered["info"] if remembered else None


def model_status() -> None:
    """Under the picker: the loaded model in one line, or its load's progress, live while the page does not wait
    for it (a stored result is on screen meanwhile); a finished load reruns the page once."""
    choice = chosen_model()
    if _refusal(choice) or not choice.spec:
        return
    job, started_here = _job(choice)
    with st.sidebar:
        if job.done:
            _loaded_caption(job)
            return
        who = "" if started_here else " (asked for by another session first)"

        @st.fragment(run_every=0.5)
        def loading():
            ctx = get_script_run_ctx()
            if job.done:
                st.rerun(scope="app")  # the page confirms results shown before the load and enables its widgets
            text = (f"Loading {choice.spec}{who}: {job.message} · {job.seconds:.0f} s. "
                    "It runs on the server: leaving this page does not stop it.")
            if ctx is not None and ctx.fragment_ids_this_run:  # a rerun of this fragment: the page is not waiting
                st.progress(job.fraction, text=text)
            else:  # the page's own run, which may wait for the model with a bar of its own
                st.caption(f"Loading {choice.spec}{who}…")

        loading()


def _loaded_caption(job: LoadJob) -> None:
    if job.error is not None:
        st.caption("The model could not be loaded (see the page).")
        return
    info = job.handle.summary()
    where = "on NDIF (only reduced statistics come back)" if info.get("backend") == "ndif" else (
        f"{info['dtype']} on {info['device']} · {info['memory_mb']:.0f} MB")
    st.caption(f"{info['architecture']} · {info['n_layers']} layers × {info['n_heads']} heads · d={info['d_model']} · {where}")


def _wait_job(spec: str, job: LoadJob, started_here: bool) -> ModelHandle:
    """A load job's model, showing its progress; its errors become one st.error line and stop the page."""
    placeholder = st.empty()
    if not job.wait(0.2):
        who = "" if started_here else " (asked for by another session first)"
        while not job.wait(0.5):
            placeholder.progress(job.fraction, text=f"Loading {spec}{who}: {job.message} · {job.seconds:.0f} s. "
                                 "It runs on the server: leaving this page does not stop it.")
    try:
        handle = job.result()
    except UserError as err:
        placeholder.empty()
        st.error(f"Could not load the model: {err}")
        st.stop()
    except Exception as err:  # noqa: BLE001 - a load failure must not put a traceback on screen
        placeholder.empty()
        st.error(f"Could not load the model '{spec}': {type(err).__name__}: {err}")
        st.stop()
    placeholder.empty()
    return handle


def other_model(spec: str) -> ModelHandle:
    """A second model (same precision and device options as the sidebar's), loaded like the first."""
    if spec not in model_choices():
        st.error(f"'{spec}' is not one of the models this server offers: {', '.join(model_choices())}.")
        st.stop()
    c = chosen_model()
    return _wait_job(spec, *_request(spec, c.dtype, c.quantization, c.device, c.trust_remote_code))


def other_choice(spec: str) -> ModelChoice:
    c = chosen_model()
    return ModelChoice(spec, c.dtype, c.quantization, c.device, c.trust_remote_code)


def run_safely(fn, *args, **kwargs):
    """Run a core call; a UserError becomes st.error, anything else an st.error naming the bug. Stops the page on failure."""
    try:
        return fn(*args, **kwargs)
    except UserError as err:
        st.error(str(err))
    except MemoryError:
        st.error("Out of memory: try fewer prompts, a shorter prompt or a smaller model.")
    except Exception as err:  # noqa: BLE001
        if type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower():  # torch's, any device
            st.error("The device ran out of memory during this analysis: try fewer prompts or a smaller batch. "
                     "The app keeps serving.")
        elif on_ndif():  # the model's weights are not here: an analysis reaching for them fails oddly
            log.exception("analysis failed on NDIF")
            st.error("This needs residual streams, weights or gradients, which NDIF does not bring back (it runs the "
                     "logit lens at chosen positions, translation and the sequence head sweep): choose Run on: this "
                     "machine.")
        else:
            log.exception("analysis failed")
            st.error(f"Unexpected error ({type(err).__name__}: {err}). This is a bug; please report it.")
    st.stop()
