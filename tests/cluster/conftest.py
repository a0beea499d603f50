"""Each phase's duration of the cluster tests (starting services, the runs), shown in pytest's terminal summary."""

from __future__ import annotations

import time

import pytest

PHASES = pytest.StashKey[dict[str, float]]()


class Phases:
    """Records how long each phase took (shown in the terminal summary)."""

    def __init__(self, config: pytest.Config) -> None:
        self.times = config.stash.setdefault(PHASES, {})

    def __call__(self, name: str, started: float) -> float:
        """Record the phase ``name`` begun at ``started`` (``time.monotonic``); return the time now."""
        now = time.monotonic()
        self.times[name] = now - started
        return now


@pytest.fixture(scope="module")
def phases(request: pytest.FixtureRequest) -> Phases:
    return Phases(request.config)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Each phase's duration, as the cluster fixture and the tests recorded them."""
    times = config.stash.get(PHASES, {})
    if times:
        terminalreporter.section("cluster phases")
        for name, seconds in times.items():
            terminalreporter.write_line(f"{name:<24} {seconds:7.1f} s")
