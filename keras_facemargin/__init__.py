"""keras_facemargin: margin heads and metric losses for face recognition in Keras 3."""

__version__ = "0.1.0"
