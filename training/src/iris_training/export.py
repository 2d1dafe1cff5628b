"""What a trained model is shipped and shown as, besides itself: the ONNX graph the API serves
(with everything a server needs in its metadata) and the confusion-matrix figure of a run.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
from matplotlib.figure import Figure
from skl2onnx import to_onnx as skl_to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.neural_network import MLPClassifier

from iris_core import FEATURES, N_FEATURES, drift

#: The name of the ONNX graph's input (float32 [N, 4]).
ONNX_INPUT = "input"


def to_onnx(
    model: MLPClassifier, classes: list[str], x_reference: np.ndarray | None = None
) -> onnx.ModelProto:
    """ONNX graph with plain outputs (`label` int64 [N], `probabilities` float32 [N, C]) and the
    class names, feature names and (given rows `x_reference`, the training inputs) the input
    drift reference statistics in its metadata, so a server needs nothing else."""
    onx: onnx.ModelProto = skl_to_onnx(
        model,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, N_FEATURES]))],
        options={id(model): {"zipmap": False}},
    )
    props = {"class_names": json.dumps(classes), "features": json.dumps(list(FEATURES))}
    if x_reference is not None:
        # float32, as the model (and so the server) sees the inputs: a value on a bin edge
        # must fall on the same side here and there (5.1 in float32 is 5.0999999...).
        x32 = x_reference.astype(np.float32)
        columns = {name: x32[:, i].tolist() for i, name in enumerate(FEATURES)}
        props[drift.METADATA_KEY] = drift.dumps(drift.reference_from_columns(columns))
    onnx.helper.set_model_props(onx, props)
    return onx


def run_onnx(onx: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of the graph on rows `x` (as float32, what a server sends),
    in onnxruntime: how an export is checked against the scikit-learn model it came from."""
    session = onnxruntime.InferenceSession(
        onx.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    label, proba = session.run(None, {ONNX_INPUT: x.astype(np.float32)})
    return label, proba


def confusion_figure(cm: np.ndarray, classes: list[str]) -> Figure:
    """A figure of its own (no pyplot state, no GUI backend): fine on a headless machine."""
    figure = Figure(figsize=(5, 4.5))
    ax = figure.subplots()
    display = ConfusionMatrixDisplay(cm, display_labels=[c.removeprefix("Iris-") for c in classes])
    display.plot(ax=ax, cmap="Blues", colorbar=False)
    ax.set_title("Confusion matrix (test set)")
    figure.tight_layout()
    return figure
