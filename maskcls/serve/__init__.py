"""Serving: a trained recipe exported to ONNX (`export`), loaded with its face crop and vote as
one model (`model.ServedModel`), behind a FastAPI service and its page (`app`)."""
