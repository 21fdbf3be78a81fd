"""The ``python -m core …`` line that recomputes a result: built from the analysis command's own parser.

Every option of ``core/analyses/<name>/command.py`` whose ``dest`` is a field of the Settings (or is mapped
to one in ``RENAMED``) says that field; an option is written when the field's value differs from the
option's default, or when the option is required. A field that differs from its default and that no option
says is named in a trailing comment, so the line never claims more than it does.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shlex
from pathlib import PurePath
from typing import Any

# Options whose dest is not the field's name: analysis -> {field: dest}.
RENAMED = {"quanta": {"n_clusters": "clusters"}, "arithmetic": {"lo": "min", "hi": "max"}}
# Fields the command does not need to say: its JSON is the same whatever they are.
UNSAID = {"lens": {"all_positions"}}
MODEL_OPTIONS = ("dtype", "quantization", "device", "backend")


def command_parser(analysis: str) -> tuple[str, argparse.ArgumentParser]:
    """(the subcommand's name, its parser) for ``core/analyses/<analysis>/command.py``."""
    module = importlib.import_module(f"core.analyses.{analysis}.command")
    parser = argparse.ArgumentParser(prog=f"python -m core {module.NAME}", add_help=False)
    module.add_arguments(parser)
    return module.NAME, parser


def cli_command(analysis: str, settings: Any, model_spec: str, model_options: dict | None = None) -> str:
    """``python -m core <command> --model SPEC --flag value …`` for these settings (see the module docstring)."""
    name, parser = command_parser(analysis)
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    defaults = {f.name: _default(f) for f in dataclasses.fields(settings)}
    dest_of = {field: RENAMED.get(analysis, {}).get(field, field) for field in fields}
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    words = ["python", "-m", "core", name, "--model", model_spec]
    for option, value in (model_options or {}).items():
        action = actions.get(option)
        if action is not None and value is not None and value != action.default:
            words += _flag(action, value)
    unsaid = []
    for field, value in fields.items():
        action = actions.get(dest_of[field])
        if action is None or field in MODEL_OPTIONS:
            if field not in UNSAID.get(analysis, set()) and not _same(value, defaults[field]):
                unsaid.append(field)
            continue
        if action.required or not _same(value, action.default):
            said = _flag(action, value)
            if said is None:
                unsaid.append(field)
            else:
                words += said
    line = " ".join(shlex.quote(w) for w in words)
    return line + (f"  # not said by any option: {', '.join(unsaid)}" if unsaid else "")


def _flag(action: argparse.Action, value: Any) -> list[str] | None:
    """The words that set ``action`` to ``value``, or None where no words can."""
    flag = max(action.option_strings, key=len)  # the long form
    if isinstance(action, argparse._StoreTrueAction):
        return [flag] if value is True else ([] if value is False else None)
    if isinstance(action, argparse._StoreFalseAction):
        return [flag] if value is False else ([] if value is True else None)
    if value is None:
        return None
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        items = [_text(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        if not items:
            return [] if action.nargs == "*" else None
        if any(i.startswith("-") and not _number(i) for i in items):  # would read as options
            return None
        return [flag, *items]
    text = _text(value)
    return [f"{flag}={text}"] if text.startswith("-") and not _number(text) else [flag, text]


def _text(value: Any) -> str:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _same(value: Any, default: Any) -> bool:
    normal = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731 - nargs options give lists
    return normal(value) == normal(default)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING
