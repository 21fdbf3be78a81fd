"""`python -m core`: the CLI as a process of its own (see core.cli)."""

from core.cli import exit_without_teardown, main

exit_without_teardown(main(prefetch=True))
