"""`qtrain-opt`: xdsl-opt with the qtrain dialect, passes and targets registered.

Errors in the input (parse errors, verifier failures, bad pass pipelines or options, pass failures)
print one diagnostic on stderr and exit with status 2; `--debug` shows the Python traceback instead.
`-o FILE` is written only when the run succeeds, and never over the input.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from collections.abc import Sequence
from typing import IO

from xdsl.dialects.builtin import ModuleOp
from xdsl.xdsl_opt_main import xDSLOptMain

from qtrain.dialects import check_text, get_all_dialects, verify_dominance, verify_sizes
from qtrain.errors import UserError
from qtrain.tools.plumbing import UsageError, check_output, describe_error, run_tool, write_text
from qtrain.transforms import get_all_passes


class DeferredOutput(io.StringIO):
    """The -o file's text, kept until the run ends (xDSL closes its output stream on errors too)."""

    def close(self) -> None:
        pass


class QtrainOptMain(xDSLOptMain):
    version_format = "qtrain-opt (xdsl {xdsl_version})"
    deferred_output: DeferredOutput | None = None

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

    def parse_chunk(self, chunk: IO[bytes], file_extension: str, start_offset: int = 0) -> ModuleOp | None:
        text = chunk.read()
        name = self.args.input_file or "<stdin>"
        check_text(text.decode("utf-8", "replace") if isinstance(text, bytes) else text, name)
        chunk = (io.BytesIO if isinstance(text, bytes) else io.StringIO)(text)  # type: ignore[assignment]
        try:
            module = super().parse_chunk(chunk, file_extension, start_offset)
        except RecursionError:
            raise UserError(f"{self.args.input_file or '<stdin>'}: the IR is nested too deeply to parse") from None
        if module is not None:
            verify_sizes(module)  # before anything allocates a declared tensor
            verify_dominance(module)  # xDSL's verifier leaves it out; every pass and -t c rely on it
        return module

    def setup_pipeline(self) -> None:
        try:
            super().setup_pipeline()
        except Exception as e:  # xDSL reports a bad pipeline or option with assorted exception types
            raise UsageError(f"bad pass pipeline '{self.args.passes}': {describe_error(e)}") from e

    def prepare_input(self) -> tuple[list[tuple[IO[bytes], int]], str]:
        try:
            return super().prepare_input()
        except OSError as e:
            raise UserError(f"cannot read {self.args.input_file}: {e.strerror or e}") from e
        except ValueError as e:  # an input file extension no frontend reads
            raise UsageError(str(e)) from e

    def prepare_output(self) -> IO[str]:
        if self.args.output_file is None:
            return super().prepare_output()
        # Written when the whole run succeeded, never over the input (xdsl-opt truncates it first).
        check_output(self.args.output_file, [self.args.input_file])
        self.deferred_output = DeferredOutput()
        return self.deferred_output

    def run(self) -> None:
        super().run()
        if self.deferred_output is not None:
            write_text(self.args.output_file, self.deferred_output.getvalue(), [self.args.input_file])

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
        options = " ".join(f"{f.name.replace('_', '-')}=..." for f in dataclasses.fields(pass_class) if f.init)
        doc = (pass_class.__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name}{'{' + options + '}' if options else ''}\n      {doc}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    description = "qtrain optimizer driver (xdsl-opt with the qtrain dialect and passes)"
    run_tool("qtrain-opt", lambda: QtrainOptMain(description=description, args=args).run(), args)


if __name__ == "__main__":
    main()
