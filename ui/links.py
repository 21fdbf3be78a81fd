"""A page's inputs, in the sidebar and in its URL: a link reopens the same widgets and the same results, in any
browser, for anyone, after a restart.

URL format (written when a Run button is pressed; read when a session meets a URL it has not seen)::

    /<page>?model=gemma-3-270m&prompt=The+capital+of&top_k=5&attribute.target=+Paris&run=lens,attribute

- one parameter per widget whose value differs from its default, named by the widget's ``name``; the widgets
  of a page's later sections (attribution, side by side, circuit search…) carry the section's name as a prefix;
- a multiselect repeats its parameter (an empty selection is ``name=``); a checkbox is ``1`` or ``0``; an
  uploaded file is the id under which the server kept it (``$LAYERSCOPE_HOME/uploads/<id>/``);
- ``run``: the sections whose results the page showed; the link shows them again (read from the store when that
  exact result was computed on this server, else computed again);
- ``model`` (and ``dtype``, ``quantization``, ``device``, ``backend`` when not their defaults): the sidebar's model.

A link's values are checked as the widgets check them (a number within its slider's range, a choice among its
options, text under ``MAX_TEXT`` characters), then the page's ``Settings.validate()`` checks them as it checks
typed settings: anything refused gives one line saying why, and the page's default widgets.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlencode

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from ui.uploads import Upload, keep_upload, read_upload

MAX_TEXT = 20_000  # characters of one text field in a link (a prompt's own cap, in tokens, is checked by the analysis)
RUN = "run"
MODEL_PARAMS = ("model", "dtype", "quantization", "device", "backend")
_MESSAGE = "_link_message"  # a refused link's one line, shown on the run after the reset


class LinkProblem(ValueError):
    """A value in a link that its widget could not hold (the message names what was expected)."""


@dataclass
class LinkState:
    """What this script run does with the URL (one per run, shared by the sidebar and every section)."""

    params: dict[str, list[str]]
    fresh: bool  # a URL this session has not applied yet: every widget takes its value from it
    armed: set[str] = field(default_factory=set)  # sections whose results the link shows
    rejected: str | None = None  # why the link cannot be used (its widgets then take their defaults)

    def value(self, name: str) -> list[str] | None:
        return self.params.get(name)

    def reject(self, message: str) -> None:
        """Refuse the link: one line on screen, the page's defaults, nothing shown from it."""
        self.rejected = self.rejected or message
        self.armed = set()
        st.session_state[_MESSAGE] = message


def link_state() -> LinkState:
    """This run's LinkState (computed once per script run)."""
    ctx = get_script_run_ctx()
    token = ctx.cursors if ctx is not None else None  # a new dict every run: identifies the run
    held = st.session_state.get("_link_run")
    if held is not None and token is not None and held[0] is token:
        return held[1]
    params = {k: st.query_params.get_all(k) for k in st.query_params}
    seen = st.session_state.get("_link_seen")
    fresh = bool(params) and params != seen
    state = LinkState(params, fresh)
    if fresh:
        state.armed = {s for s in (params.get(RUN) or [""])[0].split(",") if s}
        st.session_state["_link_seen"] = params
    st.session_state["_link_run"] = (token, state)
    return state


def query() -> dict[str, list[str]]:
    return {k: st.query_params.get_all(k) for k in st.query_params}


def set_query(params: dict[str, list[str]], page: str | None = None) -> None:
    """Replace the URL's query (and remember it as seen, and as this page's last link)."""
    if params != query():
        st.query_params.from_dict(params)
    st.session_state["_link_seen"] = params
    if page is not None:
        st.session_state.setdefault("_link_last", {})[page] = params


def page_url(params: dict[str, list[str]] | None = None) -> str:
    """The URL of this page (as the visitor's browser reaches it) with ``params`` (default: the current query)."""
    base = st.context.url or ""
    if re.fullmatch(r"[a-z]+://[^/?#]+", base):  # the default page: the server's root
        base += "/"
    params = query() if params is None else params
    text = urlencode([(k, v) for k, values in params.items() for v in values])
    return f"{base}?{text}" if text else base


