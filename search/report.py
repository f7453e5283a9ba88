"""The search's results as text: the contribution analysis tables and the chosen scheme."""

from __future__ import annotations

import math
from collections.abc import Sequence

from qtrain.search.analysis import ContributionAnalysis
from qtrain.search.candidates import RATIOS, ConvInfo, format_kb
from qtrain.search.evolution import SearchResult


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}" if value != -math.inf else "-"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}" if value != -math.inf else "-"


def format_analysis(analysis: ContributionAnalysis) -> str:
    """The contribution analysis as text tables (accuracies in %, gains in percentage points)."""
    r = analysis.recipe
    n = len(analysis.convs)
    lines = [
        f"contribution analysis: validation accuracy on {analysis.n_val} images after {r.steps} steps on "
        f"{analysis.n_fit} images (lr {r.lr:g}, bias lr {r.bias_lr if r.bias_lr is not None else r.lr:g}), "
        f"mean of {analysis.repeats} runs",
        f"  classifier only {100 * analysis.classifier_only:.1f}%, bias-only (all biases) "
        f"{_pct(analysis.bias_only)}%" + (f", baseline of the weights (biases of the last {analysis.baseline_depth} "
                                          f"convs, the deepest within the budget) {_pct(analysis.baseline)}%"
                                          if analysis.baseline_depth is not None else ""),
        "  bias of the last k backbone convs (+ classifier), gain over classifier only [points]:",
        "    k      " + " ".join(f"{k:>6d}" for k in range(n + 1)),
        "    acc %  " + " ".join(f"{_pct(a):>6}" for a in analysis.bias_accuracy),
        "    gain   " + " ".join(f"{_pts(analysis.bias_gain(k)):>6}" for k in range(n + 1)),
        "  weight of one conv on a ratio of its input channels (+ the baseline's biases), gain over the baseline "
        "[points]:",
        "    layer  name                 kind     C_in  " + " ".join(f"{_ratio(q):>7}" for q in RATIOS),
    ]
    for i, by_ratio in analysis.weight_accuracy.items():
        c = analysis.convs[i]
        cells = []
        for q in RATIOS:
            cell = _pts(by_ratio[q] - analysis.baseline)
            cells.append(f"{cell:>7}" if c.canonical_ratio(q) == q else f"{'=':>7}")
        lines.append(f"    {i:>5}  {c.name:<20} {c.kind:<7} {c.in_channels:>5}  " + " ".join(cells))
    lines.append("    ('=': same channel count as the next ratio to the right; '-': not measured: no candidate "
                 "within the budget trains it, or --bias-step / --refine left it out)")
    if analysis.module_accuracy:
        lines.append("  lite residual module of one block (+ the baseline's biases), gain over the baseline [points]:")
        lines.append("    block  " + " ".join(f"{b:>6d}" for b in analysis.module_accuracy))
        lines.append("    gain   " + " ".join(f"{_pts(analysis.module_gain(b)):>6}" for b in analysis.module_accuracy))
    return "\n".join(lines)


def _ratio(r: float) -> str:
    return "1" if r == 1 else f"1/{round(1 / r)}"


def format_choice(result: SearchResult, analysis: ContributionAnalysis | None, convs: Sequence[ConvInfo]) -> str:
    c = result.candidate
    lines = [
        f"chosen scheme for a budget of {format_kb(result.budget_bytes)}: planned peak SRAM "
        f"{result.peak_sram_bytes} bytes ({format_kb(result.peak_sram_bytes)}; classifier only "
        f"{format_kb(result.minimum_bytes)}), predicted gain {_pts(result.gain)} points over classifier only",
        f"  n_bias_update = {c.n_bias_update} (biases of backbone convs {len(convs) - c.n_bias_update}.."
        f"{len(convs) - 1})" if c.n_bias_update else "  n_bias_update = 0 (no backbone bias)",
    ]
    for i, ratio in enumerate(c.weight_ratios):
        if ratio > 0:
            conv = convs[i]
            contribution = f", gain {_pts(analysis.weight_gain(i, ratio))}" if analysis is not None else ""
            lines.append(f"  weight of conv {i} ({conv.name}, {conv.kind}): ratio {ratio:g} = "
                         f"{conv.channels(ratio)} of {conv.in_channels} input channels{contribution}")
    if not any(r > 0 for r in c.weight_ratios):
        lines.append("  no backbone weight")
    for b in c.lite_residual:
        contribution = f", gain {_pts(analysis.module_gain(b))}" if analysis is not None else ""
        lines.append(f"  lite residual module of block {b}{contribution}")
    lines.append(f"  searched: {len(result.best_per_generation)} generations, {result.planned} candidates planned, "
                 f"{result.seconds:.1f} s")
    return "\n".join(lines)
