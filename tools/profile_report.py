"""`qtrain-run --profile`: the per-op counts of a profiled firmware as a table, JSON and a bar chart.

A firmware built by `qtrain-compile --profile` counts every op of its latest qtrain_infer /
qtrain_train_step call (instructions on QEMU, nanoseconds on the host) and appends the table to its
result file; DIR/profile.json (`lowering.profile.profile_slots`) says what each slot measures. This
module joins the two: per op its entry point, layer (schemes.json numbering), kind (forward / backward /
update), MACs, count, count per MAC and share of the call, and checks that the ops add up to the call's
measured total (what is outside them: the entry point's prologue, epilogue and first counter read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qtrain.errors import UserError
from qtrain.lowering.profile import ProfileSlot

PROFILE_JSON = "profile.json"
KINDS = ("forward", "backward", "update")


def load_slots(firmware: Path) -> list[ProfileSlot]:
    """The slots of DIR/profile.json next to `firmware` (written by `qtrain-compile --profile`)."""
    path = firmware.parent / PROFILE_JSON
    if not path.is_file():
        raise UserError(f"--profile needs {path} (written by `qtrain-compile --profile` next to the firmware)")
    try:
        slots = [ProfileSlot.from_json(s) for s in json.loads(path.read_text())["slots"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a qtrain profile description: {e}") from e
    if [s.index for s in slots] != list(range(len(slots))):
        raise UserError(f"{path}: slots out of order")
    return slots


@dataclass(frozen=True)
class EntryProfile:
    """The ops of one qtrain_infer or qtrain_train_step call."""

    entry: str
    unit: str
    total: int
    """the harness's count over the whole call"""
    macs: int
    slots: list[ProfileSlot]
    counts: list[int]

    @property
    def ops_total(self) -> int:
        return sum(self.counts)

    @property
    def outside(self) -> int:
        """The part of the call no slot covers (prologue, epilogue, the opening counter read)."""
        return self.total - self.ops_total

    def rows(self) -> list[dict[str, Any]]:
        return [{"op": s.op, "layers": list(s.layers), "kind": s.kind, "macs": s.macs, self.unit: c,
                 "per_mac": c / s.macs if s.macs else None, "share": c / self.total if self.total else 0.0,
                 "kernels": list(s.kernels)}
                for s, c in zip(self.slots, self.counts, strict=True)]

    def by_kind(self) -> dict[str, dict[str, int]]:
        out = {k: {"macs": 0, self.unit: 0} for k in KINDS}
        for s, c in zip(self.slots, self.counts, strict=True):
            out[s.kind]["macs"] += s.macs
            out[s.kind][self.unit] += c
        return out

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "total": self.total, "ops_total": self.ops_total, "outside_ops": self.outside,
                "macs": self.macs, "per_mac": self.total / self.macs if self.macs else None,
                "by_kind": self.by_kind(), "ops": self.rows()}


def entry_profile(entry: str, unit: str, total: int, macs: int, slots: list[ProfileSlot],
                  counts: np.ndarray) -> EntryProfile:
    mine = [s for s in slots if s.entry == entry]
    return EntryProfile(entry, unit, int(total), int(macs), mine, [int(counts[s.index]) for s in mine])


def layer_text(layers: tuple[int, ...] | list[int]) -> str:
    return "+".join(str(x) for x in layers) if layers else "-"


def print_profile(profile: EntryProfile) -> None:
    unit = profile.unit
    print(f"\nprofile of one {'training step' if profile.entry == 'train_step' else 'inference'} "
          f"(@{profile.entry}, {unit}):")
    print(f"{'#':>4} {'op':<34} {'layer':>7} {'kind':<9} {'MACs':>10} {unit:>12} {'/MAC':>7} {'share':>7}")
    for i, (s, c) in enumerate(zip(profile.slots, profile.counts, strict=True)):
        per_mac = f"{c / s.macs:.2f}" if s.macs else "-"
        share = 100 * c / profile.total if profile.total else 0.0
        print(f"{i:>4} {s.op:<34} {layer_text(s.layers):>7} {s.kind:<9} {s.macs:>10} {c:>12} {per_mac:>7} "
              f"{share:>6.2f}%")
    for kind, figures in profile.by_kind().items():
        if figures[unit] or figures["macs"]:
            per_mac = f"{figures[unit] / figures['macs']:.2f} per MAC" if figures["macs"] else ""
            print(f"  {kind:<9} {figures['macs']:>10} MACs {figures[unit]:>12} {unit} {per_mac}")
    share = 100 * profile.ops_total / profile.total if profile.total else 0.0
    print(f"  ops {profile.ops_total} of the call's {profile.total} {unit} ({share:.3f}%; outside the ops: "
          f"{profile.outside}, the entry point's prologue, epilogue and first counter read)")


KIND_COLOURS = {"forward": (66, 133, 244), "backward": (244, 160, 36), "update": (52, 168, 83)}


def write_chart(path: Path, profiles: list[EntryProfile]) -> None:
    """One horizontal bar per op (in schedule order, coloured by kind), one panel per entry point."""
    from qtrain.tools.charts import HBar, write_hbar_chart

    panels = []
    for p in profiles:
        bars = [HBar(f"{s.op.replace('qtrain.', '')} {layer_text(s.layers)}", float(c), KIND_COLOURS[s.kind])
                for s, c in zip(p.slots, p.counts, strict=True)]
        title = (f"{'training step' if p.entry == 'train_step' else 'inference'}: {p.total} {p.unit}"
                 + (f" for {p.macs} macs" if p.macs else ""))
        panels.append((title, bars))
    try:
        write_hbar_chart(str(path), panels, p.unit if profiles else "", KIND_COLOURS)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e