def relative(url: str) -> str:
    """A page URL without its scheme and host (what History keeps: the server's address may change)."""
    return re.sub(r"^[a-z]+://[^/?#]+/?", "", url)


# -- the widgets' values as text -------------------------------------------------------------------------


def _number(kind: type, lo, hi, label: str) -> Callable[[list[str]], Any]:
    def parse(raw: list[str]):
        try:
            value = kind(float(raw[0])) if kind is int and re.fullmatch(r"-?\d+(\.0*)?", raw[0].strip()) else kind(raw[0])
        except (TypeError, ValueError):
            raise LinkProblem(f"{label} must be a number, got '{raw[0][:40]}'") from None
        if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise LinkProblem(f"{label} must be between {lo} and {hi}, got {raw[0][:40]}")
        return value

    return parse


def _choice(options: Sequence, label: str) -> Callable[[list[str]], Any]:
    by_text = {str(o): o for o in options}

    def parse(raw: list[str]):
        if raw[0] not in by_text:
            raise LinkProblem(f"{label} cannot be '{raw[0][:40]}' (choose one of {', '.join(list(by_text)[:8])})")
        return by_text[raw[0]]

    return parse


def _many(options: Sequence, label: str) -> Callable[[list[str]], Any]:
    one = _choice(options, label)
    return lambda raw: [one([r]) for r in raw if r != ""]


def _text(label: str) -> Callable[[list[str]], Any]:
    def parse(raw: list[str]):
        if len(raw[0]) > MAX_TEXT:
            raise LinkProblem(f"{label} is {len(raw[0]):,} characters long, more than a link may carry ({MAX_TEXT:,})")
        return raw[0]

    return parse


def _flag(label: str) -> Callable[[list[str]], Any]:
    def parse(raw: list[str]):
        if raw[0].lower() not in ("1", "0", "true", "false"):
            raise LinkProblem(f"{label} must be 1 or 0, got '{raw[0][:20]}'")
        return raw[0].lower() in ("1", "true")

    return parse


def as_text(value: Any) -> list[str]:
    """A widget's value as URL parameter values."""
    if isinstance(value, bool):
        return ["1" if value else "0"]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] or [""]
    return [str(value)]


@dataclass
class Field:
    key: str  # the widget's session_state key
    default: Any


# -- one section's inputs ----------------------------------------------------------------------------------


