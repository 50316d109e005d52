"""Suite-wide configuration: hypothesis profiles, the fixed seed, markers.

Profiles (choose with ``HYPOTHESIS_PROFILE=...``; ``ci`` is the default so the
README's test command is reproducible):

* ``ci``: derandomized, 25 examples per property, no deadline.
* ``dev``: random, 50 examples.
* ``thorough``: random, 500 examples.

Randomness outside hypothesis comes from :data:`TEST_SEED` through the ``rng``
fixture (one fixed seed for the whole suite, as SEAL's ``testseed.h``).
"""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

TEST_SEED = 20250611

settings.register_profile(
    "ci", derandomize=True, max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: True when the suite runs the kernels as plain Python (NUMBA_DISABLE_JIT=1).
NO_JIT = bool(numba.config.DISABLE_JIT)

if NO_JIT:
    # Kernels rely on uint64 wraparound (the low half of Shoup products); as
    # numpy scalars that wraps correctly but warns.
    np.seterr(over="ignore", under="ignore")


@pytest.fixture
def rng() -> np.random.Generator:
    """A numpy Generator seeded with the suite's fixed seed."""
    return np.random.default_rng(TEST_SEED)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: secure-parameter or long runs (deselect with -m 'not slow')")
    if NO_JIT:
        # numpy's error state is per thread: kernels run in worker threads warn too.
        config.addinivalue_line("filterwarnings", "ignore:overflow encountered:RuntimeWarning")
        config.addinivalue_line("filterwarnings", "ignore:underflow encountered:RuntimeWarning")
