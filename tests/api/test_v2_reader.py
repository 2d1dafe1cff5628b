"""iris_api.oip alone: the quick reader of common infer requests accepts nothing the full
reader refuses (ragged rows and values that are 0 in float32 included) and reads what it
accepts alike; the classification strings."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st

from iris_api.oip import classify, read_full, read_simple

LIMIT = 5

good: st.SearchStrategy[Any] = st.one_of(
    st.floats(min_value=1e-6, max_value=30, allow_nan=False),
    st.integers(min_value=1, max_value=30),
    st.sampled_from([30.0, 1e-300, 1e-46, 5.1]),
)
odd: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([0, 0.0, -1.5, 30.000001, 31, True, False, None, "5.1", [5.1], {}]),
    st.floats(min_value=-1, max_value=40, allow_nan=False),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """Infer requests, most of them valid, the rest off by one thing: a value, a length, the
    shape's width or type, the datatype, the name, a key, the id, a second tensor."""
    n = draw(st.integers(min_value=1, max_value=6))
    width = draw(st.sampled_from([4, 4, 4, 4, 4.0, True, 3, 5]))
    count = draw(st.sampled_from([4 * n] * 6 + [4 * n - 1, 4 * n + 1, 0]))
    data: list[Any] = draw(st.lists(good, min_size=count, max_size=count))
    corrupt, as_rows = draw(st.booleans()), draw(st.booleans())
    if data and corrupt:
        data[draw(st.integers(min_value=0, max_value=len(data) - 1))] = draw(odd)
    if data and len(data) % 4 == 0 and as_rows:
        data = [data[i : i + 4] for i in range(0, len(data), 4)]  # rows
        if len(data) > 1 and draw(st.booleans()):  # ragged: as many values, other rows
            data[1].insert(0, data[0].pop())
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["input"] * 5 + [7])),
        "shape": draw(st.sampled_from([[n, width]] * 8 + [[n], [n, 4, 1], [str(n), 4]])),
        "datatype": draw(st.sampled_from(["FP32"] * 8 + ["FP64"])),
        "data": data,
    }
    extra = draw(st.sampled_from([None] * 6 + ["parameters", "extra", "drop"]))
    if extra == "drop":
        del tensor[draw(st.sampled_from(sorted(tensor)))]
    elif extra is not None:
        tensor[extra] = {}
    request: dict[str, Any] = {"inputs": [tensor] * draw(st.sampled_from([1] * 8 + [2]))}
    request_id = draw(st.sampled_from([None, "absent", "absent", "r-1", 7]))
    if request_id != "absent":
        request["id"] = request_id
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        request["outputs"] = None
    return request


@settings(max_examples=1000, deadline=None, database=None)
@given(requests())
def test_the_quick_reader_accepts_only_what_the_full_reader_accepts(request: Any) -> None:
    body = json.dumps(request).encode()
    quick = read_simple(body, LIMIT)
    event("quick" if quick is not None else "full")
    if quick is None:
        return
    full = read_full(None, body, LIMIT)  # raises if the full reader refuses it
    assert quick.id == full.id
    np.testing.assert_array_equal(quick.x, full.x)
    assert quick.x.dtype == np.float32
    assert quick.outputs == full.outputs


def test_the_quick_reader_reads_the_common_requests() -> None:
    row = [5.1, 3.5, 1.4, 0.2]
    for request in (
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]},
        {
            "id": "a",
            "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [row, row]}],
        },
    ):
        quick = read_simple(json.dumps(request).encode(), LIMIT)
        assert quick is not None
        assert quick.x.shape[1] == 4
    assert read_simple(b"{", LIMIT) is None
    assert read_simple(b'{"inputs": [], "outputs": null}', LIMIT) is None


def test_classification_orders_classes_by_score_then_index() -> None:
    p = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2]], dtype=np.float32)
    assert classify(p, 2) == [
        "0.500000:1:Iris-versicolor",
        "0.300000:2:Iris-virginica",
        "0.400000:0:Iris-setosa",
        "0.400000:1:Iris-versicolor",
    ]
