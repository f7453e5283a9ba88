"""Dialects defined by qtrain, registered lazily like xDSL's `get_all_dialects()`, and loading qtrain IR."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, DenseIntOrFPElementsAttr, IntegerType, ModuleOp, TensorType
from xdsl.dialects.func import Func
from xdsl.ir import Attribute, Block, Dialect, Operation, SSAValue
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
    check_text(text, name)
    try:
        module = Parser(make_context(), text, name).parse_module()
    except ParseError as e:
        raise ModelLoadError(f"{name}: parse error: {_first_line(str(e))}") from e
    except Exception as e:  # xDSL raises assorted errors for malformed attributes
        raise ModelLoadError(f"{name}: parse error: {_first_line(str(e)) or type(e).__name__}") from e
    try:
        verify_sizes(module)
        module.verify()
        verify_dominance(module)
    except (VerifyException, DiagnosticException) as e:
        raise ModelLoadError(f"{name}: verification failed: {_first_line(str(e))}") from e
    return module


MAX_TENSOR_BYTES = 1 << 30
"""The largest tensor qtrain IR may declare (1 GiB): far above anything a microcontroller trains, and
below the int32 element counts the kernels index with. A larger shape (a typo, a hostile file) is
refused before any pass, the interpreter or the C emitter allocates it."""


def tensor_bytes(t: Attribute) -> int | None:
    """Bytes of a ranked tensor type with static dimensions, else None."""
    if not isinstance(t, TensorType):
        return None
    shape = t.get_shape()
    if any(d < 0 for d in shape):
        return None
    element = t.element_type
    width = element.width.data if isinstance(element, IntegerType) else getattr(element, "bitwidth", 32)
    return math.prod(shape) * max(1, (width + 7) // 8)


_SHAPED_TYPE = re.compile(r"\b(?:tensor|vector|memref)<((?:\d+x)+)")


def check_declared_sizes(text: str, name: str) -> None:
    """Refuses IR text declaring a shaped type above MAX_TENSOR_BYTES before it is parsed: xDSL's parser
    expands a splat `dense<1> : tensor<3000000000xi32>` into a list of that many values."""
    for match in _SHAPED_TYPE.finditer(text):
        dims = [int(d) for d in match[1].split("x") if d]
        if math.prod(dims) > MAX_TENSOR_BYTES:
            line = text.count("\n", 0, match.start()) + 1
            raise ModelLoadError(f"{name}:{line}: a type of shape {'x'.join(map(str, dims))} has more elements than "
                                 f"the {MAX_TENSOR_BYTES >> 20} MB a qtrain tensor may have")


def check_string_literals(text: str, name: str) -> None:
    """Refuses a string literal that does not end on its line. xDSL 0.74 lexes strings with a regex that
    backtracks exponentially when the closing quote is missing (a 40-character hex literal cut short
    takes hours); this linear scan finds the same error first. Comments (`//` to the end of the line)
    are skipped."""
    line, i, n = 1, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] in "\n\v\f":
                    raise ModelLoadError(f"{name}:{line}: a string literal does not end on its line")
                i += 2 if text[i] == "\\" else 1
            if i >= n:
                raise ModelLoadError(f"{name}:{line}: a string literal does not end before the end of the file")
        i += 1


def check_text(text: str, name: str) -> None:
    """What must hold of IR text before xDSL parses it (check_declared_sizes, check_string_literals)."""
    check_string_literals(text, name)
    check_declared_sizes(text, name)


def verify_sizes(op: Operation) -> None:
    """No tensor (result, argument, or attribute value such as a parameter's) above MAX_TENSOR_BYTES."""
    for inner in op.walk():
        types = [r.type for r in inner.results]
        types += [a.type for region in inner.regions for block in region.blocks for a in block.args]
        types += [attr.get_type() for attr in inner.attributes.values() if isinstance(attr, DenseIntOrFPElementsAttr)]
        types += [attr.get_type() for attr in inner.properties.values() if isinstance(attr, DenseIntOrFPElementsAttr)]
        for t in types:
            size = tensor_bytes(t)
            if size is not None and size > MAX_TENSOR_BYTES:
                raise VerifyException(f"{inner.name}: {t} is {size} bytes, more than the {MAX_TENSOR_BYTES >> 20} MB "
                                      f"a qtrain tensor may have")


def _describe(value: SSAValue) -> str:
    return f"%{value.name_hint}" if value.name_hint else f"a result of {getattr(value.owner, 'name', 'an op')}"


def verify_dominance(op: Operation) -> None:
    """Every operand is defined before its use: earlier in the same block, or in (or as an argument of) an
    enclosing block before the op holding the region. xDSL's `verify()` does not check this (MLIR's does),
    and IR using a value before defining it would crash whatever runs it. VerifyException otherwise."""
    _verify_block_uses(op, set())


def _verify_block_uses(op: Operation, visible: set[SSAValue]) -> None:
    for region in op.regions:
        for block in region.blocks:
            _verify_block(block, set(visible))


def _verify_block(block: Block, visible: set[SSAValue]) -> None:
    visible.update(block.args)
    for inner in block.ops:
        for operand in inner.operands:
            if operand not in visible:
                where = "before it is defined" if _defined_later(operand, inner) else "where it is not visible"
                raise VerifyException(f"{inner.name}: operand {_describe(operand)} is used {where}")
        _verify_block_uses(inner, visible)
        visible.update(inner.results)


def _defined_later(value: SSAValue, user: Operation) -> bool:
    owner = value.owner
    return isinstance(owner, Operation) and owner.parent_block() is user.parent_block()


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""
