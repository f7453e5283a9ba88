"""Dialects defined by qtrain, registered lazily like xDSL's `get_all_dialects()`, and loading qtrain IR."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.ir import Dialect
from xdsl.parser import Parser
from xdsl.utils.exceptions import DiagnosticException, ParseError, VerifyException

from qtrain.errors import UserError


class ModelLoadError(UserError):
    """A model file is missing, does not parse, or does not verify."""


def get_all_dialects() -> dict[str, Callable[[], Dialect]]:
    def get_qtrain() -> Dialect:
        from qtrain.dialects.qtrain import Qtrain

        return Qtrain

    return {"qtrain": get_qtrain}


def make_context() -> Context:
    """A context with every dialect qtrain IR uses (builtin, func, qtrain)."""
    from qtrain.dialects.qtrain import Qtrain

    ctx = Context()
    ctx.load_dialect(Builtin)
    ctx.load_dialect(Func)
    ctx.load_dialect(Qtrain)
    return ctx


def load_module(path_or_text: str | os.PathLike[str]) -> ModuleOp:
    """Parse and verify a qtrain module given as a path or as IR text.

    A `str` containing `{` or a newline is IR text (every module has a body); anything else is a path.
    """
    if isinstance(path_or_text, str) and ("{" in path_or_text or "\n" in path_or_text):
        text, name = path_or_text, "<string>"
    else:
        path = Path(path_or_text)
        try:
            text = path.read_text()
        except OSError as e:
            raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise ModelLoadError(f"{path} is not a text (.mlir) file: {e.reason} at byte {e.start}") from e
        name = str(path)
    try:
        module = Parser(make_context(), text, name).parse_module()
    except ParseError as e:
        raise ModelLoadError(f"{name}: parse error: {_first_line(str(e))}") from e
    except Exception as e:  # xDSL raises assorted errors for malformed attributes
        raise ModelLoadError(f"{name}: parse error: {_first_line(str(e)) or type(e).__name__}") from e
    try:
        module.verify()
    except (VerifyException, DiagnosticException) as e:
        raise ModelLoadError(f"{name}: verification failed: {_first_line(str(e))}") from e
    return module


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
