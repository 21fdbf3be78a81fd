"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """Bad input or an impossible request, with a message that says what to fix.

    The CLI prints it as one line to stderr and exits 2; the app shows it with
    ``st.error``. Anything else escaping ``core`` is a bug.
    """


def read_text(path, what: str = "text", hint: str = "give a plain text file") -> str:
    """A file's UTF-8 text, or one ``UserError`` naming the file (missing, or not UTF-8: ``hint`` says what to do)."""
    from pathlib import Path

    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start} is invalid): {hint}") from None
