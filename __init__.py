"""qtrain: compile a quantized CNN into C that fine-tunes it on a Cortex-M microcontroller.

The Python API (`qtrain.api`, loaded on first use so that `import qtrain` stays cheap):
`qtrain.compile(model, scheme=..., target=...) -> Build`, `Build.run(task, steps=..., eval=...) -> Result`,
`Build.open(folder)`, `Build.export(result, "finetuned.onnx")`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from qtrain.api import Build, Result, compile

__all__ = ["Build", "Result", "compile"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from qtrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'qtrain' has no attribute {name!r}")
