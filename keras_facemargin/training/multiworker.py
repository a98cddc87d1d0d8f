"""``model.fit`` under ``MultiWorkerMirroredStrategy`` in Keras 3 (keras-team/keras#20585).

Keras 3's TensorFlow trainer builds the model symbolically before the first step
(``_maybe_symbolic_build``). Under a ``tf.distribute`` strategy it takes one distributed batch
and calls ``strategy.reduce("MEAN", batch)`` to turn it into one tensor per input; under
``MultiWorkerMirroredStrategy`` that reduction returns ``PerReplica`` values (or starts a
cross-worker collective on the input pipeline), and the build fails with "Attempt to convert a
value (PerReplica...) with an unsupported type". The build only needs shapes and dtypes, so
:func:`enable_multiworker_fit` replaces that step, on one model instance, with one that takes
the first local replica's tensors as the shape template: no collective, no reduction of data.

A second failure follows in the same release: the per-step logs (scalars) are combined across
workers with ``strategy.reduce("MEAN", v, axis=0)``, which rejects a 0-d tensor ("Invalid
reduction dimension 0 for input with 0 dimensions"). The patched model's train and test steps
return their scalar logs with shape (1,) under multi-worker, so that reduction yields the
cross-worker mean as a scalar again. Everything else of ``fit`` (callbacks, progress bar,
History, XLA where TensorFlow allows it) stays Keras'.
"""

from __future__ import annotations

import types
import warnings

import keras
import tensorflow as tf
from keras.src import tree

from keras_facemargin.training.strategy import jit_compile_obstacle

_PATCHED = "_keras_facemargin_multiworker_fit"


def _first_replica(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def _symbolic_build_without_reduce(self, iterator=None, data_batch=None):
    if self._distribute_strategy is None:
        return
    if iterator is not None:
        for _, _, it in iterator:
            data_batch = tree.map_structure(_first_replica, next(it))
            break
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


def _rank1(value):
    if isinstance(value, tf.Tensor) and value.shape.rank == 0:
        return tf.reshape(value, [1])
    return value


def _is_multi_worker(strategy) -> bool:
    extended = getattr(strategy, "extended", None)
    return bool(getattr(extended, "_in_multi_worker_mode", lambda: False)())


def _rank1_logs(step):
    """Wrap a train/test step so that its scalar logs have shape (1,) under multi-worker:
    Keras then reduces them with ``strategy.reduce("MEAN", v, axis=0)``, which needs an axis."""

    def wrapped(data):
        logs = step(data)
        return tree.map_structure(_rank1, logs) if _is_multi_worker(
            tf.distribute.get_strategy()) else logs

    return wrapped


def _xla_local_train_step(model: keras.Model):
    """Keras' TensorFlow ``train_step`` with the forward pass, loss and gradients compiled by
    XLA as one function that has no collective; the gradient all-reduce and the optimizer
    update (``apply_gradients``) and the metrics run outside XLA, where TensorFlow's CPU
    collectives work."""
    from keras.src.losses import loss as loss_module
    from keras.src.trainers.data_adapters import data_adapter_utils

    if model.optimizer is not None and not model.optimizer.built and model.built:
        # the XLA function is traced once: a LossScaleOptimizer must hold its real scale
        # variable by then, not the initial_scale constant it reports before it is built
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)

    def forward_backward(x, y, sample_weight):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True) if model._call_has_training_arg else model(x)
            loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                       training=True)
            scaled = model.optimizer.scale_loss(loss) if model.optimizer is not None else loss
        return loss, y_pred, y, tape.gradient(scaled, model.trainable_weights)

    # a task model (FaceRecognizer) brings its own split step: labels to the head explicitly
    own = getattr(model, "forward_backward", None)
    compiled = tf.function(own or forward_backward, jit_compile=True, reduce_retracing=True)

    def train_step(data):
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        loss, y_pred, y, gradients = compiled(x, y, sample_weight)
        if own is not None:
            return model.apply_step(x, loss, y_pred, y, gradients, sample_weight)
        first = next(i for i in tree.flatten(x) if i is not None)
        model._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                         sample_weight=tf.shape(first)[0])
        model.optimizer.apply_gradients(zip(gradients, model.trainable_weights, strict=True))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


