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
"""
from __future__ import annotations

import tensorflow as tf

from keras_facemargin.ops.cosine import cosine_logits


def shard_logits(embeddings, labels, centres, offset, margin):
    """Margin logits of the batch over one shard of the class centres.

    Args:
        embeddings: (B, D) float32, the whole batch.
        labels: (B,) int32 global class ids.
        centres: (D, C_shard) this replica's centres, global classes ``offset + j``.
        offset: first global class id of the shard (int or scalar tensor).
        margin: a :class:`~keras_facemargin.margins.Margin` (e.g. ``ArcMargin()``).

    Returns:
        ``(logits, onehot)``: (B, C_shard) scaled margin logits and the (B, C_shard) one-hot of
        the labels that fall in the shard (rows of other shards are zero).

    Example:
    >>> logits, onehot = shard_logits(x, y, w[:, :500], 0, ArcMargin())  # doctest: +SKIP
    """
    width = tf.shape(centres)[1]
    local = tf.cast(labels, tf.int32) - tf.cast(offset, tf.int32)
    inside = tf.logical_and(local >= 0, local < width)
    local = tf.where(inside, local, width)  # other shards: the extra zero column
    cos, x_norm, kernel_norm = cosine_logits(embeddings, centres, clip=True)
    padded = tf.concat([cos, tf.zeros_like(cos[:, :1])], axis=1)
    context = {"x_norm": x_norm, "kernel_norm": tf.concat([kernel_norm, [1.0]], 0),
               "training": True, "embeddings": embeddings, "sub_centers": 1}
    logits = margin.logits(padded, local, context)[:, :-1]
    onehot = tf.one_hot(local, width + 1, dtype=logits.dtype)[:, :-1]
    return logits, onehot


def sharded_margin_loss_and_grads(embeddings, labels, centres, offset, margin):
    """Mean margin cross-entropy over all shards and its gradients; call inside ``strategy.run``.

    Args:
        embeddings: (B, D) float32, the whole (all-gathered) batch, the same on every replica.
        labels: (B,) int32 global class ids.
        centres: (D, C_shard) this replica's centres.
        offset: first global class id of this replica's shard.
        margin: a :class:`~keras_facemargin.margins.Margin`.

    Returns:
        ``(loss, grad_embeddings, grad_centres)``: the scalar mean loss (equal on every
        replica), the (B, D) embedding gradient (all-reduced, equal on every replica) and the
        (D, C_shard) gradient of this replica's centres.

    Example:
    >>> strategy.run(sharded_margin_loss_and_grads, (x, y, shards, offsets, ArcMargin()))  # doctest: +SKIP
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError("sharded_margin_loss_and_grads must run in a replica context "
                           "(inside strategy.run)")
    with tf.GradientTape() as tape:
        tape.watch([embeddings, centres])
        logits, onehot = shard_logits(embeddings, labels, centres, offset, margin)
    # tf.distribute.ReduceOp has only SUM and MEAN: the max is an all-gather of (N, B) maxima
    local_max = tf.stop_gradient(tf.reduce_max(logits, axis=1))
    row_max = tf.reduce_max(ctx.all_gather(local_max[None], axis=0), axis=0)
    exp = tf.exp(logits - row_max[:, None])
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(exp, axis=1))
    target = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(logits * onehot, axis=1))
    loss = tf.reduce_mean(tf.math.log(total) + row_max - target)
    batch = tf.cast(tf.shape(logits)[0], logits.dtype)
    upstream = (exp / total[:, None] - onehot) / batch
    grad_x, grad_w = tape.gradient(logits, [embeddings, centres], output_gradients=upstream)
    grad_x = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grad_x)
    return loss, grad_x, grad_w
