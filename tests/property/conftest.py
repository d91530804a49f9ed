"""Hypothesis profiles for the property tests: ``ci`` (the default) runs a fixed number of
examples, derandomised (the same examples on every run, no database); ``dev`` explores more
and remembers failures. Choose with ``HYPOTHESIS_PROFILE=dev``; see the counts with
``pytest tests/property --hypothesis-show-statistics``."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "ci",
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,  # a shared CI machine: time per example varies
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.register_profile(
    "dev",
    max_examples=3_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
