"""The Open Inference Protocol (KServe V2) for the served model: what an infer request asks for,
independent of the wire (`InferRequest`, `InferResult`), and its REST encoding: JSON, or JSON
followed by tensor bytes (the binary tensor data extension, framed by the
`Inference-Header-Content-Length` header), both ways, and the classification extension's
top-k strings. The data plane (`iris_api.dataplane`) runs an `InferRequest`; the REST entries
decode one with `decode_rest` and encode the result with `encode_rest`; a gRPC entry does the
same with its messages.

Every tensor is held to the same limits whichever way it came: shape [N, 4], N up to the batch
limit, every row as long as the shape says, measurements finite, greater than 0 and at most
30 cm as float32 (`iris_api.bodies.check_rows`).

Why binary: a client sends 16 bytes a row instead of about 30 characters of JSON, and numpy
reads them without a parser; standard clients (tritonclient) use it by default.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from iris_api.bodies import (
    BINARY,
    FLOAT32_ZERO,
    HEADER_LENGTH,
    INFER_BODY,
    check_rows,
    problem,
    read_json,
    require,
    split_binary,
)
from iris_api.errors import Answer, InvalidInput
from iris_api.schemas import V2InferRequest
from iris_core import CLASS_NAMES, MEASUREMENT_MAX_CM, N_FEATURES

#: The extensions of the protocol this server implements, as its server metadata lists them.
EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_configuration",
    "model_repository",
    "statistics",
]
INFER_ACCEPTED = (
    "JSON, or JSON then binary tensors (Content-Type: application/json, "
    "application/octet-stream or none)"
)
#: Bytes of one FP32 measurement.
_FP32 = 4
#: The keys of the requests `read_simple` reads.
_SIMPLE_REQUEST = frozenset({"id", "inputs"})
_SIMPLE_TENSOR = frozenset({"name", "shape", "datatype", "data"})
#: The model's outputs, in their order.
OUTPUT_NAMES = ("label", "probabilities")


@dataclass(frozen=True, slots=True)
class Wanted:
    """An output asked for: its name, whether as raw bytes (REST: binary data after the JSON;
    gRPC: `raw_output_contents`), and how many top classes (0: the tensor itself)."""

    name: str
    raw: bool = False
    classes: int = 0


#: Both outputs as typed data: what a request that names no outputs gets.
DEFAULT_OUTPUTS = tuple(Wanted(name) for name in OUTPUT_NAMES)


@dataclass(frozen=True, slots=True)
class InferRequest:
    """What an infer request asks, whatever its wire: its id, the input rows (float32 [N, 4],
    checked) and the outputs wanted, in order."""

    id: str | None
    x: npt.NDArray[np.float32]
    outputs: tuple[Wanted, ...] = DEFAULT_OUTPUTS


@dataclass(frozen=True, slots=True)
class InferResult:
    model_name: str
    model_version: str
    id: str | None
    labels: npt.NDArray[np.int64]
    probabilities: npt.NDArray[np.float32]
    outputs: tuple[Wanted, ...]


def wanted_outputs(
    asked: Sequence[tuple[str, bool | None, int]], raw_by_default: bool
) -> tuple[Wanted, ...]:
    """The outputs to send, in the order `asked` (name, raw or None for the default, top-k
    classes); both when none is asked. 422 for one asked twice, or a classification of `label`
    (which holds class indexes, not scores)."""
    if not asked:
        return tuple(Wanted(name, raw_by_default) for name in OUTPUT_NAMES)
    wanted, problems, seen = [], [], set()
    for i, (name, raw, classes) in enumerate(asked):
        if name in seen:
            problems.append(problem(("body", "outputs", i, "name"), "asked for twice"))
        seen.add(name)
        if classes and name == "label":
            problems.append(
                problem(
                    ("body", "outputs", i, "parameters", "classification"),
                    "applies to probabilities (label holds class indexes, not scores)",
                )
            )
        wanted.append(Wanted(name, raw_by_default if raw is None else raw, classes))
    if problems:
        raise InvalidInput(problems)
    return tuple(wanted)


def classify(probabilities: npt.NDArray[np.float32], k: int) -> list[str]:
    """The classification extension: per row the top `k` classes as "score:index:label", best
    first (ties in class order), rows one after the other."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        f"{row[i]:.6f}:{i}:{CLASS_NAMES[i]}"
        for row, best in zip(probabilities.tolist(), order.tolist(), strict=True)
        for i in best
    ]


