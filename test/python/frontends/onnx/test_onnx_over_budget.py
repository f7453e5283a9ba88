"""An over-budget plan of an imported ONNX model says where its peak is in the user's terms (the schemes.json
layer and the ONNX node), what would help, and the Flash the model needs, in one message (issue 14)."""

from __future__ import annotations

import re

import pytest
from onnx_testing import images, small_cnn
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain.contract import SOURCE, param_ops
from qtrain.frontends.onnx import import_onnx
from qtrain.transforms.pipeline import apply_passes, training_passes


def over_budget(storage: str, scheme: str = "full") -> str:
    module = import_onnx(small_cnn(), images(8))
    with pytest.raises(PassFailedException) as caught:
        apply_passes(module, training_passes(scheme, sram_kb=1, weight_storage=storage))
    return str(caught.value)


def test_imported_weights_remember_their_onnx_node() -> None:
    module = import_onnx(small_cnn(), images(8))
    sources = {name: p.attributes[SOURCE].data for name, p in param_ops(module).items() if SOURCE in p.attributes}
    assert sources == {"conv0.weight": "Conv 'conv1'", "conv1.weight": "Conv 'dw2'", "conv2.weight": "Conv 'pw3'",
                       "conv3.weight": "Gemm 'fc'"}


def test_over_budget_message_names_the_peak_layer_what_helps_and_flash() -> None:
    message = over_budget("f32")
    first, *rest = message.splitlines()
    assert re.match(r"qtrain-plan-memory: needs \d+ bytes of SRAM, over the budget of 1024 \(\d+ too many\); "
                    r"Flash \d+ bytes of weights and constants", first)
    peak = next(line for line in rest if "live at the peak" in line)
    assert re.search(r"layer \d \(conv\d, ONNX (Conv|Gemm) '\w+'\)", peak), peak
    helps = next(line for line in rest if "what would help" in line)
    savings = {s: int(n) for s, n in re.findall(r"--weight-storage (i16|i8) \(saves (\d+) bytes", helps)}
    assert set(savings) == {"i16", "i8"} and savings["i8"] > savings["i16"] > 0
    assert "a sparser scheme" in helps and "qtrain-search-scheme --budget-kb" in helps


def test_no_cheaper_storage_is_offered_when_the_weights_are_already_int8() -> None:
    helps = next(line for line in over_budget("i8").splitlines() if "what would help" in line)
    assert "--weight-storage" not in helps and "qtrain-search-scheme" in helps
    helps16 = next(line for line in over_budget("i16").splitlines() if "what would help" in line)
    assert "--weight-storage i8" in helps16 and "--weight-storage i16" not in helps16
