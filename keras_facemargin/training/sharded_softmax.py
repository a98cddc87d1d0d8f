"""Model-parallel margin softmax: class centres sharded across replicas (TensorFlow).

Each replica owns ``C / N`` class centres (a contiguous block starting at ``offset``) and sees
the whole (all-gathered) batch of embeddings and labels. The softmax cross-entropy over all C
classes is assembled from per-shard pieces with three all-reduces of (B,) vectors:

    M   = max over replicas of max_j l_j         (row max, a stabilizer: no gradient; an
                                                  all_gather of (N, B), since
                                                  tf.distribute.ReduceOp has no MAX)
    S   = all_reduce_SUM(sum_j exp(l_j - M))     (partition function)
    t   = all_reduce_SUM(l_y if y in shard else 0)
    loss_b = log S + M - t

and the gradient of the mean loss w.r.t. the local logits is ``(exp(l - M) / S - onehot) / B``,
back-propagated through the local cosine/margin computation only: the centre gradient stays on
its replica; the embedding gradient is the all-reduced SUM of the replicas' contributions. No
replica ever holds more than (B, C / N) logits. The margin is the head's own
:class:`~keras_facemargin.margins.Margin` (``Margin.logits``), applied on the shard with the
labels of other shards pointed at an extra zero column that is dropped afterwards.

Used by :meth:`keras_facemargin.FaceRecognizer.sharded_train_step` (a head with
``model_parallel=True`` in ``model.fit``) and by the low-level :class:`ShardedMarginTrainer`.
"""
from __future__ import annotations

import tensorflow as tf

from keras_facemargin.layers.head import apply_updates, margin_context
from keras_facemargin.ops.cosine import cosine_logits


def shard_logits(embeddings, labels, centres, offset, margin, state=None, training=True,
                 sub_centers: int = 1, all_reduce=None, sample=None):
    """Margin logits of the batch over one shard of the class centres.

    Args:
        embeddings: (B, D) float32, the whole batch.
        labels: (B,) int32 global class ids.
        centres: (C_shard * K, D) this replica's centres, one per row (the heads' layout,
            sub-centres of a class in consecutive rows), global classes ``offset + j``.
        offset: first global class id of the shard (int or scalar tensor).
        margin: a :class:`~keras_facemargin.margins.Margin` (e.g. ``ArcMargin()``).
        state: the margin's state (from ``margin.build``), e.g. AdaFace's norm statistics.
        training: a training step (the margin's per-batch context, e.g. AdaFace's EMA).
        sub_centers: K sub-centres per class; the cosine is the max over them. Defaults to `1`.
        all_reduce: optional function summing a (B,) tensor over the replicas. Given, each
            row's target cosine (from the shard that holds its class) is all-reduced and fills
            the extra column that rows of other shards point at, so a margin that reads a row's
            target cosine beyond its own logit (CurricularFace's hard negatives and its batch
            mean ``t``) sees the true one on every replica; no gradient flows through it.
            Defaults to `None` (that column is 0).
        sample: optional ``(sample_rate, seed)``: PartialFC v2, the step sees
            ``ceil(C_shard * sample_rate)`` of the shard's classes, those of the batch's labels
            in the shard plus random others (:func:`~keras_facemargin.ops.sampling.sample_classes`,
            ``seed`` a ``keras.random.SeedGenerator``). Defaults to `None` (every class of the
            shard).

    Returns:
        ``(logits, onehot, context, valid)``: (B, M) scaled margin logits over the M classes
        the step saw (the shard, or its sample), the (B, M) one-hot of the labels that fall
        in them (rows of other shards are zero), the margin context with its pending state
        updates, and (B,) False for a row whose class the sample could not hold.

    Example:
    >>> logits, onehot, _, _ = shard_logits(x, y, w[:500], 0, ArcMargin())  # doctest: +SKIP
    """
    from keras_facemargin.ops.sampling import sample_classes

    classes = tf.shape(centres)[0] // sub_centers
    local = tf.cast(labels, tf.int32) - tf.cast(offset, tf.int32)
    inside = tf.logical_and(local >= 0, local < classes)
    valid = tf.ones_like(inside)
    if sample is not None:  # PartialFC v2: a sample of this shard
        sample_rate, seed = sample
        index, local = sample_classes(local, int(centres.shape[0]) // sub_centers, sample_rate,
                                      seed, inside=inside)
        valid = local >= 0
        local = tf.maximum(local, 0)
        rows = tf.reshape(index[:, None] * sub_centers + tf.range(sub_centers)[None], [-1])
        centres = tf.gather(centres, rows)
        classes = tf.shape(index)[0]
    local = tf.where(inside, local, classes)  # other shards: the extra column
    # the one cosine core (centres as rows), the margin's own context and state
    cos, x_norm, kernel_norm = cosine_logits(embeddings, centres, sub_centers, clip=True)
    extra = tf.zeros_like(cos[:, :1])
    if all_reduce is not None:
        mine = tf.gather(tf.concat([cos, extra], axis=1), local, batch_dims=1)
        extra = tf.stop_gradient(all_reduce(tf.where(inside, mine, tf.zeros_like(mine))))[:, None]
    padded = tf.concat([cos, extra], axis=1)
    context = margin_context(margin, state or {}, embeddings, x_norm,
                             tf.concat([kernel_norm, [1.0]], 0), training,
                             sub_centers=sub_centers)
    logits = margin.logits(padded, local, context)[:, :-1]
    onehot = tf.one_hot(local, classes + 1, dtype=logits.dtype)[:, :-1]
    return logits, onehot, context, valid


