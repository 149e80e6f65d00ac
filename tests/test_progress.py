"""A long run shows a progress bar on a terminal and stays silent when stdout is not one."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

COMMAND = [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", "400", "--quiet"]


def run_on_a_terminal() -> str:
    leader, follower = pty.openpty()
    process = subprocess.Popen(COMMAND, stdout=follower, stderr=subprocess.DEVNULL, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the child has exited
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=120)
    os.close(leader)
    assert process.returncode == 0
    return b"".join(chunks).decode()


def test_progress_bar_on_a_terminal():
    screen = run_on_a_terminal()
    assert "\rxor [" in screen and "] 400/400" in screen
    assert "] 200/400" in screen  # it moves as the run goes
    assert "xor: all 19 terms agree" in screen.rsplit("400/400", 1)[1]  # the verdict after the bar


def test_no_progress_bar_when_stdout_is_not_a_terminal():
    result = subprocess.run(COMMAND, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "\r" not in result.stdout and "[#" not in result.stdout
    assert result.stdout.strip().startswith("xor: all")
