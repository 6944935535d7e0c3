"""How the console script ends: a finished command skips Python's teardown but loses nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Runs mlptrain's entry point as the console script does, with three witnesses: an atexit handler
# (must run), an object whose __del__ only Python's teardown calls (must not, on success), and
# optionally a non-daemon thread started as main returns (must be waited for).
SCRIPT = """
import atexit, sys, threading, time
from mlptrain import cli

class Teardown:
    def __del__(self):
        print("teardown ran", flush=True)

witness = Teardown()
atexit.register(print, "atexit ran")
if sys.argv[1] == "thread":  # a thread still at work when main returns
    main = cli.main

    def main_then_thread(argv=None):
        code = main(argv)
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread done", flush=True))).start()
        return code

    cli.main = main_then_thread
sys.argv = ["mlptrain", *sys.argv[2:]]
cli.run()
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_a_finished_command_skips_teardown_but_runs_atexit_and_flushes(tmp_path):
    done = _run(tmp_path, "-", "init", "my.yaml")
    assert done.returncode == 0, done.stderr
    assert "my.yaml" in done.stdout and done.stdout.rstrip().endswith("atexit ran")
    assert "teardown ran" not in done.stdout
    assert (tmp_path / "my.yaml").read_text().strip()  # the file it wrote is whole


def test_a_failed_command_and_a_running_thread_exit_the_ordinary_way(tmp_path):
    failed = _run(tmp_path, "-", "fit", "missing.yaml")
    assert failed.returncode == 2 and "missing.yaml" in failed.stderr
    assert "atexit ran" in failed.stdout and "teardown ran" in failed.stdout
    waited = _run(tmp_path, "thread", "init", "my.yaml")
    assert waited.returncode == 0, waited.stderr
    assert "thread done" in waited.stdout and "atexit ran" in waited.stdout


def test_a_profiler_or_tracer_still_gets_to_write_its_results(tmp_path):
    """cProfile writes its file, and trace its list, after the command returns: no early exit under them."""
    profile = tmp_path / "p.out"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "mlptrain", "init", "my.yaml"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert profile.stat().st_size > 0
    trace = [sys.executable, "-m", "trace", "--listfuncs", "--module", "mlptrain", "init", "my2.yaml"]
    traced = subprocess.run(trace, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert traced.returncode == 0, traced.stderr
    assert "functions called:" in traced.stdout and "funcname: exit_without_teardown" in traced.stdout
