"""Dialects defined by qtrain, registered lazily like xDSL's `get_all_dialects()`."""

from collections.abc import Callable

from xdsl.ir import Dialect


def get_all_dialects() -> dict[str, Callable[[], Dialect]]:
    def get_qtrain() -> Dialect:
        from qtrain.dialects.qtrain import Qtrain

        return Qtrain

    return {"qtrain": get_qtrain}
