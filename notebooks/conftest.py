"""nbval runs every chapter's kernel with another thread count than the one that stored it.

The stored outputs are made by ``python -m eclip_core.book execute`` with two or more
threads; here they are re-executed with one, so a validated output that depends on the
thread count (a reduction order, a BLAS kernel) fails ``make test`` on every machine.
"""

import pytest

from eclip_core.book import VALIDATION_THREADS, set_kernel_threads


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # before nbval starts the notebook's kernel, which inherits the environment
    set_kernel_threads(VALIDATION_THREADS)
