"""SIGNS hand-sign classifier: the original ResNet50, trained from scratch and served over HTTP."""

from signs_resnet.answer import decide
from signs_resnet.data.preprocess import prepare, prepare_image
from signs_resnet.inference.forward import predict
from signs_resnet.model import ResNet50, convolutional_block, identity_block
from signs_resnet.model_file import load_model

__all__ = ["ResNet50", "convolutional_block", "decide", "identity_block", "load_model", "predict", "prepare",
           "prepare_image"]
__version__ = "0.1.0"
