"""Shared pytest fixtures.

Every test runs torch on one thread (``_one_torch_thread``): the tensors here are tiny, and torch's
thread pool costs more than it saves (up to 0.3 s per grouped conv on a busy 2-core machine).

``libreoffice``: the path of ``soffice`` for tests that recompute workbooks. Where LibreOffice is
missing such a test is skipped with the reason, except when ``HANDGRAD_REQUIRE_LIBREOFFICE=1``
(``.ci/run`` sets it): there it fails, so CI can never pass by skipping. A test marked
``@pytest.mark.libreoffice`` gets the same treatment without asking for the fixture.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_libreoffice() -> str:
    """soffice's path, or skip (fail under HANDGRAD_REQUIRE_LIBREOFFICE=1) when it is missing."""
    path = shutil.which("soffice") or shutil.which("libreoffice")
    if path is not None:
        return path
    if os.environ.get("HANDGRAD_REQUIRE_LIBREOFFICE") == "1":
        pytest.fail(
            "LibreOffice (soffice) is required (HANDGRAD_REQUIRE_LIBREOFFICE=1) but not installed; "
            "apt-get install -y --no-install-recommends libreoffice-calc-nogui",
            pytrace=False,
        )
    pytest.skip("LibreOffice (soffice) is not installed (apt-get install libreoffice-calc-nogui)")


@pytest.fixture(scope="session")
def libreoffice() -> str:
    return require_libreoffice()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("libreoffice") is not None:
        require_libreoffice()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """torch on one thread for the whole run, restored after it; nothing when torch is absent."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
