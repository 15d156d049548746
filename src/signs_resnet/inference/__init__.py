"""Running a trained model outside training: the forward pass, inference engines, ONNX export, classifying files."""
