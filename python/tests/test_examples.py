"""The examples run as documented, and type-check under mypy --strict together with the
package; the native module's stubs match the built module (mypy's stubtest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import LIMIT, Local, Proc

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PACKAGE = Path(__file__).resolve().parent.parent / "python" / "dtc"


def test_the_fanout_example_gathers_a_thousand_results(bare_cluster: Local) -> None:
    worker = Proc([sys.executable, str(EXAMPLES / "worker.py"), bare_cluster.shard])
    try:
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "fanout.py"), bare_cluster.router],
            capture_output=True,
            text=True,
            timeout=LIMIT,
        )
        assert out.returncode == 0, out.stderr
        assert "1000 tasks in" in out.stdout
        assert "commonest words: [('the', " in out.stdout
        assert "an empty text fails for good: nothing to count" in out.stdout
        assert "reminder for ada (attempt 1)" in out.stdout
    finally:
        worker.stop()


def test_the_examples_and_the_package_type_check() -> None:
    for target in ([str(EXAMPLES)], [str(PACKAGE)]):
        out = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", *target],
            capture_output=True,
            text=True,
            timeout=LIMIT * 5,
        )
        assert out.returncode == 0, out.stdout + out.stderr


def test_the_stubs_match_the_native_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "dtc._native"],
        capture_output=True,
        text=True,
        timeout=LIMIT * 5,
    )
    assert out.returncode == 0, out.stdout + out.stderr
