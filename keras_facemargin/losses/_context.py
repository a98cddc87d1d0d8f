"""Losses that read the context a layer attached to its output tensor.

A margin head (or a :class:`~keras_facemargin.losses.center.CenterLossLayer`) called inside a
model attaches a dict (its state variables, norms, the training flag) to the tensor it returns.
``model.fit`` hands that tensor to the loss as ``y_pred``; :class:`ContextLoss` picks the dict up
in ``__call__`` (before Keras converts ``y_pred``) and serves it to ``call`` through a
``ContextVar``, which keeps ``tf.distribute`` replicas (one tracing thread each) apart.
"""

from __future__ import annotations

import contextvars

import keras
from keras.src.backend.common.symbolic_scope import in_symbolic_scope

from keras_facemargin.margins.base import CONTEXT_ATTR

_CONTEXT: contextvars.ContextVar = contextvars.ContextVar("keras_facemargin_context", default=None)


def attach_context(tensor, context: dict) -> None:
    """Attach ``context`` to ``tensor`` (silently skipped for tensor types refusing attributes)."""
    try:
        setattr(tensor, CONTEXT_ATTR, context)
    except AttributeError:
        pass


class ContextLoss(keras.losses.Loss):
    """A ``keras.losses.Loss`` whose ``call`` can read ``self.context()``."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        token = _CONTEXT.set(getattr(y_pred, CONTEXT_ATTR, None))
        try:
            return super().__call__(y_true, y_pred, sample_weight=sample_weight)
        finally:
            _CONTEXT.reset(token)

    @staticmethod
    def context() -> dict | None:
        """The context attached to the ``y_pred`` being reduced, or None."""
        return _CONTEXT.get()

    @staticmethod
    def building() -> bool:
        """True while Keras builds the compiled loss on shape-only placeholders."""
        return in_symbolic_scope()

    def require_context(self, key: str, producer: str):
        """The context entry ``key``, or a clear error saying which layer must produce y_pred."""
        context = self.context()
        if context is None or key not in context:
            raise ValueError(
                f"{type(self).__name__} needs `y_pred` to be the output of {producer} inside the "
                "same model (the loss reads that layer's state from it); the given y_pred "
                f"carries no {key!r}."
            )
        return context[key]
