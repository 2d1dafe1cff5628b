"""What the model does, beyond its accuracy: minimum functionality (the textbook flower of each
class), invariance (a change far below the measurements' 0.1 cm precision keeps the class) and
direction (larger petals move a setosa towards virginica), on the scikit-learn model and its
ONNX export alike.

The model comes from the project's own grid search (a small grid, in-process) on the prepared
data: no MLflow, no servers, a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.neural_network import MLPClassifier

from iris_core import CLASS_NAMES, EXAMPLES, FEATURES
from iris_testing.training import small_params
from iris_training.dataset import Dataset, load_dataset
from iris_training.export import run_onnx, to_onnx
from iris_training.search import search, select_best

SETOSA, VERSICOLOR, VIRGINICA = (
    CLASS_NAMES.index(name) for name in ("Iris-setosa", "Iris-versicolor", "Iris-virginica")
)

#: Far below what the data can tell apart: Fisher measured to 0.1 cm.
NUDGE_CM = 0.01

#: Steps along a direction path (from the setosa example, petals growing).
STEPS = np.linspace(0, 1, 41)


@dataclass(frozen=True)
class Trained:
    model: MLPClassifier
    export: onnx.ModelProto  # the ONNX graph, as training logs it
    data: Dataset

    def labels(self, x: np.ndarray) -> np.ndarray:
        """Labels from scikit-learn, after checking the ONNX export gives the same labels and
        probabilities (what the API would answer)."""
        onnx_label, onnx_proba = run_onnx(self.export, x)
        label = np.asarray(self.model.predict(x))
        np.testing.assert_array_equal(onnx_label, label)
        np.testing.assert_allclose(onnx_proba, self.model.predict_proba(x), atol=1e-5, rtol=0)
        return label


@pytest.fixture(scope="module")
def trained(data_dir: Path) -> Trained:
    data = load_dataset(data_dir)
    best = select_best(list(search(small_params(), data, n_jobs=1)))
    return Trained(best.model, to_onnx(best.model, data.classes, data.x_train), data)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_minimum_functionality_the_textbook_flower_of_each_class(
    trained: Trained, name: str
) -> None:
    (label,) = trained.labels(np.array([EXAMPLES[name]]))
    assert CLASS_NAMES[label] == name


@pytest.mark.parametrize("feature", FEATURES)
def test_invariance_a_nudge_below_the_measurement_precision_keeps_the_class(
    trained: Trained, feature: str
) -> None:
    x = trained.data.x_test
    before = trained.labels(x)
    for nudge in (-NUDGE_CM, NUDGE_CM):
        moved = x.copy()
        moved[:, FEATURES.index(feature)] += nudge
        np.testing.assert_array_equal(trained.labels(moved), before, err_msg=f"{nudge:+} cm")


@pytest.mark.parametrize(
    ("grow", "ends_in"),
    [
        pytest.param({"petal_length": 5.0}, {VERSICOLOR, VIRGINICA}, id="petal-length+5cm"),
        pytest.param({"petal_width": 2.5}, {VERSICOLOR, VIRGINICA}, id="petal-width+2.5cm"),
        # To 6.0 x 2.5 cm petals, past the virginica example's 5.1 x 1.9.
        pytest.param({"petal_length": 4.6, "petal_width": 2.3}, {VIRGINICA}, id="both"),
    ],
)
def test_direction_growing_petals_move_a_setosa_towards_virginica(
    trained: Trained, grow: dict[str, float], ends_in: set[int]
) -> None:
    """Along a path from the setosa example, petals growing and sepals fixed: the probability
    of virginica never falls, the class never steps back (setosa, versicolor, virginica are in
    order of petal size) and it leaves setosa."""
    start = np.array(EXAMPLES["Iris-setosa"])
    change = np.array([grow.get(name, 0.0) for name in FEATURES])
    path = start + STEPS[:, None] * change
    p_virginica = trained.model.predict_proba(path)[:, VIRGINICA]
    assert np.all(np.diff(p_virginica) >= -1e-9), p_virginica  # non-decreasing, up to rounding
    labels = trained.labels(path)
    assert labels[0] == SETOSA
    assert np.all(np.diff(labels) >= 0), labels
    assert labels[-1] in ends_in, labels
