"""``--threads N``: torch's intra-op thread count during each twin step, and only there.

The built-in models are small; one thread (the default) is the fastest there, and on a machine
whose cores are busy far faster than two (twin/device.py). The count is set around every twin
step and the caller's count put back, like the TF32 flags, so a library caller's torch settings
are never changed.
"""

from __future__ import annotations

import os

import pytest
import torch

from handgrad.cli import main


@pytest.fixture
def threads_seen():
    """torch.get_num_threads() at every module forward while the fixture is open."""
    seen: list[int] = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.append(torch.get_num_threads())
    )
    yield seen
    handle.remove()


CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.mark.skipif(CPUS < 2, reason="asks for 2 threads, at most one per CPU")
@pytest.mark.parametrize("scenario", ["xor", "parity", "multitask", "makemore", "transformer"])
def test_every_twin_step_runs_with_the_asked_threads_and_restores(scenario, threads_seen, capsys) -> None:
    before = torch.get_num_threads()  # 1: tests/conftest.py
    assert main(["compare", scenario, "--steps", "2", "--threads", "2", "--quiet"]) == 0
    assert threads_seen and set(threads_seen) == {2}
    assert torch.get_num_threads() == before


@pytest.mark.skipif(CPUS < 2, reason="sets the caller's count to 2")
def test_the_default_is_one_thread(threads_seen) -> None:
    torch.set_num_threads(2)
    try:
        assert main(["compare", "xor", "--steps", "2", "--quiet"]) == 0
        assert set(threads_seen) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("value", ["0", "-1", "5000", str(CPUS + 1)])
def test_a_bad_thread_count_is_one_line_naming_the_field(value, capsys) -> None:
    assert main(["compare", "xor", "--steps", "2", "--threads", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "threads" in err[0], err
