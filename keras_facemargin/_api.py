"""The one decorator that makes a class public and Keras-serializable."""

from __future__ import annotations

import keras

PACKAGE = "keras_facemargin"


def register(cls):
    """Register ``cls`` with Keras serialization under the ``keras_facemargin`` package.

    After ``import keras_facemargin``, ``keras.models.load_model`` and
    ``keras.saving.deserialize_keras_object`` find the class without ``custom_objects``.
    """
    return keras.saving.register_keras_serializable(package=PACKAGE, name=cls.__name__)(cls)
