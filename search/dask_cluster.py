"""Fine-tuning runs on a Dask distributed cluster (`qtrain-search-scheme --scheduler tcp://HOST:PORT`).

For tasks that outgrow one machine: the runs of `FineTuneRunner.run` go to an existing cluster's
workers instead of a local process pool. The run context (model, data, recipe) is scattered to every
worker once; each run is one task returning its accuracy. A worker keeps the host builds of the search in
its own temporary folder (`host_build.builds_root`), removed on every worker when the runs are done.
Dask is an optional dependency (`pip install qtrain[dask]`), imported only here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qtrain.search.candidates import SearchError
from qtrain.search.host_build import builds_root, remove_builds
from qtrain.transforms.schemes import UpdateScheme

if TYPE_CHECKING:
    from qtrain.search.fine_tune import RunContext

CONNECT_TIMEOUT_S = 10.0


class SchedulerError(SearchError):
    """Dask is missing, or its scheduler cannot be reached."""


def _run(context: RunContext, scheme: str | UpdateScheme, seed: tuple[int, ...]) -> float:
    from qtrain.search.fine_tune import worker_module

    return context.run(worker_module(context), scheme, seed)


def _remove_builds(token: str) -> None:
    remove_builds(builds_root(token))


def connect(address: str):  # noqa: ANN201 (distributed.Client, an optional dependency)
    """A client of the scheduler at `address`; SchedulerError (one line) when Dask is not installed or the
    scheduler does not answer within CONNECT_TIMEOUT_S."""
    try:
        from distributed import Client
    except ImportError:
        raise SchedulerError("--scheduler needs Dask distributed: pip install 'qtrain[dask]' "
                             "(or pip install distributed)") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, ValueError, TypeError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SchedulerError(f"cannot reach the Dask scheduler at {address}: {why}") from None


def run_on_cluster(address: str, context: RunContext, jobs: Sequence[tuple[str | UpdateScheme, tuple[int, ...]]],
                   on_result: Callable[[int, float], None]) -> list[float]:
    """The accuracies of `jobs` ((scheme, seed) runs of `context`), in order; `on_result(index, accuracy)`
    as each run finishes."""
    from distributed import as_completed

    client = connect(address)
    try:
        shared = client.scatter(context, broadcast=True, hash=False)
        futures = [client.submit(_run, shared, scheme, seed, pure=False) for scheme, seed in jobs]
        index = {future.key: i for i, future in enumerate(futures)}
        out = [0.0] * len(jobs)
        try:
            for future in as_completed(futures, loop=client.loop):
                i = index[future.key]
                out[i] = float(future.result())
                on_result(i, out[i])
        except BaseException:
            client.cancel(futures)  # an interrupt or a failed run: the cluster's workers are not ours to stop
            raise
        return out
    finally:
        if context.engine == "host":
            try:
                client.run(_remove_builds, context.token)
            except Exception:  # noqa: BLE001 (a worker that left or failed keeps a temporary folder; not an error)
                pass
        client.close()
