"""Two MultiWorkerMirroredStrategy workers, one SIGKILLed; both restarted; training resumes.

Each worker trains with ``enable_multiworker_fit`` + ``AtomicBackupAndRestore`` (its own backup
folder) on its own fixed shard of the data, in order. In the first run one worker SIGKILLs
itself; its surviving peer then blocks in the next step's all-reduce (TensorFlow would fail it
only after the 300 s collective timeout of the script's ``multiworker_strategy``), so the test
kills it with SIGKILL as soon as the victim is dead, as a cluster manager would. Both workers
are then restarted on new ports and must end with the weights of an uninterrupted run.
"""

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import free_ports
from procs import TIMEOUT

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "fault_tolerance_multiworker_fit.py"
EPOCHS = 5


class Cluster:
    """Two worker processes of one run; output to files (no pipe to fill up)."""

    def __init__(self, root, run, kill=None):
        ports = free_ports(2)
        self.root, self.run, self.procs = root, run, []
        self.started = time.monotonic()
        for i in range(2):
            extra = [str(a) for a in kill[1:]] if kill and kill[0] == i else []
            args = [sys.executable, str(SCRIPT), str(i), *map(str, ports), str(root / f"b{i}"),
                    str(root / f"log{i}"), str(root / f"w{i}.json"), *extra]
            with open(root / f"out{run}-{i}.txt", "w") as out:
                self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))

    def output(self, i):
        return (self.root / f"out{self.run}-{i}.txt").read_text()[-3000:]

    def state(self, i):
        """Hung (running), crashed (return code / signal) or finished, and for how long."""
        code, t = self.procs[i].poll(), time.monotonic() - self.started
        if code is None:
            return f"worker {i} of run {self.run} still running after {t:.0f} s"
        if code < 0:
            return (f"worker {i} of run {self.run} killed by signal "
                    f"{signal.Signals(-code).name} ({t:.0f} s)")
        return f"worker {i} of run {self.run} exited with code {code} ({t:.0f} s)"

    def report(self, i):
        others = "; ".join(self.state(j) for j in range(len(self.procs)) if j != i)
        return f"{self.state(i)}; {others}\n--- output of worker {i} ---\n{self.output(i)}"

    def wait(self, i, timeout=TIMEOUT):
        try:
            return self.procs[i].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"HUNG: {self.report(i)}", pytrace=False)

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


@contextlib.contextmanager
def cluster(root, run, kill=None):
    c = Cluster(root, run, kill)
    try:
        yield c
    finally:
        c.kill()  # never leave a worker blocked in a collective behind


def finished(root, run):
    with cluster(root, run) as c:
        for i in range(2):
            assert c.wait(i) == 0, f"CRASHED: {c.report(i)}"


def log(root, i):
    """(epochs begun, {epoch: losses}, epochs ended) of worker i, in order."""
    lines = [line.split() for line in (root / f"log{i}").read_text().splitlines()]
    return ([int(w[1]) for w in lines if w[0] == "begin"],
            [(int(w[1]), float(w[2])) for w in lines if w[0] == "end"])


def state(root, i):
    return json.loads((root / f"b{i}" / "state.json").read_text())


