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

    Under ``MultiWorkerMirroredStrategy`` every worker writes its own checkpoints to its own
    ``backup_dir`` (Keras 3's callback has no chief logic and no temporary folders: each worker
    writes where it is told; two workers must not share a folder). The workers' checkpoints of
    one epoch are identical, as the replicas are, but a kill can leave them one epoch apart: a
    worker commits ``n + 1`` completed epochs once the last step of epoch ``n`` (0-based) is
    done, while its peer, killed during its own end-of-epoch save, still has ``n``. Resuming each worker from its own
    latest checkpoint would then silently train different weights on the two workers (the
    later worker finishes "successfully" with wrong weights). So, in multi-worker mode:

    * each worker also keeps its previous checkpoint (the workers are never further apart:
      committing ``n + 1`` needs every peer in the last step of epoch ``n``, hence past its
      own commit of ``n``);
    * on restart, the workers gather their committed epochs (one collective in
      ``on_train_begin``) and all resume from the oldest, each from its own file of that epoch
      (epoch 0: no checkpoint is loaded, the model's initial weights are used); a worker that
      has no checkpoint of that epoch raises ``RuntimeError`` instead of training on;
    * with ``delete_checkpoint=True`` the workers wait for each other (one collective) in
      ``on_train_end`` before deleting, so no worker deletes its final checkpoint while a peer
      may not have committed its own.

    Args:
        backup_dir: folder of the checkpoints, one per run and, under
            ``MultiWorkerMirroredStrategy``, one per worker.
        save_freq: must be ``"epoch"`` (see above). Defaults to `"epoch"`.
        delete_checkpoint: remove ``backup_dir`` when training finishes. Defaults to `True`.

    Raises:
        ValueError: ``save_freq`` is not ``"epoch"``.

    Example:

    >>> callback = AtomicBackupAndRestore("runs/backup")               # doctest: +SKIP
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

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and self._multi_worker():
            _gather_epochs(self.model.distribute_strategy, self._current_epoch)  # a barrier
        super().on_train_end(logs)

    def _multi_worker(self) -> bool:
        from keras_facemargin.training.multiworker import _is_multi_worker

        return _is_multi_worker(self.model.distribute_strategy)

    def _read_state(self):
        if not os.path.exists(self._state_path):
            return None
        with open(self._state_path) as f:
            return json.load(f)

    def _load_model(self):
        if not self.model.built:
            raise ValueError("AtomicBackupAndRestore needs a built model: call it on a batch (or "
                             "build it) before fit().")
        state = self._read_state()
        self._committed = None
        self._saves = int(state.get("saves", 0)) if state else 0
        epoch = int(state["epoch"]) if state else 0
        if self._multi_worker():
            epochs = _gather_epochs(self.model.distribute_strategy, epoch)
            epoch = min(epochs)
            if state and epoch != int(state["epoch"]):
                previous = state.get("previous") or {"epoch": 0}
                if int(previous["epoch"]) != epoch:
                    raise RuntimeError(
                        f"the workers' committed epochs are {epochs}: they resume at epoch "
                        f"{epoch}, but {self.backup_dir} holds epoch {state['epoch']} and "
                        f"{previous['epoch']} only (were the backup folders of the workers "
                        "mixed up or partly deleted?)")
                state = previous if epoch else None
        if not state or not epoch:
            return
        weights = os.path.join(self.backup_dir, state["weights"])
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        self.model._initial_epoch = epoch
        self._committed = {"epoch": epoch, "weights": state["weights"]}

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        keep_previous = self._multi_worker()
        self._saves += 1
        name = f"ckpt-{self._saves:06d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        self.model.save_weights(path, overwrite=True)
        _fsync(path)
        previous = getattr(self, "_committed", None) if keep_previous else None
        state = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name,
                 "saves": self._saves, "previous": previous}
        fd, tmp = tempfile.mkstemp(dir=self.backup_dir, prefix=".state.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)  # the commit point
        _fsync(self.backup_dir)
        self._committed = {"epoch": self._current_epoch, "weights": name}
        keep = {name, previous["weights"] if previous else name}
        for old in os.listdir(self.backup_dir):  # older checkpoints, and any a kill left behind
            if old.startswith("ckpt-") and old.endswith(".weights.h5") and old not in keep:
                try:
                    os.remove(os.path.join(self.backup_dir, old))
                except FileNotFoundError:
                    pass


def _gather_epochs(strategy, epoch: int) -> list[int]:
    """Every replica's ``epoch`` (one collective over all workers)."""
    import tensorflow as tf

    local = tf.constant([epoch], tf.int32)
    gathered = strategy.gather(strategy.run(lambda: tf.identity(local)), axis=0)
    return [int(e) for e in gathered.numpy()]


def _fsync(path: str) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
