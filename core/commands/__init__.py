"""Commands over no one analysis (``python -m core results …``): each module here with ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> dict`` is a subcommand, found by ``core.cli`` like an analysis's
``command.py``."""
