"""The search's output: found schemes written to a file in the MCUNetV3 reference's schemes.json format,
so `FILE.json#MODEL/<B>kb` names them on every command line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qtrain.files import write_text
from qtrain.search.candidates import Candidate, SearchError
from qtrain.transforms.schemes import SchemeError, read_schemes_json

SCHEMES_ABOUT = (
    "Sparse-update schemes found by qtrain-search-scheme (MCUNetV3 contribution analysis + evolutionary "
    "search under a memory budget), in the format of the MCUNetV3 reference's schemes.json: per model and "
    "budget, the biases of the last n_bias_update backbone convs, the weights of the convs in "
    "manual_weight_idx on the first ceil(r * C_in) input channels (weight_update_ratio r), and the "
    "classifier's weight and bias. Layer indexes count the conv layers in forward order, classifier "
    "excluded. '_search' records how each scheme was found (not read by the scheme parser)."
)


def budget_key(budget_kb: float) -> str:
    return f"{budget_kb:g}kb"


def write_schemes_json(
    path: str | os.PathLike[str],
    model_name: str,
    budget_kb: float,
    candidate: Candidate,
    search_record: dict[str, Any] | None = None,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> str:
    """Writes (or adds to) a schemes.json-format file; returns the spec `PATH#MODEL/<B>kb`.

    An existing file in that format keeps its other models and budgets; anything else is refused, and so
    is a path naming one of `inputs` (the search's model and data). The file is replaced in one rename.
    """
    path = Path(path)
    data: dict[str, Any] = {"_about": SCHEMES_ABOUT}
    if path.exists():
        try:
            old = read_schemes_json(path, f"{path} exists but")
        except SchemeError as e:
            raise SearchError(f"{e}; not overwriting it") from None
        if not isinstance(old, dict) or not all(
            k.startswith("_") or isinstance(v, dict) for k, v in old.items()
        ):
            raise SearchError(f"{path} exists and is not in the schemes.json format; not overwriting it")
        data.update(old)
    key = budget_key(budget_kb)
    data.setdefault(model_name, {})[key] = candidate.entry()
    if search_record is not None:
        data.setdefault("_search", {}).setdefault(model_name, {})[key] = search_record
    write_text(path, json.dumps(data, indent=2) + "\n", inputs)
    return f"{path}#{model_name}/{key}"
