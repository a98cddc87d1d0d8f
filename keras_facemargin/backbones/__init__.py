"""Face backbones as Keras models: 112x112x3 images in, 512-d embeddings out."""

from keras_facemargin.backbones.iresnet import iresnet, iresnet18, iresnet34, iresnet50, iresnet100
from keras_facemargin.backbones.mobilefacenet import mobilefacenet

__all__ = ["iresnet", "iresnet18", "iresnet34", "iresnet50", "iresnet100", "mobilefacenet"]
