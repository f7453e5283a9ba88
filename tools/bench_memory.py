"""Peak SRAM of the training step: 3 reference models x {full, the paper's 5 schemes, bias-only} x
{naive schedule, qtrain-reorder} x weight storage x gradient precision, as planned by qtrain-plan-memory
(arena + trainable copies + scratch).

    python -m qtrain.tools.bench_memory [--models DIR] [--weight-storage f32,i16,i8|both|all]
                                        [--grad-precision f32|bf16|both] [--no-fuse] [--json OUT.json]

Both schedules include qtrain-fuse-streaming unless --no-fuse. Trained weights are planned both ways
by default ("both"): fp32 master copies and int8 copies updated in place (4x fewer trainable bytes, the
storage of the int8 graph itself); "all" adds the 16-bit fixed-point masters (2 B per weight). i8-nearest
plans exactly as i8. Activation gradients are planned both ways too: fp32 and bf16 in the arena
(qtrain-narrow-gradients, `--grad-precision`).

Prints one table per model and storage with the peak in KB, the arena/trainable/scratch split of the
reordered plan, naive/reorder and full(naive)/reorder, then the sparse schemes that meet both of
issue 6's bars (>= 2x below the naive schedule, >= 15x below full update).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qtrain.tools.plumbing import ArgumentParser, run_tool
from qtrain.transforms.pipeline import apply_passes, training_passes
from qtrain.transforms.recipe import DEFAULT_WEIGHT_STORAGE, WEIGHT_STORAGES

MODELS = ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"]
PAPER_KB = {  # MCUNetV3 paper, Fig. / Table: full -> sparse -> sparse + reorder
    "mcunet-5fps": (3650, 560, 173),
    "mbv2-w0.35": (2939, 335, 141),
    "proxyless-w0.3": (2745, 326, 135),
}


def measure(module_text: str, scheme: str, reorder: bool, weight_storage: str, fuse: bool = True,
            grad_precision: str = "f32") -> dict[str, int]:
    from qtrain.dialects.qtrain.contract import MEMORY
    from qtrain.interpreter import load_module

    module = load_module(module_text)
    passes = training_passes(scheme, reorder=reorder, sram_kb=1 << 30, weight_storage=weight_storage,
                             fuse_streaming=fuse, grad_precision=grad_precision)
    apply_passes(module, passes)
    memory = module.attributes[MEMORY]
    return {k: v.value.data for k, v in memory.data.items() if hasattr(v, "value")}  # type: ignore[attr-defined]


BARS = (2.0, 15.0)
"""Issue 6's bars: sparse + reorder at least 2x below sparse without reorder and 15x below full update."""


def bar_rows(rows: dict[str, dict[str, int]]) -> list[tuple[str, float, float]]:
    """(scheme, naive/reorder, full(naive)/reorder) of the sparse schemes meeting both BARS."""
    full = rows["full|naive"]["peak_sram_bytes"]
    out = []
    for key in rows:
        label, kind = key.split("|")
        if kind != "reorder" or label in ("full", "bias-only"):
            continue
        reordered = rows[key]["peak_sram_bytes"]
        ratio, vs_full = rows[f"{label}|naive"]["peak_sram_bytes"] / reordered, full / reordered
        if ratio >= BARS[0] and vs_full >= BARS[1]:
            out.append((label, ratio, vs_full))
    return out


STORAGE_TITLE = {"f32": "fp32 master copies", "i16": "16-bit fixed-point masters", "i8": "int8 copies updated in place",
                 "i8-nearest": "int8 copies updated in place"}
