"""The models wing: iresnet, checkpoints, ONNX I/O, and model sources (seeded, .pth, .onnx)."""