# --- REST ---------------------------------------------------------------------------------


def decode_rest(
    content_type: str, header_length: str | None, body: bytes, batch_limit: int
) -> InferRequest:
    """An infer request's REST body: JSON, or JSON then binary tensors; 415 for another media
    type, 422 naming the part at fault."""
    require(content_type, INFER_BODY, INFER_ACCEPTED)
    if header_length is None:
        simple = read_simple(body, batch_limit)
        if simple is not None:
            return simple
    return read_full(header_length, body, batch_limit)


def read_full(header_length: str | None, body: bytes, batch_limit: int) -> InferRequest:
    """Any infer request (JSON, or JSON then binary tensors), every rule checked: 422 naming
    each part at fault."""
    header, binary = split_binary(header_length, body)
    request = read_json(header, V2InferRequest)
    tensor = request.inputs[0]
    n, width = tensor.shape
    where = ("body", "inputs", 0)
    problems: list[dict[str, Any]] = []
    if width != N_FEATURES:
        problems.append(problem((*where, "shape", 1), f"must be {N_FEATURES} (the measurements)"))
    if n > batch_limit:
        problems.append(problem((*where, "shape", 0), f"at most {batch_limit} rows"))
    ragged = [
        problem(
            (*where, "data", i),
            f"row {i} has {length} values; shape [{n}, {width}] wants {width}",
            "row_length",
        )
        for i, length in enumerate(tensor.row_lengths or [])
        if length != width
    ]
    problems += ragged
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is None:
        problems += _json_problems(tensor.data, n, width, binary, counted=not ragged)
    else:
        problems += _binary_problems(tensor.data, n, width, size, binary)
    if problems:
        raise InvalidInput(problems)
    if tensor.data is not None:
        x = np.asarray(tensor.data, dtype=np.float32).reshape(n, width)
    else:
        x = np.frombuffer(binary, dtype="<f4").astype(np.float32).reshape(n, width)
    check_rows(x, lambda index: (*where, "data", index))
    raw = bool(request.parameters and request.parameters.binary_data_output)
    asked = [
        (
            o.name,
            o.parameters.binary_data if o.parameters else None,
            (o.parameters.classification or 0) if o.parameters else 0,
        )
        for o in request.outputs or []
    ]
    return InferRequest(request.id, x, wanted_outputs(asked, raw))