class Inputs:
    """The widgets of one section of a page, restored from a link and written back to it when it runs.

    ``Inputs("translation")`` is a page's main section; ``Inputs("logit_lens", "attribute")`` a later one (its
    URL parameters carry the prefix ``attribute.``). Widgets go in the sidebar inside ``with inputs.form(button):``;
    ``inputs.submitted`` says whether that button was pressed in this run."""

    def __init__(self, page: str, section: str | None = None, label: str | None = None, scope: Any = None):
        self.page, self.section = page, section or page
        self.prefix = "" if section is None else f"{section}."
        self.label = label or self.section.replace("_", " ")
        self.fields: dict[str, Field] = {}
        self.problems: list[str] = []
        self.submitted = False
        self.link = link_state()
        # View controls belong to one result: a new one (another object) brings back their defaults.
        held = st.session_state.get(f"{page}:{self.section}:scope")
        self.reset = scope is not None and held is not None and held is not scope and not self.link.fresh
        if scope is not None:
            st.session_state[f"{page}:{self.section}:scope"] = scope
        last = st.session_state.get("_link_last", {}).get(page)
        if section is None and last and not self.link.params:  # back on this page (navigation drops the query):
            set_query(last, page)  # its URL again; the widgets kept their values (persist_state="session")
        message = st.session_state.pop(_MESSAGE, None) if section is None else None
        if message:
            st.error(f"This link cannot be opened as it is: {message}. The page shows its default settings.")

    @property
    def armed(self) -> bool:
        """Whether the link opened in this run shows this section's result."""
        return self.section in self.link.armed and not self.link.rejected

    def key(self, name: str) -> str:
        return f"{self.page}:{self.prefix}{name}"

    def _take(self, name: str, default: Any, parse: Callable[[list[str]], Any]) -> str:
        """The widget's session key, its value set from the link when one is being opened."""
        key = self.key(name)
        if self.link.fresh:
            raw = None if self.link.rejected else self.link.value(self.prefix + name)
            value = default
            if raw is not None:
                try:
                    value = parse(raw)
                except LinkProblem as problem:
                    self.problems.append(str(problem))
            st.session_state[key] = value
        elif self.reset or key not in st.session_state:
            st.session_state[key] = default
        self.fields[name] = Field(key, default)
        return key

    # -- widgets: Streamlit's, keyed and restored (each returns the widget's value) --

    def text_area(self, label: str, value: str, name: str, **kw) -> str:
        return st.text_area(label, key=self._take(name, value, _text(label)), persist_state="session", **kw)

    def text_input(self, label: str, value: str, name: str, **kw) -> str:
        return st.text_input(label, key=self._take(name, value, _text(label)), persist_state="session", **kw)

    def number_input(self, label: str, min_value, max_value, value, name: str, **kw):
        parse = _number(type(value), min_value, max_value, label)
        key = self._valid(self._take(name, value, parse), lambda v: v is not None and (min_value is None or v >= min_value)
                          and (max_value is None or v <= max_value), value)
        return st.number_input(label, min_value, max_value, key=key, persist_state="session", **kw)

    def slider(self, label: str, min_value, max_value, value, name: str, **kw):
        parse = _number(type(value), min_value, max_value, label)
        key = self._valid(self._take(name, value, parse), lambda v: v is not None and min_value <= v <= max_value, value)
        return st.slider(label, min_value, max_value, key=key, persist_state="session", **kw)

    def _valid(self, key: str, ok: Callable[[Any], bool], default: Any) -> str:
        """A value kept from before that the widget cannot hold now (options changed) goes back to the default."""
        if not ok(st.session_state.get(key)):
            st.session_state[key] = default
        return key

    def select_slider(self, label: str, options: Sequence, value, name: str, **kw):
        options = list(options)
        key = self._valid(self._take(name, value, _choice(options, label)), lambda v: v in options, value)
        return st.select_slider(label, options, key=key, persist_state="session", **kw)

    def selectbox(self, label: str, options: Sequence, value, name: str, **kw):
        options = list(options)
        key = self._valid(self._take(name, value, _choice(options, label)), lambda v: v in options, value)
        return st.selectbox(label, options, key=key, persist_state="session", **kw)

    def radio(self, label: str, options: Sequence, value, name: str, **kw):
        options = list(options)
        key = self._valid(self._take(name, value, _choice(options, label)), lambda v: v in options, value)
        return st.radio(label, options, key=key, persist_state="session", **kw)

    def multiselect(self, label: str, options: Sequence, value: Sequence, name: str, **kw) -> list:
        options = list(options)
        key = self._valid(self._take(name, list(value), _many(options, label)),
                          lambda v: isinstance(v, list) and all(x in options for x in v), list(value))
        return st.multiselect(label, options, key=key, persist_state="session", **kw)

    def checkbox(self, label: str, value: bool, name: str, **kw) -> bool:
        return st.checkbox(label, key=self._take(name, bool(value), _flag(label)), persist_state="session", **kw)

    def upload(self, label: str, types: list[str], name: str, **kw) -> "Upload | None":
        """A file the server keeps (so a link can name it): the file just uploaded, or the one the link names."""
        key = self._take(name, "", _upload(label))
        file = st.file_uploader(label, type=types, key=f"{key}:file", **kw)
        seen = st.session_state.get(f"{key}:seen")
        if file is not None and seen != file.file_id:
            st.session_state[key] = keep_upload(file.name, file.getvalue())
            st.session_state[f"{key}:seen"] = file.file_id
        elif file is None and seen is not None:  # the visitor removed the file
            st.session_state[key], st.session_state[f"{key}:seen"] = "", None
        kept = read_upload(st.session_state[key]) if st.session_state[key] else None
        if kept is not None and file is None:
            st.caption(f"Using **{kept.name}** ({len(kept.data):,} bytes), kept on this server from an earlier upload.")
        return kept

    # -- the form, and the link written when it runs --

    @contextlib.contextmanager
    def form(self, button: str, title: str | None = None, expanded: bool = True, disabled: bool = False,
             key: str | None = None) -> Iterator["Inputs"]:
        """The section's widgets in a sidebar form (an expander when ``title``), its button last."""
        with st.sidebar:
            box = st.expander(title, expanded=expanded) if title else st.container()
            with box, st.form(f"{self.page}:{self.section}", border=False):
                yield self
                self.submitted = st.form_submit_button(button, type="primary", width="stretch", disabled=disabled, key=key)
        self.check()

    def check(self) -> None:
        """Refuse the link (defaults, one line, rerun) when one of its values did not fit its widget."""
        if self.problems and self.link.fresh:
            self.refuse(self.problems[0])

    def refuse(self, message: str) -> None:
        """The link's settings are refused: say why once, and rerun the page with its default widgets."""
        from ui.model import chosen_model

        self.link.reject(message)
        st.session_state["_link_seen"] = None  # the cleaned URL is applied (as defaults) on the rerun
        st.query_params.from_dict(chosen_model().params())
        st.rerun()

    def checked(self, check: Callable[[], Any]) -> Any:
        """``check()``; its UserError refuses a link being opened, or is one st.error line that stops the page."""
        from core.errors import UserError

        try:
            return check()
        except UserError as err:
            if self.link.fresh and not self.link.rejected:
                self.refuse(str(err))
            st.error(str(err))
            st.stop()

    def sync(self) -> None:
        """Write this section's widgets into the URL when they changed (view controls: no Run button)."""
        self.check()
        params = query()
        mine = {k: v for k, v in params.items() if self._mine(k)}
        if params and mine != self.params():
            set_query({**{k: v for k, v in params.items() if not self._mine(k)}, **self.params()}, self.page)

    def values(self) -> dict[str, Any]:
        return {name: st.session_state.get(f.key, f.default) for name, f in self.fields.items()}

    def params(self) -> dict[str, list[str]]:
        """This section's URL parameters (values that differ from their defaults)."""
        out = {}
        for name, f in self.fields.items():
            value = st.session_state.get(f.key, f.default)
            if value != f.default and not (isinstance(value, (list, tuple)) and list(value) == list(f.default or [])):
                out[self.prefix + name] = as_text(value)
        return out

    def link_params(self, model_params: dict[str, list[str]], shown: bool) -> dict[str, list[str]]:
        """The URL with this section's widgets and the model as they are now (``shown``: its result on screen)."""
        params = {k: v for k, v in query().items() if k not in MODEL_PARAMS and not self._mine(k)}
        return _with_run({**model_params, **params, **self.params()}, self.section, shown)

    def write(self, params: dict[str, list[str]]) -> None:
        set_query(params, self.page)

    def mark(self, shown: bool) -> None:
        """Keep the URL's ``run`` list in step with whether this section's result is on screen."""
        params = query()
        if params and (self.section in _runs(params)) != shown:
            set_query(_with_run(params, self.section, shown), self.page)

    def _mine(self, key: str) -> bool:
        if self.prefix:
            return key.startswith(self.prefix)
        return key in self.fields or (key != RUN and "." not in key and key not in MODEL_PARAMS)


def _with_run(params: dict[str, list[str]], section: str, shown: bool) -> dict[str, list[str]]:
    runs = [s for s in _runs(params) if s != section] + ([section] if shown else [])
    params = {k: v for k, v in params.items() if k != RUN}
    if runs:
        params[RUN] = [",".join(runs)]
    return params


def _runs(params: dict[str, list[str]]) -> list[str]:
    return [s for s in (params.get(RUN) or [""])[0].split(",") if s]


def _upload(label: str) -> Callable[[list[str]], Any]:
    def parse(raw: list[str]):
        if raw[0] and read_upload(raw[0]) is None:
            raise LinkProblem(f"the file this link used for '{label}' is not on this server (upload it again)")
        return raw[0]

    return parse
