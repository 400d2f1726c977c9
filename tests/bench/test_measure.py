"""``bench.measure.run_measured`` on real child processes: roles from command lines, and a process that is
seen before and after its exec counted under the program it became."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from dose3d_fl.bench.measure import run_measured

# The child holds about 200 MiB, then forks; the fork stays a copy of it (same command line, same memory) for
# 1 s, then execs ``python -m timeit``, which sleeps 1 s holding little memory.
FORK_THEN_EXEC = textwrap.dedent(
    """
    import os, sys, time
    ballast = bytearray(b"\x01") * (200 * 1024 * 1024)  # written, so resident
    pid = os.fork()
    if pid == 0:
        time.sleep(1.0)
        os.execv(sys.executable, [sys.executable, "-m", "timeit", "-n", "1", "-r", "1", "import time; time.sleep(1)"])
    os.waitpid(pid, 0)
    """
)


def test_a_forked_process_is_counted_under_what_it_execs(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(FORK_THEN_EXEC)
    measured = run_measured([sys.executable, str(script)], tmp_path / "log.txt", interval=0.1)
    assert measured.returncode == 0
    assert measured.processes == {"main": 1, "timeit": 1}  # the fork was seen as parent.py first
    assert measured.peak_rss_mib["main"] > 200
    # Only what it held after the exec: not the 200 MiB it shared with its parent before.
    assert measured.peak_rss_mib["timeit"] < 100
    assert measured.wall_seconds >= 2.0


def test_a_failing_command_names_its_log(tmp_path: Path) -> None:
    log = tmp_path / "fail.txt"
    with pytest.raises(RuntimeError, match=r"exit status 3; see .*fail\.txt"):
        run_measured([sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"], log)
    assert log.read_text().strip() == "bad"