def read_simple(body: bytes, batch_limit: int) -> InferRequest | None:  # noqa: PLR0911, PLR0912
    """The common request read without pydantic: an optional string `id` and one FP32 [N, 4]
    tensor of JSON `data` (flat or rows of 4), nothing else, every value within the limits.
    None for anything else, valid or not: the full reader then reads it and names what is
    wrong. It accepts nothing that reader refuses (same limits, numbers only, no booleans, the
    float32 check), and takes a third of its time (one orjson call, a few checks)."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(request) is not dict or not request.keys() <= _SIMPLE_REQUEST:
        return None
    request_id = request.get("id")
    inputs = request.get("inputs")
    if (request_id is not None and type(request_id) is not str) or type(inputs) is not list:
        return None
    if len(inputs) != 1 or type(tensor := inputs[0]) is not dict:
        return None
    if tensor.keys() != _SIMPLE_TENSOR or tensor["datatype"] != "FP32":
        return None
    shape, data = tensor["shape"], tensor["data"]
    if type(tensor["name"]) is not str or type(shape) is not list or type(data) is not list:
        return None
    if len(shape) != 2 or type(n := shape[0]) is not int or type(shape[1]) is not int:
        return None
    if shape[1] != N_FEATURES:
        return None
    if not 1 <= n <= batch_limit or not data:
        return None
    if type(data[0]) is list:  # rows, each as long as the shape says
        if not all(type(row) is list and len(row) == N_FEATURES for row in data):
            return None
        data = [x for row in data for x in row]
    if len(data) != n * N_FEATURES:
        return None
    for value in data:  # above FLOAT32_ZERO: positive as float32 too
        if (type(value) is not float and type(value) is not int) or not (
            FLOAT32_ZERO < value <= MEASUREMENT_MAX_CM
        ):
            return None
    return InferRequest(request_id, np.array(data, dtype=np.float32).reshape(n, N_FEATURES))


def _json_problems(
    data: list[float] | None, n: int, width: int, binary: bytes, counted: bool = True
) -> list[dict[str, Any]]:
    """What is wrong with a tensor sent as JSON `data` (its count of values too, `counted`,
    unless its rows were already found ragged)."""
    where = ("body", "inputs", 0, "data")
    problems = []
    if data is None:
        problems.append(
            problem(
                where,
                "Field required (or parameters.binary_data_size, with the tensor's bytes after "
                "the JSON)",
                "missing",
            )
        )
    elif counted and len(data) != n * width:
        problems.append(problem(where, f"{len(data)} values for shape [{n}, {width}]"))
    if binary:
        problems.append(
            problem(
                ("header", HEADER_LENGTH),
                f"{len(binary)} bytes follow the JSON, but no input has "
                "parameters.binary_data_size",
            )
        )
    return problems


def _binary_problems(
    data: list[float] | None, n: int, width: int, size: int, binary: bytes
) -> list[dict[str, Any]]:
    """What is wrong with a tensor sent as binary data (`size` bytes said, `binary` sent)."""
    where = ("body", "inputs", 0)
    problems = []
    if data is not None:
        problems.append(
            problem((*where, "data"), "give data or parameters.binary_data_size, not both")
        )
    if size != n * width * _FP32:
        problems.append(
            problem(
                (*where, "parameters", "binary_data_size"),
                f"{size} bytes for FP32 shape [{n}, {width}] (that is {n * width * _FP32})",
                value=size,
            )
        )
    elif len(binary) != size:
        problems.append(
            problem(
                ("header", HEADER_LENGTH),
                f"{len(binary)} bytes follow the JSON, parameters.binary_data_size says {size}",
            )
        )
    return problems


def encode_rest(result: InferResult) -> Answer:
    """The infer response: JSON, or JSON then the outputs asked for as binary, in order."""
    n = len(result.labels)
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in result.outputs:
        tensor: dict[str, Any]
        if output.classes:
            strings = classify(result.probabilities, output.classes)
            tensor = {"name": output.name, "shape": [n, output.classes], "datatype": "BYTES"}
            if output.raw:
                blobs.append(
                    b"".join(struct.pack("<I", len(s)) + s for s in (t.encode() for t in strings))
                )
            else:
                tensor["data"] = strings
        else:
            values: npt.NDArray[Any]
            if output.name == "label":
                tensor = {"name": output.name, "shape": [n], "datatype": "INT64"}
                values, little = result.labels, "<i8"
            else:
                shape = [n, len(CLASS_NAMES)]
                tensor = {"name": output.name, "shape": shape, "datatype": "FP32"}
                values, little = result.probabilities, "<f4"
            if output.raw:
                blobs.append(values.astype(little, copy=False).tobytes())
            else:
                tensor["data"] = values.ravel().tolist()
        if output.raw:
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": result.model_name, "model_version": result.model_version}
    if result.id is not None:
        body["id"] = result.id
    body["outputs"] = tensors
    header = orjson.dumps(body)
    if not blobs:
        return Answer(200, header)
    return Answer(
        200, header + b"".join(blobs), {HEADER_LENGTH: str(len(header))}, content_type=BINARY
    )
