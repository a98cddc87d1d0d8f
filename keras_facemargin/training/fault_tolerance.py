"""Crash-safe training state: ``keras.callbacks.BackupAndRestore`` with atomic checkpoints."""

from __future__ import annotations

import json
import os
import tempfile

import keras

STATE = "state.json"


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose checkpoints survive a kill at any instant.

    Keras' callback overwrites ``latest.weights.h5`` in place and then writes the epoch to a
    separate JSON file: a process killed in between leaves new weights labelled with the old
    epoch (an epoch trained twice) or a truncated weights file. Here every checkpoint is a new
    weights file; a small ``state.json`` naming it (and the epoch) is then replaced with
    ``os.replace`` (atomic on POSIX), which is the single commit point; the previous weights
    file is removed only after that. On restart the committed state is loaded, so training
    resumes at the first epoch not completed: none lost, none repeated.

    Checkpoints are taken at the end of each epoch only: Keras' ``fit`` restarts an interrupted
    epoch from its first batch, so a mid-epoch checkpoint (Keras' integer ``save_freq``) would
    train that epoch's first batches twice after a restart. For frequent checkpoints on a large
    data set, use shorter epochs (``steps_per_epoch``) on a repeated dataset whose position is
    a function of the epoch (e.g. ``dataset.skip(initial_epoch * steps_per_epoch)``).

    Weights and state are ``fsync``-ed before the commit, so the committed checkpoint also
    survives a power loss, not only a killed process.

    Args:
        backup_dir: folder of the checkpoints, one per run (under
            ``MultiWorkerMirroredStrategy`` give each worker its own folder).
        save_freq: must be ``"epoch"`` (see above). Defaults to `"epoch"`.
        delete_checkpoint: remove ``backup_dir`` when training finishes. Defaults to `True`.

    Raises:
        ValueError: ``save_freq`` is not ``"epoch"``.

    Example:

    >>> callback = AtomicBackupAndRestore("/tmp/backup")                 # doctest: +SKIP
    >>> model.fit(dataset, epochs=20, callbacks=[callback])              # doctest: +SKIP
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint: bool = True):
        if save_freq != "epoch":
            raise ValueError(
                "`save_freq` of AtomicBackupAndRestore must be 'epoch': Keras' fit restarts an "
                "interrupted epoch from its first batch, so a mid-epoch checkpoint would train "
                "those batches twice. Use shorter epochs (steps_per_epoch) instead. "
                f"Received: save_freq={save_freq!r}"
            )
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=False,
                         delete_checkpoint=delete_checkpoint)
        self._state_path = os.path.join(backup_dir, STATE)
        self._saves = 0

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        if not self.model.built:
            raise ValueError("AtomicBackupAndRestore needs a built model: call it on a batch (or "
                             "build it) before fit().")
        if not os.path.exists(self._state_path):
            return
        with open(self._state_path) as f:
            state = json.load(f)
        weights = os.path.join(self.backup_dir, state["weights"])
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        self.model._initial_epoch = int(state["epoch"])
        self._saves = int(state.get("saves", 0))

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        previous = None
        if os.path.exists(self._state_path):
            with open(self._state_path) as f:
                previous = json.load(f).get("weights")
        self._saves += 1
        name = f"ckpt-{self._saves:06d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        self.model.save_weights(path, overwrite=True)
        _fsync(path)
        state = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name,
                 "saves": self._saves}
        fd, tmp = tempfile.mkstemp(dir=self.backup_dir, prefix=".state.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)  # the commit point
        _fsync(self.backup_dir)
        if previous and previous != name:
            try:
                os.remove(os.path.join(self.backup_dir, previous))
            except FileNotFoundError:
                pass


def _fsync(path: str) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
