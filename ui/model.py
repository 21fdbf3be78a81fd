"""The shared model picker: sidebar widgets, the model loaded once per server, errors as st.error.

Pages call ``current_model()`` and ``run_safely(...)``; they never touch torch. A model is loaded by a
background job of the server (``core.models.jobs``), not inside the script run of the visitor who
asked first: that visitor may leave, every session asking for the same model waits on the same job
and sees its progress, and the handle is shared by every session; inference on it is serialized by
the handle's lock inside ``core``. (A ``st.cache_resource`` function with a progress bar written from
inside it broke every later session: Streamlit cannot replay an element created outside the function.)
"""

from __future__ import annotations

import logging
import os
import threading

import streamlit as st

from core.errors import UserError
from core.models import DEFAULT_MODEL, DEVICES, DTYPES, QUANTIZATIONS, LoadOptions, ModelHandle, embedded_models, load_model
from core.models.jobs import LoadJob, ModelLoads

log = logging.getLogger("layerscope")
CUSTOM = "other (folder, .gguf file or hub id)…"
LOADS = ModelLoads(max_models=int(os.environ.get("LAYERSCOPE_MAX_MODELS", "2")))  # one per server process
_LOAD_LOCK = threading.Lock()  # one model load at a time: two different models never load at once


def offered_models() -> list[str] | None:
    """The server's fixed list from $LAYERSCOPE_MODELS (comma-separated), or None = any spec allowed."""
    raw = os.environ.get("LAYERSCOPE_MODELS", "").strip()
    return [m.strip() for m in raw.split(",") if m.strip()] or None


def extra_choices() -> list[str]:
    """Specs the session added (e.g. a tinylm checkpoint trained on the from-scratch page)."""
    return st.session_state.setdefault("extra_models", [])


def _request(spec: str, dtype: str, quantization: str, device: str, trust_remote_code: bool) -> tuple[LoadJob, bool]:
    """The server's load job for this model (started now unless running or done)."""
    options = LoadOptions(dtype, quantization, device, trust_remote_code)

    def load(progress):
        with _LOAD_LOCK:
            return load_model(spec, options, progress=progress)  # looked up at call time (tests wrap it)

    return LOADS.request((spec, options), load)


def ndif_offered() -> bool:
    """Whether the server's operator set an NDIF key (the sidebar then offers "Run on: NDIF"; the key is never shown)."""
    return bool(os.environ.get("NDIF_API_KEY", "").strip())


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


def _load(spec: str, dtype: str, quantization: str, device: str, trust_remote_code: bool) -> ModelHandle:
    """The loaded model, waiting for its job (for code that needs the handle without a page)."""
    return _request(spec, dtype, quantization, device, trust_remote_code)[0].result()


_load.clear = LOADS.clear  # tests empty the server's models with ui.model._load.clear()


def sidebar() -> None:
    """Model, dtype, quantization and device widgets, shared by every page (state in session_state)."""
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


def model_key() -> str:
    """A string naming the current model and options, for st.cache_data keys."""
    s = st.session_state
    return "|".join(str(s.get(k)) for k in ("model_spec", "model_dtype", "model_quantization", "model_device",
                                              "model_trust_remote_code")) + ("|ndif" if on_ndif() else "")


def on_ndif() -> bool:
    """Whether the sidebar asks for the model to run on NDIF (only offered when the operator set a key)."""
    return ndif_offered() and st.session_state.get("model_run_on") == "NDIF"


def current_model() -> ModelHandle:
    """The sidebar's model, loaded (with progress the first time); stops the page with st.error if it cannot be."""
    s = st.session_state
    spec = s.get("model_spec") or DEFAULT_MODEL
    fixed = offered_models()
    if fixed is not None and spec not in fixed:
        st.error(f"This server offers only: {', '.join(fixed)}.")
        st.stop()
    if not spec:
        st.info("Type a model folder, .gguf file or hub id in the sidebar.")
        st.stop()
    if on_ndif():
        handle = _wait_job(spec, *_request_ndif(spec))
        info = handle.summary()
        st.sidebar.caption(f"{info['architecture']} · {info['n_layers']} layers × {info['n_heads']} heads · "
                           f"d={info['d_model']} · on NDIF (only reduced statistics come back)")
        return handle
    # A server with a fixed model list never runs model code: the checkbox is hidden and its state ignored.
    trust_remote_code = fixed is None and bool(s.get("model_trust_remote_code", False))
    handle = _wait(spec, s.get("model_dtype", "auto"), s.get("model_quantization", "none"),
                   s.get("model_device", "auto"), trust_remote_code)
    info = handle.summary()
    st.sidebar.caption(
        f"{info['architecture']} · {info['n_layers']} layers × {info['n_heads']} heads · d={info['d_model']} · "
        f"{info['dtype']} on {info['device']} · {info['memory_mb']:.0f} MB"
    )
    return handle


def _wait(spec: str, dtype: str, quantization: str, device: str, trust_remote_code: bool) -> ModelHandle:
    """The model, showing its load's progress (shared with every session waiting for it); errors stop the page."""
    return _wait_job(spec, *_request(spec, dtype, quantization, device, trust_remote_code))


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


def model_choices() -> list[str]:
    """The models this server lets a session pick (for a second model beside the first)."""
    return offered_models() or (embedded_models() or [DEFAULT_MODEL]) + extra_choices()


def other_model(spec: str) -> ModelHandle:
    """A second model (same precision and device options as the sidebar's), loaded like the first."""
    s = st.session_state
    if spec not in model_choices():
        st.error(f"'{spec}' is not one of the models this server offers: {', '.join(model_choices())}.")
        st.stop()
    trust_remote_code = offered_models() is None and bool(s.get("model_trust_remote_code", False))
    return _wait(spec, s.get("model_dtype", "auto"), s.get("model_quantization", "none"), s.get("model_device", "auto"),
                 trust_remote_code)


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
