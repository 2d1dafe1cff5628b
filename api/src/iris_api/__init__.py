"""iris-mlops prediction service: FastAPI + onnxruntime, following the MLflow model registry."""