def weights(root, i):
    return [np.asarray(w, np.float32) for w in json.loads((root / f"w{i}.json").read_text())]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted two-worker run: per-epoch losses and final weights."""
    root = tmp_path_factory.mktemp("uninterrupted")
    finished(root, 0)
    begun, ended = log(root, 0)
    assert begun == list(range(EPOCHS)) and [e for e, _ in ended] == list(range(EPOCHS))
    assert log(root, 1) == (begun, ended)
    for a, b in zip(weights(root, 0), weights(root, 1), strict=True):
        np.testing.assert_array_equal(a, b)
    return [loss for _, loss in ended], weights(root, 0)


def check_resumed_like(reference, root, ended_before):
    """Both workers' logs: epochs ended in the crashed run, then the restarted run's."""
    losses, final = reference
    for i in range(2):
        begun, ended = log(root, i)
        n = len(ended_before[i])
        assert [e for e, _ in ended[:n]] == ended_before[i]
        resumed = [e for e, _ in ended[n:]]
        start = resumed[0]
        assert resumed == list(range(start, EPOCHS)), (i, resumed)
        assert begun[-len(resumed):] == resumed  # the restarted run began at `start`
        for e, loss in ended:  # every epoch trained from the state an uninterrupted run had
            np.testing.assert_allclose(loss, losses[e], rtol=1e-6)
    w0, w1 = weights(root, 0), weights(root, 1)
    for a, b, want in zip(w0, w1, final, strict=True):
        np.testing.assert_array_equal(a, b)  # identical on both workers
        np.testing.assert_allclose(a, want, rtol=1e-6, atol=1e-7)
    for i in range(2):
        assert state(root, i)["epoch"] == EPOCHS
        files = sorted(p.name for p in (root / f"b{i}").iterdir() if p.name != ".facemargin-backup")
        assert len(files) == 3 and files[-1] == "state.json"  # latest and previous checkpoint


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_both_workers_like_no_crash(reference, tmp_path):
    """The chief (worker 0, which also hosts TensorFlow's coordination service) SIGKILLs itself
    after batch 2 of epoch 2 (0-based; 6 batches an epoch). (Worker 1 is the victim in the
    next test; both victims in both scenarios would double the file's time.)"""
    victim, peer = 0, 1
    with cluster(tmp_path, 1, kill=(victim, 2, 2)) as c:
        assert c.wait(victim) == -signal.SIGKILL, f"victim not SIGKILLed: {c.report(victim)}"
        c.kill()  # the peer is blocked in the all-reduce of batch 3 (or already failed)
        assert c.procs[peer].returncode != 0, c.report(peer)
    for i in range(2):
        assert state(tmp_path, i)["epoch"] == 2  # epochs 0 and 1 committed on both
        begun, ended = log(tmp_path, i)
        assert [e for e, _ in ended] == [0, 1]  # epoch 2 completed by neither
    finished(tmp_path, 2)
    # none lost, none repeated: each worker ended 0, 1 and then, restarted at 2: 2, 3, 4
    for i in range(2):
        begun, ended = log(tmp_path, i)
        assert [e for e, _ in ended] == [0, 1, 2, 3, 4]
        assert begun == [0, 1, 2, 2, 3, 4]
    check_resumed_like(reference, tmp_path, [[0, 1], [0, 1]])


@pytest.mark.slow
def test_workers_one_epoch_apart_resume_together_from_the_older(reference, tmp_path):
    """Worker 1 is killed at the end of epoch 1 before its checkpoint; worker 0 commits epoch 1
    (2 epochs done) and blocks in epoch 2. Resuming each from its own latest checkpoint would
    train different weights on the two workers; AtomicBackupAndRestore makes both resume at
    epoch 1, the oldest commit, worker 0 from the previous checkpoint it kept."""
    with cluster(tmp_path, 1, kill=(1, 1, "end")) as c:
        assert c.wait(1) == -signal.SIGKILL, f"victim not SIGKILLed: {c.report(1)}"
        deadline = time.time() + TIMEOUT
        while not (tmp_path / "b0" / "state.json").exists() or state(tmp_path, 0)["epoch"] < 2:
            assert c.procs[0].poll() is None, f"CRASHED: {c.report(0)}"
            assert time.time() < deadline, f"SLOW or HUNG: never committed epoch 1: {c.report(0)}"
            time.sleep(0.05)
        c.kill()
    assert (state(tmp_path, 0)["epoch"], state(tmp_path, 1)["epoch"]) == (2, 1)
    assert os.path.exists(tmp_path / "b0" / state(tmp_path, 0)["previous"]["weights"])
    finished(tmp_path, 2)
    for i in range(2):
        assert log(tmp_path, i)[0][-4:] == [1, 2, 3, 4]  # both restarted at epoch 1
    # worker 0 trains epoch 1 again (its peer never committed it), from the same state
    check_resumed_like(reference, tmp_path, [[0, 1], [0]])
