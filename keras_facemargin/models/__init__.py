"""Task models: a backbone and a margin head trained with the labels handed over explicitly."""

from keras_facemargin.models.face_recognizer import FaceRecognizer, SkipNonFiniteSteps

__all__ = ["FaceRecognizer", "SkipNonFiniteSteps"]