def enable_multiworker_fit(model: keras.Model) -> keras.Model:
    """Make ``model.fit`` / ``evaluate`` work under ``MultiWorkerMirroredStrategy``.

    Patches this model instance only (idempotent); harmless under other strategies, where the
    replaced step gives the same symbolic build. Call it after ``compile`` and before ``fit``.
    With ``jit_compile=True`` where TensorFlow cannot XLA-compile Keras' whole step (CPU
    workers: "Collectives are not yet implemented for CPU devices when compiling with XLA";
    ``MirroredStrategy`` over several CPU devices: the compiled step reads another device's
    variable), the train step is split: forward pass, loss and gradients of each replica are
    XLA-compiled (one function with no collective), and the gradient all-reduce, optimizer
    update and metrics run outside XLA. A warning says so. Evaluation then runs without XLA.

    Args:
        model: a ``keras.Model`` created under the strategy's scope.

    Returns:
        The same model.

    Example:

    >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()      # doctest: +SKIP
    >>> with strategy.scope():                                       # doctest: +SKIP
    ...     model = build_model(); model.compile(...)
    >>> enable_multiworker_fit(model).fit(dataset, epochs=10)        # doctest: +SKIP
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: {type(model).__name__}")
    if getattr(model, _PATCHED, False):
        return model
    reason = jit_compile_obstacle(model.distribute_strategy)
    if reason and getattr(model, "jit_compile", False):
        warnings.warn(f"{reason} Only each replica's forward pass, loss and gradients are "
                      "XLA-compiled; the all-reduce and the optimizer update are not.",
                      stacklevel=2)
        model.train_step = _xla_local_train_step(model)
        model.jit_compile = False
    if not getattr(model, _PATCHED, False):
        model._maybe_symbolic_build = types.MethodType(_symbolic_build_without_reduce, model)
        model.train_step = _rank1_logs(model.train_step)
        model.test_step = _rank1_logs(model.test_step)
        object.__setattr__(model, _PATCHED, True)
    return model


def multiworker_strategy(timeout_seconds: float = 300.0) -> tf.distribute.MultiWorkerMirroredStrategy:
    """A ``MultiWorkerMirroredStrategy`` (cluster from ``TF_CONFIG``) whose peers answered.

    TensorFlow's coordination service waits for every worker to register with no practical
    bound (its default is an hour) inside the strategy's constructor. This sets that
    registration timeout and the collective timeout to ``timeout_seconds`` and runs one
    all-reduce, so that an unreachable peer fails here, with a message naming the cluster.

    Args:
        timeout_seconds: how long to wait for the other workers. Defaults to `300.0`.

    Returns:
        The strategy.

    Raises:
        TimeoutError: the peers did not register or answer within ``timeout_seconds``. (The
            chief, worker 0, hosts the coordination service and keeps waiting for late
            workers as TensorFlow does; every other worker gets this error.)
    """
    import json
    import os

    from tensorflow.python.eager import context

    ctx = context.context()
    configure = ctx.configure_coordination_service

    def configure_with_timeout(*args, **kwargs):
        kwargs["cluster_register_timeout_in_ms"] = int(timeout_seconds * 1000)
        return configure(*args, **kwargs)

    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_seconds)
    ctx.configure_coordination_service = configure_with_timeout
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        value = strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
            tf.errors.AbortedError, tf.errors.InternalError) as err:
        config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        raise TimeoutError(
            f"worker {config.get('task')} could not reach its peers {config.get('cluster')} "
            f"within {timeout_seconds:g} s: start every worker of TF_CONFIG, check the "
            f"addresses and ports. Cause: {str(err).strip().splitlines()[0][:200]}"
        ) from None
    finally:
        ctx.configure_coordination_service = configure
    if float(value) != float(strategy.num_replicas_in_sync):
        raise RuntimeError(f"multi-worker handshake summed {float(value)}, expected "
                           f"{strategy.num_replicas_in_sync}")
    return strategy
