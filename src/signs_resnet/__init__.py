"""SIGNS hand-sign classifier: the original ResNet50, trained from scratch and served over HTTP."""

from .data import prepare, prepare_image
from .model import ResNet50, convolutional_block, identity_block
from .predict import load_model, predict

__all__ = ["ResNet50", "convolutional_block", "identity_block", "load_model", "predict", "prepare", "prepare_image"]
__version__ = "0.1.0"
