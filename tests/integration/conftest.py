"""Deadlines for the integration suite: every test gets SIGALRM after its budget (pytest-timeout, when
installed, adds a second guard), and the whole suite fails once it has run past SUITE_BUDGET_S."""
import signal
import time

import pytest

TEST_BUDGET_S = 90
SUITE_BUDGET_S = 1500
_suite_start = time.monotonic()


class Deadline(Exception):
    pass


@pytest.fixture(autouse=True)
def deadline():
    if time.monotonic() - _suite_start > SUITE_BUDGET_S:
        pytest.fail(f"integration suite ran past its {SUITE_BUDGET_S}s budget")

    def expire(signum, frame):
        raise Deadline(f"test ran past its {TEST_BUDGET_S}s deadline")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_BUDGET_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
