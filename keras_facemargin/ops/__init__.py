"""Stateless ``keras.ops`` building blocks (cosine core, distances, masks, mining)."""

from keras_facemargin.ops.cosine import cosine_logits, l2_normalize, safe_acos, safe_norm

__all__ = ["cosine_logits", "l2_normalize", "safe_acos", "safe_norm"]
