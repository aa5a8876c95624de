"""optimizer.native_output: what a native library writes to file descriptor 1 while a solve runs
goes to stderr, and stdout is back afterwards, with overlapping blocks (threads) restored once.
Checked in a child process, whose descriptors are the test's own to inspect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, threading
from optimizer.native_output import stdout_to_stderr
print("before", flush=True)
with stdout_to_stderr():
    os.write(1, b"native-1\\n")
    with stdout_to_stderr():
        os.write(1, b"native-2\\n")
    os.write(1, b"native-3\\n")
def solve():
    with stdout_to_stderr():
        os.write(1, b"native-thread\\n")
threads = [threading.Thread(target=solve) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print("after", flush=True)
"""


def test_native_writes_go_to_stderr_and_stdout_comes_back() -> None:
    res = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60)
    assert res.stdout == "before\nafter\n"
    err = res.stderr.splitlines()
    assert err[:3] == ["native-1", "native-2", "native-3"]
    assert err.count("native-thread") == 8
