"""A served model: an ONNX file (from the model's source) in an onnxruntime session, checked
before use."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from iris_core import CLASS_NAMES, EXAMPLES, N_FEATURES, drift
from iris_core.registry import AliasedVersion

#: What the models output (skl2onnx, zipmap off), in this order.
OUTPUT_NAMES = ["label", "probabilities"]
#: The known input every new model is checked on before it is served (one test-set row a class).
PROBE = np.array(list(EXAMPLES.values()), dtype=np.float32)


class ModelError(Exception):
    """A downloaded model cannot be served (bad file, wrong shape, wrong classes, ...)."""


@dataclass(frozen=True, slots=True)
class Outputs:
    labels: npt.NDArray[np.int64]
    probabilities: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Predictor:
    """An immutable model; swapped whole, never mutated. It records nothing: counting a call
    as a prediction is `iris_api.predicting.Predictions.predict`'s job, so /suggest can ask
    the model's opinion without it being counted."""

    version: AliasedVersion
    session: ort.InferenceSession
    input_name: str
    #: The training inputs' reference bins (ONNX metadata), for the drift score; None if absent.
    reference: dict[str, drift.FeatureReference] | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def test_accuracy(self) -> float | None:
        try:
            return float(self.version.tags["test_accuracy"])
        except (KeyError, ValueError):
            return None

    def infer(self, x: npt.NDArray[np.float32]) -> Outputs:
        """Raw outputs for rows `x` (float32, [N, 4])."""
        labels, probabilities = self.session.run(OUTPUT_NAMES, {self.input_name: x})
        return Outputs(labels, probabilities)


def session_from_bytes(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
        raise ModelError(f"onnxruntime cannot load the model: {e}") from e


def check(session: ort.InferenceSession) -> str:
    """The input name, after the model answered the probe as a classifier of our classes must."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].shape[-1] != N_FEATURES:
        raise ModelError(f"expected one input of {N_FEATURES} features, got {inputs}")
    names = [o.name for o in session.get_outputs()]
    if names != OUTPUT_NAMES:
        raise ModelError(f"expected outputs label and probabilities, got {names}")
    meta = session.get_modelmeta().custom_metadata_map
    if "class_names" in meta and tuple(json.loads(meta["class_names"])) != CLASS_NAMES:
        raise ModelError(f"model classes {meta['class_names']} are not {list(CLASS_NAMES)}")
    try:
        labels, probabilities = session.run(None, {inputs[0].name: PROBE})
    except Exception as e:
        raise ModelError(f"the model fails on a known input: {e}") from e
    if probabilities.shape != (len(PROBE), len(CLASS_NAMES)):
        raise ModelError(f"probabilities of shape {probabilities.shape} for {len(PROBE)} rows")
    if not np.all(np.isfinite(probabilities)) or not np.allclose(
        probabilities.sum(axis=1), 1, atol=1e-3
    ):
        raise ModelError("probabilities are not finite or do not sum to 1")
    if not np.array_equal(labels, probabilities.argmax(axis=1)):
        raise ModelError("labels disagree with the most probable class")
    if labels[0] != CLASS_NAMES.index("Iris-setosa"):
        raise ModelError("the model does not recognise a textbook Iris-setosa")
    return str(inputs[0].name)


def reference(session: ort.InferenceSession) -> dict[str, drift.FeatureReference] | None:
    """The drift reference statistics in the model's metadata; None for a model without."""
    text = session.get_modelmeta().custom_metadata_map.get(drift.METADATA_KEY)
    if text is None:
        return None
    try:
        return drift.loads(text)
    except ValueError as e:
        raise ModelError(f"the model's drift reference is malformed: {e}") from e


def build(version: AliasedVersion, model: bytes, threads: int) -> Predictor:
    """A served model from a version's ONNX file, checked; ModelError if it cannot serve."""
    session = session_from_bytes(model, threads)
    return Predictor(version, session, check(session), reference(session))