PRECISION_TITLE = {"f32": "fp32 activation gradients", "bf16": "bf16 activation gradients"}


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_models = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "tiny-training"
    parser.add_argument("--models", type=Path, default=default_models, help="folder with the .pkl models")
    parser.add_argument("--weight-storage", default="both", metavar="LIST",
                        help=f"how trained weights are kept in SRAM, comma-separated from {','.join(WEIGHT_STORAGES)}"
                             f"; both: f32,i8 (the default); all: f32,i16,i8 (one table each)")
    parser.add_argument("--grad-precision", choices=["f32", "bf16", "both"], default="both",
                        help="arena format of activation gradients (default: both, one table each)")
    parser.add_argument("--only", choices=MODELS, action="append", help="restrict to these models")
    parser.add_argument("--no-fuse", action="store_true", help="without qtrain-fuse-streaming")
    parser.add_argument("--json", type=Path, help="also write all figures as JSON")
    args = parser.parse_args(argv)
    if not (args.models / "schemes.json").is_file():
        print(f"bench_memory: error: no schemes.json in {args.models}", file=sys.stderr)
        return 2

    from qtrain.frontends.tiny_training import import_tiny_training

    schemes_file = args.models / "schemes.json"
    budgets = json.loads(schemes_file.read_text())
    named = {"both": "f32,i8", "all": "f32,i16,i8"}.get(args.weight_storage, args.weight_storage)
    storages = [s.strip() for s in named.split(",") if s.strip()]
    if not storages or any(s not in WEIGHT_STORAGES for s in storages):
        print(f"bench_memory: error: --weight-storage {args.weight_storage}: choose from "
              f"{', '.join(WEIGHT_STORAGES)}, both or all", file=sys.stderr)
        return 2
    precisions = ["f32", "bf16"] if args.grad_precision == "both" else [args.grad_precision]
    configs = [(s, p) for s in storages for p in precisions]
    results: dict[str, dict[str, dict[str, dict[str, int]]]] = {f"{s}/{p}": {} for s, p in configs}
    texts = {model: str(import_tiny_training(args.models / f"{model}.pkl", num_classes=10))
             for model in args.only or MODELS}
    for storage, precision in configs:
        for model, text in texts.items():
            schemes = ["full", *[f"{schemes_file}#{model}/{b}" for b in budgets[model]], "bias-only"]
            rows: dict[str, dict[str, int]] = {}
            for scheme in schemes:
                label = scheme.rsplit("/", 1)[-1] if "#" in scheme else scheme
                for reorder in (False, True):
                    key = f"{label}|{'reorder' if reorder else 'naive'}"
                    rows[key] = measure(text, scheme, reorder, storage, fuse=not args.no_fuse,
                                        grad_precision=precision)
            results[f"{storage}/{precision}"][model] = rows
            print_table(model, storage, schemes, rows, precision)
    print(f"\nsparse schemes with reorder >= {BARS[0]:g}x below naive and >= {BARS[1]:g}x below full update:")
    for storage, precision in configs:
        for model in texts:
            met = bar_rows(results[f"{storage}/{precision}"][model])
            listed = ", ".join(f"{label} ({r:.2f}x, {f:.1f}x)" for label, r, f in met) or "none"
            print(f"  {STORAGE_TITLE[storage]:<38} {PRECISION_TITLE[precision]:<26} {model:<15} {listed}")
    print_summary(texts, budgets, configs, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def print_summary(texts: dict[str, str], budgets: dict[str, dict[str, object]], configs: list[tuple[str, str]],
                  results: dict[str, dict[str, dict[str, dict[str, int]]]]) -> None:
    """One line per model and scheme: the reordered peak in KB for every storage x gradient precision."""
    print(f"\npeak SRAM with reorder, KB (model x scheme x weight storage/gradient precision; * = over {BUDGET_KB} KB)")
    print(f"{'model':<15} {'scheme':<10} " + " ".join(f"{s + '/' + p:>10}" for s, p in configs))
    for model in texts:
        for label in ["full", *budgets[model], "bias-only"]:
            cells = []
            for storage, precision in configs:
                peak = results[f"{storage}/{precision}"][model][f"{label}|reorder"]["peak_sram_bytes"]
                cells.append(f"{peak / 1024:>9.1f}{'*' if peak > BUDGET_KB * 1024 else ' '}")
            print(f"{model:<15} {label:<10} " + " ".join(cells))


BUDGET_KB = 256
"""The Cortex-M7 boards' SRAM (STM32F746: 320 KB, of which the firmware budgets 256 by default)."""


def print_table(model: str, storage: str, schemes: list[str], rows: dict[str, dict[str, int]],
                precision: str = "f32") -> None:
    full = rows["full|naive"]["peak_sram_bytes"]
    paper = PAPER_KB[model]
    default = " (qtrain's default)" if storage == DEFAULT_WEIGHT_STORAGE else ""
    print(f"\n{model}  (trainable weights: {STORAGE_TITLE[storage]}{default}; {PRECISION_TITLE[precision]}; "
          f"paper full/sparse/sparse+reorder = {paper[0]}/{paper[1]}/{paper[2]} KB)")
    print(f"{'scheme':<10} {'naive KB':>9} {'reorder KB':>11} {'arena':>8} {'trainable':>10} {'scratch':>8} "
          f"{'naive/reorder':>14} {'full/reorder':>13}")
    for scheme in schemes:
        label = scheme.rsplit("/", 1)[-1] if "#" in scheme else scheme
        naive = rows[f"{label}|naive"]
        reordered = rows[f"{label}|reorder"]
        print(f"{label:<10} {naive['peak_sram_bytes'] / 1024:>9.1f} {reordered['peak_sram_bytes'] / 1024:>11.1f} "
              f"{reordered['arena_bytes'] / 1024:>8.1f} {reordered['trainable_bytes'] / 1024:>10.1f} "
              f"{reordered['scratch_bytes'] / 1024:>8.1f} "
              f"{naive['peak_sram_bytes'] / reordered['peak_sram_bytes']:>13.2f}x "
              f"{full / reordered['peak_sram_bytes']:>12.1f}x")


if __name__ == "__main__":
    run_tool("bench_memory", lambda: main(sys.argv[1:]), sys.argv[1:])