def gather_batch(context, embeddings, labels):
    """The whole batch on every replica, and where this replica's rows start in it.

    ``all_gather`` concatenates in replica order; per-replica batches may differ in size (the
    last batch of an epoch, an empty replica), so the offset is the sum of the sizes before.

    Returns:
        ``(all_embeddings, all_labels, start)``.
    """
    sizes = context.all_gather(tf.shape(embeddings)[:1], axis=0)
    start = tf.reduce_sum(sizes[:context.replica_id_in_sync_group])
    return (context.all_gather(embeddings, axis=0), context.all_gather(labels, axis=0), start)


def sharded_margin_loss_and_grads(embeddings, labels, centres, offset, margin, state=None,
                                  update_ok=None, sub_centers: int = 1, sample=None,
                                  variables=()):
    """Mean margin cross-entropy over all shards and its gradients; call inside ``strategy.run``.

    Args:
        embeddings: (B, D) float32, the whole (all-gathered) batch, the same on every replica.
        labels: (B,) int32 global class ids.
        centres: (C_shard * K, D) this replica's centres (rows).
        offset: first global class id of this replica's shard.
        margin: a :class:`~keras_facemargin.margins.Margin`.
        state: the margin's state variables (``margin.build``), updated here for a non-empty
            batch (every replica sees the same gathered batch: the same update everywhere).
        update_ok: optional scalar bool, the same on every replica: apply the state updates
            only where it holds (e.g. every label valid). Defaults to `None` (a non-empty batch).
        sub_centers: K sub-centres per class. Defaults to `1`.
        sample: optional ``(sample_rate, seed)``, PartialFC v2 (a sample of each shard, see
            :func:`shard_logits`). Defaults to `None`.
        variables: other (mirrored) trainable variables the margin reads, e.g. NormFace's
            learned scale. Defaults to `()`.

    Returns:
        ``(loss, grad_embeddings, grad_centres, valid, grad_variables)``: the scalar mean loss
        (equal on every replica; MagFace's regularizer included), the (B, D) embedding gradient
        (all-reduced, equal on every replica), the (C_shard * K, D) gradient of this replica's
        centres (zero on the rows a sample left out), a scalar bool, False when some replica's
        sample could not hold a row's class (then the state is not updated: the step must be
        dropped), and the gradients of ``variables``: this replica's share, to be summed over
        the replicas (as a Keras optimizer does with a mirrored variable's gradients).

    Example:
    >>> strategy.run(sharded_margin_loss_and_grads, (x, y, shards, offsets, ArcMargin()))  # doctest: +SKIP
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError("sharded_margin_loss_and_grads must run in a replica context "
                           "(inside strategy.run)")

    def all_reduce(value):
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([embeddings, centres])
        logits, onehot, context, valid = shard_logits(
            embeddings, labels, centres, offset, margin, state, sub_centers=sub_centers,
            all_reduce=all_reduce, sample=sample)
        regularization = margin.regularization(context)  # e.g. MagFace's g(a): per row
    held = all_reduce(tf.reduce_sum(tf.cast(tf.logical_not(valid), tf.float32))) == 0.0
    ok = tf.logical_and(tf.shape(embeddings)[0] > 0, held)
    apply_updates(context, ok if update_ok is None else tf.logical_and(ok, update_ok))
    # tf.distribute.ReduceOp has only SUM and MEAN: the max is an all-gather of (N, B) maxima
    local_max = tf.stop_gradient(tf.reduce_max(logits, axis=1))
    row_max = tf.reduce_max(ctx.all_gather(local_max[None], axis=0), axis=0)
    exp = tf.exp(logits - row_max[:, None])
    total = all_reduce(tf.reduce_sum(exp, axis=1))
    target = all_reduce(tf.reduce_sum(logits * onehot, axis=1))
    loss = tf.reduce_mean(tf.math.log(total) + row_max - target)
    batch = tf.cast(tf.shape(logits)[0], logits.dtype)
    upstream = (exp / total[:, None] - onehot) / batch
    grad_x, grad_w, *grad_v = tape.gradient(logits, [embeddings, centres, *variables],
                                            output_gradients=upstream)
    grad_x = all_reduce(grad_x)
    if regularization is not None:  # the same on every replica: added after the all-reduce
        loss = loss + regularization
        grad_x = grad_x + tape.gradient(regularization, embeddings)
    del tape
    return loss, grad_x, tf.convert_to_tensor(grad_w), held, grad_v


class ShardedMarginTrainer:
    """Train a backbone with its class centres sharded over the replicas of a strategy: the
    low-level loop. ``model.fit`` of a :class:`~keras_facemargin.FaceRecognizer` whose head has
    ``model_parallel=True`` is the path to use (callbacks, checkpoints, ``evaluate``); both run
    :func:`sharded_margin_loss_and_grads`.

    Replica ``i`` of ``N`` owns the centres of classes ``[i C/N, (i + 1) C/N)`` in a plain
    variable on its own device (not a mirrored one: no replica holds all C centres). A step
    (:meth:`train_step`) runs, on every replica, the backbone on the local batch, all-gathers the
    embeddings and labels, computes the softmax over all C classes with
    :func:`sharded_margin_loss_and_grads`, updates its centres locally (SGD with momentum), and
    back-propagates its slice of the all-reduced embedding gradient into the backbone, whose
    gradients the (mirrored) Keras optimizer all-reduces as in ``model.fit``. The result equals
    training the full head on the concatenated global batch (tested on 2 logical CPU devices).

    Args:
        backbone: a Keras model from images to (B, D) embeddings, built under
            ``strategy.scope()``.
        num_classes: C, a multiple of the number of replicas.
        margin: a :class:`~keras_facemargin.margins.Margin` (e.g. ``ArcMargin()``).
        optimizer: the Keras optimizer of the backbone, created under ``strategy.scope()``.
        strategy: a ``tf.distribute`` strategy (``MirroredStrategy``,
            ``MultiWorkerMirroredStrategy``). Defaults to the current one.
        centre_learning_rate: SGD learning rate of the centres. Defaults to `0.1`.
        centre_momentum: SGD momentum of the centres. Defaults to `0.0`.
        initial_centres: optional (C, D) array, one centre per row (a head's ``kernel``);
            else ``initializer`` on each shard.
        initializer: Keras initializer of the centres. Defaults to `"glorot_uniform"`.

    Example:

    >>> strategy = tf.distribute.MirroredStrategy()                       # doctest: +SKIP
    >>> with strategy.scope():                                            # doctest: +SKIP
    ...     backbone, optimizer = make_backbone(), keras.optimizers.SGD(0.1)
    >>> trainer = ShardedMarginTrainer(backbone, 1_000_000, ArcMargin(), optimizer, strategy)
    >>> history = trainer.fit(dataset, epochs=1, steps_per_epoch=100)    # doctest: +SKIP
    """

    def __init__(self, backbone, num_classes: int, margin, optimizer, strategy=None,
                 centre_learning_rate: float = 0.1, centre_momentum: float = 0.0,
                 initial_centres=None, initializer="glorot_uniform"):
        import keras

        self.strategy = strategy or tf.distribute.get_strategy()
        replicas = self.strategy.num_replicas_in_sync
        if not isinstance(num_classes, int) or num_classes < replicas or num_classes % replicas:
            raise ValueError(
                f"`num_classes` must be a multiple of the number of replicas ({replicas}): each "
                f"replica owns num_classes / {replicas} centres. Received: "
                f"num_classes={num_classes!r}")
        if not 0.0 <= centre_momentum < 1.0:
            raise ValueError(f"`centre_momentum` must be in [0, 1). Received: {centre_momentum}")
        self.backbone, self.margin, self.optimizer = backbone, margin, optimizer
        with self.strategy.scope():  # the margin's state (EMA statistics, step counters)
            self._state_owner = keras.layers.Layer(name="margin_state")
            self.margin_state = margin.build(self._state_owner)
        self.num_classes, self.per_replica = num_classes, num_classes // replicas
        self.centre_learning_rate, self.centre_momentum = centre_learning_rate, centre_momentum
        dim = int(backbone.output_shape[-1])
        init = keras.initializers.get(initializer)
        self.shards, self.velocities = {}, {}
        devices = self.strategy.extended.worker_devices
        first = _first_local_replica(self.strategy)
        for local, device in enumerate(devices):
            replica = first + local
            start = replica * self.per_replica
            with tf.device(device):
                value = (init((self.per_replica, dim)) if initial_centres is None else
                         initial_centres[start:start + self.per_replica])
                self.shards[replica] = tf.Variable(value, dtype=tf.float32,
                                                   name=f"centres_{replica}")
                self.velocities[replica] = tf.Variable(tf.zeros_like(self.shards[replica]),
                                                       name=f"centre_velocity_{replica}")
        self._step = None

    def centres(self):
        """The (C_local, D) centres this process holds, replica order (all C in one process)."""
        return tf.concat([self.shards[r] for r in sorted(self.shards)], axis=0)

    def _replica_step(self, images, labels):
        ctx = tf.distribute.get_replica_context()
        replica = ctx.replica_id_in_sync_group
        shard, velocity = _pick(self.shards, replica), _pick(self.velocities, replica)
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        with tf.GradientTape() as tape:
            embeddings = tf.cast(self.backbone(images, training=True), tf.float32)
        everyone, everyone_labels, start = gather_batch(ctx, embeddings, labels)
        loss, grad_all, grad_centres, _, _ = sharded_margin_loss_and_grads(
            everyone, everyone_labels, tf.convert_to_tensor(shard),
            replica * self.per_replica, self.margin, self.margin_state)
        mine = grad_all[start:start + tf.shape(embeddings)[0]]  # this replica's rows
        weights = self.backbone.trainable_variables
        grads = tape.gradient(embeddings, weights, output_gradients=mine)
        self.optimizer.apply(grads, weights)  # Keras all-reduces (SUM) across replicas
        velocity.assign(self.centre_momentum * velocity - self.centre_learning_rate * grad_centres)
        shard.assign_add(velocity)
        return loss

    def train_step(self, images, labels):
        """One step on a distributed batch (as given by ``strategy.experimental_distribute_*``).

        Returns:
            The mean loss over the global batch (a scalar tensor).
        """
        if self._step is None:
            self._step = tf.function(lambda x, y: self.strategy.run(self._replica_step, (x, y)))
        losses = self._step(images, labels)
        return self.strategy.experimental_local_results(losses)[0]

    def fit(self, dataset, epochs: int = 1, steps_per_epoch: int | None = None,
            verbose: int = 1) -> dict:
        """Train on a ``tf.data`` dataset of (images, labels) global batches.

        Returns:
            ``{"loss": [mean loss of each epoch]}``, as Keras' ``History.history``.
        """
        import keras

        distributed = self.strategy.experimental_distribute_dataset(dataset)
        history = {"loss": []}
        for epoch in range(epochs):
            bar = keras.utils.Progbar(steps_per_epoch, verbose=verbose, unit_name="step")
            total, steps = 0.0, 0
            for images, labels in distributed:
                loss = float(self.train_step(images, labels))
                total, steps = total + loss, steps + 1
                bar.update(steps, [("loss", loss)])
                if steps_per_epoch and steps >= steps_per_epoch:
                    break
            history["loss"].append(total / max(steps, 1))
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.4f}")
        return history


def _first_local_replica(strategy) -> int:
    """Global id of this process's first replica (0 outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 0
    # MultiWorkerMirroredStrategy orders the replicas: the chief's first, then the workers'
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    task = 0 if resolver.task_type == "chief" else int(resolver.task_id) + int(has_chief)
    return task * len(strategy.extended.worker_devices)


def _pick(variables: dict, replica):
    """The variable of ``replica`` (a Python int in MirroredStrategy, else a tensor)."""
    if isinstance(replica, int):
        return variables[replica]
    value = tf.get_static_value(replica)
    if value is None:
        raise ValueError("ShardedMarginTrainer needs a static replica id")
    return variables[int(value)]
