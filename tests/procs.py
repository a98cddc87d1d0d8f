"""Run test worker processes and say, when one fails, whether it hung, crashed or was slow.

A loaded 2-core machine can make a healthy worker many times slower, so the timeouts here are
generous (``TIMEOUT``); a failure message always gives each worker's state (still running after
the timeout = hung; a return code or signal = crashed), how long it ran and the tail of its
stderr. A worker that finished but took more than ``SLOW`` seconds is reported as slow in the
message of any later assertion through ``describe``.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time

import pytest

TIMEOUT = 600.0  # seconds a worker may run before it counts as hung
SLOW = 120.0  # a worker that took longer than this is named "slow" in failure messages
TAIL = 3000


@dataclasses.dataclass
class Finished:
    """What one worker process left behind."""

    name: str
    returncode: int | None  # None: it was still running at the timeout (hung) and was killed
    out: str
    err: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def state(self) -> str:
        if self.returncode is None:
            return f"{self.name} HUNG: still running after {self.seconds:.0f} s, killed"
        if self.returncode < 0:
            try:
                sig = signal.Signals(-self.returncode).name
            except ValueError:
                sig = str(-self.returncode)
            return f"{self.name} CRASHED: killed by signal {sig} after {self.seconds:.0f} s"
        if self.returncode != 0:
            return f"{self.name} CRASHED: exit code {self.returncode} after {self.seconds:.0f} s"
        slow = f" (SLOW: over {SLOW:.0f} s)" if self.seconds > SLOW else ""
        return f"{self.name} finished (exit 0) in {self.seconds:.0f} s{slow}"


def describe(results: list[Finished], tail: int = TAIL) -> str:
    """Every worker's state plus the stderr tail of those that did not exit cleanly."""
    lines = [r.state() for r in results]
    for r in results:
        if not r.ok:
            lines.append(f"--- {r.name} stderr (last {tail} chars) ---\n{r.err[-tail:]}")
    return "\n".join(lines)


def start(args, *, env=None, cwd=None) -> subprocess.Popen:
    """Start ``python args...`` with text pipes for stdout and stderr."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.started = time.monotonic()
    return proc


def finish(procs, names=None, timeout: float = TIMEOUT, check: bool = True) -> list[Finished]:
    """Wait for all ``procs`` (a shared deadline); kill every one left if any hangs.

    With ``check`` (default) the test fails unless all exited with code 0, with a message from
    ``describe``; a hang always fails the test.
    """
    names = names or [f"worker {i}" for i in range(len(procs))]
    deadline = time.monotonic() + timeout
    results, hung = [], False
    for proc, name in zip(procs, names, strict=True):
        started = getattr(proc, "started", time.monotonic())
        try:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            code = proc.returncode
        except subprocess.TimeoutExpired:
            hung = True
            proc.kill()
            out, err = proc.communicate()
            code = None
        results.append(Finished(name, code, out or "", err or "", time.monotonic() - started))
    if hung or (check and not all(r.ok for r in results)):
        pytest.fail(describe(results), pytrace=False)
    return results


def run(args, *, name="process", timeout: float = TIMEOUT, check: bool = True, env=None,
        cwd=None) -> Finished:
    """Run one process to completion; see ``finish``."""
    (result,) = finish([start(args, env=env, cwd=cwd)], [name], timeout=timeout, check=check)
    return result
