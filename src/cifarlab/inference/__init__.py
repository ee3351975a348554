"""Using trained models: load and predict (predict.py), test-set evaluation (evaluate.py),
ONNX and safetensors export (export.py)."""
