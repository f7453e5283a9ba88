"""qtrain passes, one per file; `get_all_passes()` maps each kebab-case name to a lazy factory."""

from collections.abc import Callable

from xdsl.passes import ModulePass


def get_all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    def verify_quant_chain() -> type[ModulePass]:
        from qtrain.transforms.verify_quant_chain import VerifyQuantChainPass

        return VerifyQuantChainPass

    def lite_residual() -> type[ModulePass]:
        from qtrain.transforms.lite_residual import LiteResidualPass

        return LiteResidualPass

    def autodiff() -> type[ModulePass]:
        from qtrain.transforms.autodiff import AutodiffPass

        return AutodiffPass

    def sparse_update() -> type[ModulePass]:
        from qtrain.transforms.sparse_update import SparseUpdatePass

        return SparseUpdatePass

    def dead_gradient_elim() -> type[ModulePass]:
        from qtrain.transforms.dead_gradient_elim import DeadGradientElimPass

        return DeadGradientElimPass

    def narrow_gradients() -> type[ModulePass]:
        from qtrain.transforms.narrow_gradients import NarrowGradientsPass

        return NarrowGradientsPass

    def stream_backward() -> type[ModulePass]:
        from qtrain.transforms.stream_backward import StreamBackwardPass

        return StreamBackwardPass

    def fuse_streaming() -> type[ModulePass]:
        from qtrain.transforms.fuse_streaming import FuseStreamingPass

        return FuseStreamingPass

    def reorder() -> type[ModulePass]:
        from qtrain.transforms.reorder import ReorderPass

        return ReorderPass

    def plan_memory() -> type[ModulePass]:
        from qtrain.transforms.plan_memory import PlanMemoryPass

        return PlanMemoryPass

    return {
        "qtrain-verify-quant-chain": verify_quant_chain,
        "qtrain-lite-residual": lite_residual,
        "qtrain-autodiff": autodiff,
        "qtrain-sparse-update": sparse_update,
        "qtrain-dead-gradient-elim": dead_gradient_elim,
        "qtrain-narrow-gradients": narrow_gradients,
        "qtrain-stream-backward": stream_backward,
        "qtrain-fuse-streaming": fuse_streaming,
        "qtrain-reorder": reorder,
        "qtrain-plan-memory": plan_memory,
    }
