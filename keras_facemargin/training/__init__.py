"""Training at scale (TensorFlow): multi-worker fit, strategy checks, Partial FC, checkpoints."""

import importlib

_PUBLIC = {
    "enable_multiworker_fit": "keras_facemargin.training.multiworker",
    "multiworker_strategy": "keras_facemargin.training.multiworker",
    "check_jit_compile": "keras_facemargin.training.strategy",
    "jit_compile_obstacle": "keras_facemargin.training.strategy",
    "PartialFCHead": "keras_facemargin.training.partial_fc",
    "PartialFCLoss": "keras_facemargin.training.partial_fc",
    "sample_classes": "keras_facemargin.training.partial_fc",
    "RowSparseSGD": "keras_facemargin.training.sparse_sgd",
    "AtomicBackupAndRestore": "keras_facemargin.training.fault_tolerance",
    "ShardedMarginTrainer": "keras_facemargin.training.sharded_softmax",
    "shard_logits": "keras_facemargin.training.sharded_softmax",
    "sharded_margin_loss_and_grads": "keras_facemargin.training.sharded_softmax",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'keras_facemargin.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
