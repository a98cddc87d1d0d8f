"""Crash-safe training state: ``keras.callbacks.BackupAndRestore`` with atomic checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile

import keras

STATE = "state.json"
MARKER = ".facemargin-backup"  # written in a folder the callback created or adopted
_CHECKPOINT = re.compile(r"ckpt-\d{6}\.weights\.h5")
_STATE_TMP = re.compile(r"\.state\..*\.json")


def _own(name: str) -> bool:
    """A file this callback writes (checkpoints, the state, its temporaries, the marker)."""
    return (name in (STATE, MARKER) or bool(_CHECKPOINT.fullmatch(name))
            or bool(_STATE_TMP.fullmatch(name)))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    survives a power loss, not only a killed process. The SHA-256 of the weights file is
    recorded in ``state.json`` at the commit and verified before a restore: a checkpoint whose
    bytes changed (a flipped bit, another file copied over it) stops with a ``ValueError``
    naming the file instead of resuming from it; so does a ``state.json`` that is not what the
    callback wrote (``null``, broken JSON, a weights name outside the folder). Nothing is
    deleted in either case.

    The folder is the callback's: it writes a marker file (``.facemargin-backup``) into the
    folder it creates, or into an existing folder that is empty or holds only its own files
    (checkpoints of an earlier version), and refuses (``ValueError``) a non-empty folder it did
    not create. At the end of training (``delete_checkpoint=True``) it removes only its own
    files, and the folder if that leaves it empty; a file the user put there is never deleted.

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

    Heads with sharded class centres (``model_parallel=True``) are checkpointed whole (all C
    centres and their momentum, gathered over the replicas) and resume under any strategy with
    more than one replica (the centres are re-sharded). ``state.json`` records the shapes of the
    optimizer's variables: a checkpoint whose optimizer state the model cannot take whole is
    refused (``ValueError``, nothing loaded), where Keras would only warn and resume with zero
    momentum and step 0. That is the case of a sharded head's checkpoint resumed on one device,
    where the same head is a full head whose centre momentum is an optimizer slot, or the other
    way round.

    Args:
        backup_dir: folder of the checkpoints, one per run and, under
            ``MultiWorkerMirroredStrategy``, one per worker.
        save_freq: must be ``"epoch"`` (see above). Defaults to `"epoch"`.
        delete_checkpoint: remove the callback's files (and ``backup_dir`` if then empty) when
            training finishes. Defaults to `True`.

    Raises:
        ValueError: ``save_freq`` is not ``"epoch"``; at the start of training: ``backup_dir``
            holds files the callback did not write, its checkpoint or state is damaged, or the
            checkpoint's optimizer state does not fit the model's optimizer.

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
        self._adopt()
        self._load_model()

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and self._multi_worker():
            _gather_epochs(self.model.distribute_strategy, self._current_epoch)  # a barrier
        if self.delete_checkpoint and os.path.isdir(self.backup_dir):
            self._remove_own_files()

    def _adopt(self) -> None:
        """Create ``backup_dir`` or check that it is the callback's; write the marker."""
        folder = self.backup_dir
        if os.path.isdir(folder):
            names = os.listdir(folder)
            foreign = sorted(n for n in names if not _own(n))
            if MARKER not in names and foreign:
                raise ValueError(
                    f"`backup_dir` is a non-empty folder not created by AtomicBackupAndRestore "
                    f"(which deletes its checkpoints there): it holds {len(foreign)} other "
                    f"entries, e.g. {', '.join(foreign[:3])}. Give a new or empty folder. "
                    f"Received: backup_dir={folder!r}")
        else:
            os.makedirs(folder, exist_ok=True)
        marker = os.path.join(folder, MARKER)
        if not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write("checkpoints of keras_facemargin's AtomicBackupAndRestore\n")

    def _remove_own_files(self) -> None:
        for name in os.listdir(self.backup_dir):
            if _own(name):
                try:
                    os.remove(os.path.join(self.backup_dir, name))
                except FileNotFoundError:
                    pass
        try:
            os.rmdir(self.backup_dir)  # only if nothing of the user's is left
        except OSError:
            pass

    def _multi_worker(self) -> bool:
        from keras_facemargin.training.multiworker import _is_multi_worker

        return _is_multi_worker(self.model.distribute_strategy)

    def _read_state(self):
        """The committed state, checked; ``ValueError`` naming the file if it is not valid."""
        if not os.path.exists(self._state_path):
            return None
        try:
            with open(self._state_path) as f:
                state = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise self._bad_state(f"it is not JSON ({err})") from None
        self._check_entry(state, "state")
        saves = state.get("saves", 0)
        if isinstance(saves, bool) or not isinstance(saves, int) or saves < 0:
            raise self._bad_state(f"state.saves must be an integer >= 0. Received: {saves!r}")
        previous = state.get("previous")
        if previous is not None:
            self._check_entry(previous, "previous")
        return state

    def _bad_state(self, why: str) -> ValueError:
        return ValueError(
            f"The checkpoint state {self._state_path} is damaged: {why}. Nothing was loaded or "
            "deleted; restore it, or move the folder away to start from epoch 0.")

    def _check_entry(self, entry, what: str) -> None:
        if not isinstance(entry, dict):
            raise self._bad_state(f"{what} must be an object. Received: {entry!r}"[:300])
        epoch, weights = entry.get("epoch"), entry.get("weights")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise self._bad_state(f"{what}.epoch must be an integer >= 0. Received: {epoch!r}")
        if epoch and (not isinstance(weights, str) or not _CHECKPOINT.fullmatch(weights)):
            raise self._bad_state(f"{what}.weights must name a ckpt-NNNNNN.weights.h5 file of "
                                  f"the folder. Received: {weights!r}")
        sha = entry.get("sha256")
        if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            raise self._bad_state(f"{what}.sha256 must be 64 hex digits. Received: {sha!r}")
        shapes = entry.get("optimizer_shapes")
        if shapes is not None and not (isinstance(shapes, list) and all(
                isinstance(shape, list) and all(_count(d) for d in shape) for shape in shapes)):
            raise self._bad_state(f"{what}.optimizer_shapes must be a list of shapes (lists of "
                                  f"integers >= 0). Received: {shapes!r}"[:300])
        shards = entry.get("centre_shards")
        if shards is not None and (not _count(shards) or shards < 1):
            raise self._bad_state(f"{what}.centre_shards must be an integer >= 1. "
                                  f"Received: {shards!r}")

    def _verify(self, entry) -> str:
        """Path of ``entry``'s weights after checking that they are the bytes committed."""
        path = os.path.join(self.backup_dir, entry["weights"])
        if not os.path.isfile(path):
            raise ValueError(f"The checkpoint {path} named by {self._state_path} is missing. "
                             "Nothing was loaded or deleted.")
        want = entry.get("sha256")
        if want is not None:  # (checkpoints of earlier versions carry no checksum)
            got = _sha256(path)
            if got != want:
                raise ValueError(
                    f"The checkpoint {path} fails its checksum (SHA-256 {got[:16]}..., "
                    f"committed {want[:16]}...): its bytes changed after it was written. "
                    "Nothing was loaded or deleted; restore the file, or move the folder away "
                    "to start from epoch 0.")
        return path

    def _check_layout(self, entry, path: str) -> None:
        """Refuse a checkpoint whose optimizer state this model cannot take whole.

        Keras loads an optimizer's variables only when the file holds as many as the
        optimizer; otherwise it warns and keeps the fresh state (zero momentum, step 0): the run
        would go on, but not as it was. That is the case of a head with sharded class centres
        (``model_parallel=True``, whose centre momentum the head keeps, not the optimizer)
        resumed on one device, where the same head is a full head, or the other way round.
        """
        want = entry.get("optimizer_shapes")
        got = _optimizer_shapes(self.model)
        if want is None or got is None or got == want:  # (earlier versions recorded none)
            return
        at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b),
                  min(len(want), len(got)))  # the first variable that differs

        def shape(shapes):
            return tuple(shapes[at]) if at < len(shapes) else "none"

        saved, shards = entry.get("centre_shards") or 1, _centre_shards(self.model)
        hint = ""
        if (saved > 1) != (shards > 1):
            hint = (f" The checkpoint holds the class centres {_centres_held(saved)}; this "
                    f"model holds them {_centres_held(shards)}. A checkpoint of sharded "
                    "centres resumes under a strategy with more than one replica (any number: "
                    "the centres are re-sharded), one of a full head on one device.")
        raise ValueError(
            f"The checkpoint {path} cannot resume this model as it was: its optimizer state "
            f"holds {len(want)} variables, this model's optimizer {len(got)} (variable {at}: "
            f"{shape(want)} saved, {shape(got)} here), so Keras would skip the optimizer's "
            f"state (momentum, step count).{hint} Nothing was loaded or deleted. To start a new "
            "run from these weights instead, load them with model.load_weights and train "
            "without this backup folder.")

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
        weights = self._verify(state)
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self._check_layout(state, weights)
        self.model.load_weights(weights)
        self.model._initial_epoch = epoch
        self._committed = {key: state[key] for key in _ENTRY if key in state}

    def _save_model(self):
        self._adopt()
        keep_previous = self._multi_worker()
        self._saves += 1
        name = f"ckpt-{self._saves:06d}.weights.h5"
        path = os.path.join(self.backup_dir, name)
        self.model.save_weights(path, overwrite=True)
        _fsync(path)
        sha = _sha256(path)
        previous = getattr(self, "_committed", None) if keep_previous else None
        committed = {"epoch": self._current_epoch, "weights": name, "sha256": sha,
                     "optimizer_shapes": _optimizer_shapes(self.model),
                     "centre_shards": _centre_shards(self.model)}
        state = {**committed, "batch": self._last_batch_seen, "saves": self._saves,
                 "previous": previous}
        fd, tmp = tempfile.mkstemp(dir=self.backup_dir, prefix=".state.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_path)  # the commit point
        _fsync(self.backup_dir)
        self._committed = committed
        keep = {name, previous["weights"] if previous else name}
        for old in os.listdir(self.backup_dir):  # older checkpoints, and any a kill left behind
            if old.startswith("ckpt-") and old.endswith(".weights.h5") and old not in keep:
                try:
                    os.remove(os.path.join(self.backup_dir, old))
                except FileNotFoundError:
                    pass


_ENTRY = ("epoch", "weights", "sha256", "optimizer_shapes", "centre_shards")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optimizer_shapes(model) -> list[list[int]] | None:
    """The shapes of the optimizer's variables in order (None without a built optimizer)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not optimizer.built:
        return None
    return [[int(d) for d in v.shape] for v in optimizer.variables]


def _centres_held(shards: int) -> str:
    if shards == 1:
        return "whole (a full head: the optimizer keeps their momentum)"
    return (f"sharded over {shards} replicas (model_parallel=True: the head keeps their "
            "momentum)")


def _centre_shards(model) -> int:
    """The most replicas any margin head of ``model`` shards its class centres over (1: none)."""
    from keras_facemargin.layers.head import MarginHead

    return max((layer.shards for layer in model._flatten_layers()
                if isinstance(layer, MarginHead)), default=1)


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
