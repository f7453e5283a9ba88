"""Sparse-update scheme search (MCUNetV3 §3.2, Fig. 5): contribution analysis + evolutionary search.

Not a pass: a driver of the training pipeline (`qtrain.transforms`), used by `qtrain-search-scheme`,
`qtrain-demo` (through that tool) and the benchmarks. By job:

- `candidates`: the search space, per-layer schemes (`Candidate`) over the backbone convs (and, when
  asked, TinyTL lite residual modules), each a typed `UpdateScheme` for the pipeline
  (`Candidate.scheme()`); no schemes.json file is written to try one;
- `fine_tune`: fine-tuning runs of the int8 training graph, data splits, a runner (in this process, a
  local process pool, or a Dask cluster: `dask_cluster`);
- `host_build`: the runs' native engine, the host build of the generated C (one build per distinct
  training graph); the numpy golden model stays selectable (`engine="interpreter"`);
- `analysis`: contribution analysis, the accuracy gain of each bias depth and weight slice, measured
  on a validation split carved from the task's training split (cached in a JSON file if asked);
- `memory`: a candidate's planned peak SRAM (the real pipeline down to `qtrain-plan-memory`);
- `evolution`: the evolutionary search for the largest summed gain under a memory budget;
- `report`, `schemes_file`: the results as text, and the schemes.json file a found scheme is written to;
- `progress`: the `on_progress(done, total, text)` callback through which the search reports progress
  (the tools draw the bars).

    analysis = contribution_analysis(module, fit, validation, on_progress=...)
    planner = MemoryPlanner(module)
    result = evolutionary_search(planner.convs, analysis.gain, planner.peak_sram_bytes, budget_bytes)
    write_schemes_json("scheme.json", "my-model", budget_kb, result.candidate)

Layers are numbered as in schemes.json (`qtrain.transforms.schemes`): backbone convs 0..n-1 in forward
order, the classifier (always trained, weight and bias) is conv n and not part of a candidate.
"""

from qtrain.search.analysis import ContributionAnalysis, contribution_analysis, fingerprint
from qtrain.search.candidates import (
    RATIOS,
    Candidate,
    ConvInfo,
    InfeasibleBudgetError,
    SearchError,
    backbone_convs,
    bias_only,
    canonical,
    classifier_only,
    format_kb,
    forward_function,
    last_k,
    module_blocks,
)
from qtrain.search.evolution import EvolutionSettings, SearchResult, evolutionary_search
from qtrain.search.fine_tune import FineTuneRecipe, FineTuneRunner, fine_tune_accuracy, sample_order, split_validation
from qtrain.search.memory import MemoryPlanner, planned_peak_sram
from qtrain.search.progress import ProgressCallback
from qtrain.search.report import format_analysis, format_choice
from qtrain.search.schemes_file import budget_key, write_schemes_json

__all__ = [
    "RATIOS",
    "Candidate",
    "ContributionAnalysis",
    "ConvInfo",
    "EvolutionSettings",
    "FineTuneRecipe",
    "FineTuneRunner",
    "InfeasibleBudgetError",
    "MemoryPlanner",
    "ProgressCallback",
    "SearchError",
    "SearchResult",
    "backbone_convs",
    "bias_only",
    "budget_key",
    "canonical",
    "classifier_only",
    "contribution_analysis",
    "evolutionary_search",
    "fine_tune_accuracy",
    "fingerprint",
    "format_analysis",
    "format_choice",
    "format_kb",
    "forward_function",
    "last_k",
    "module_blocks",
    "planned_peak_sram",
    "sample_order",
    "split_validation",
    "write_schemes_json",
]
