"""Settings shared by the property-based fuzz tests (import as `from fuzzing import FUZZ`).

Seeded and bounded: `derandomize` makes every run draw the same examples (a failure reproduces, the suite
stays deterministic), `max_examples` and `deadline` bound the time, and no example database is written
into the checkout. Every fuzz test states one property: the reader ends in success or in its clean error
(a `UserError` subclass, which every tool prints as one line with exit status 2), never anything else.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, Phase, settings

FUZZ = settings(
    max_examples=150,
    # No shrinking: a failure is reported with the example as drawn, and a failing run stays bounded.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    deadline=timedelta(seconds=20),
    derandomize=True,
    database=None,
    # function_scoped_fixture: the tests use capsys (read, and so reset, once per example) and
    # tmp_path_factory (a fresh folder per example), which are safe to share between examples.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture],
)
