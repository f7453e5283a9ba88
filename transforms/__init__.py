"""qtrain passes, one per file; `get_all_passes()` maps each kebab-case name to a lazy factory."""

from collections.abc import Callable

from xdsl.passes import ModulePass


def get_all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    def verify_quant_chain() -> type[ModulePass]:
        from qtrain.transforms.verify_quant_chain import VerifyQuantChainPass

        return VerifyQuantChainPass

    def autodiff() -> type[ModulePass]:
        from qtrain.transforms.autodiff import AutodiffPass

        return AutodiffPass

    return {
        "qtrain-verify-quant-chain": verify_quant_chain,
        "qtrain-autodiff": autodiff,
    }
