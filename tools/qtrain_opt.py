"""`qtrain-opt`: xdsl-opt with the qtrain dialect, passes and targets registered.

Errors in the input (parse errors, verifier failures, bad pass pipelines or options, pass failures)
print one diagnostic on stderr and exit with status 2; `--debug` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, ParseError, UnregisteredConstructException
from xdsl.xdsl_opt_main import xDSLOptMain

from qtrain.dialects import get_all_dialects
from qtrain.errors import UserError
from qtrain.transforms import get_all_passes


class QtrainOptMain(xDSLOptMain):
    version_format = "qtrain-opt (xdsl {xdsl_version})"

    def register_all_dialects(self) -> None:
        super().register_all_dialects()
        for name, factory in get_all_dialects().items():
            if name not in self.ctx.registered_dialect_names:
                self.ctx.register_dialect(name, factory)

    def register_all_passes(self) -> None:
        super().register_all_passes()
        for name, factory in get_all_passes().items():
            self.register_pass(name, factory)

    def register_all_targets(self) -> None:
        super().register_all_targets()

        def c_target():  # noqa: ANN202
            from qtrain.lowering.emit_c import CTarget

            return CTarget

        self.available_targets["c"] = c_target

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        super().register_all_arguments(arg_parser)
        arg_parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
        arg_parser.formatter_class = argparse.RawDescriptionHelpFormatter
        arg_parser.epilog = qtrain_pass_summary()


def qtrain_pass_summary() -> str:
    """One line per qtrain pass (name, options, first docstring line) for `--help`."""
    lines = ["qtrain passes (use with -p 'name{option=value ...}'):"]
    for name, factory in get_all_passes().items():
        pass_class = factory()
        options = " ".join(f"{f.name.replace('_', '-')}=..." for f in dataclasses.fields(pass_class))
        doc = (pass_class.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name}{'{' + options + '}' if options else ''}\n      {doc}")
    return "\n".join(lines)


USER_ERRORS = (
    ParseError,
    DiagnosticException,
    ArgSpecParseError,
    UnregisteredConstructException,
    UserError,
    ValueError,
    KeyError,
    OSError,
)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        QtrainOptMain(description="qtrain optimizer driver (xdsl-opt with the qtrain dialect and passes)",
                      args=args).run()
    except USER_ERRORS as e:
        if "--debug" in args:
            raise
        print(f"qtrain-opt: error: {describe_error(e)}", file=sys.stderr)
        sys.exit(2)


def describe_error(e: BaseException) -> str:
    """The exception's message, plus the offending op's line when the verifier pointed at one."""
    message = str(e).strip() or type(e).__name__
    notes: list[str] = getattr(e, "__notes__", [])
    lines = "\n".join(notes).splitlines()
    for i, line in enumerate(lines):
        if i > 0 and line.lstrip().startswith("^^^"):
            message += f"\n  at: {lines[i - 1].strip()}"
            break
    return message


if __name__ == "__main__":
    main()
