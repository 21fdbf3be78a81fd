"""Moved to core.cli (kept while commands move into their analysis packages)."""

from core.cli import add_model_arguments, load_from_args, progress_of  # noqa: F401
