"""Open Inference Protocol (KServe V2) infer for the served model, in JSON and in binary.

`V2Infer.answer` is the whole of an infer request once routed: it reads the request (JSON, or
JSON followed by tensor bytes: the binary tensor data extension, framed by the
`Inference-Header-Content-Length` header), holds it to the same limits whichever way the
tensor came (shape [N, 4], N up to the batch limit, measurements finite, greater than 0 and at
most 30 cm), predicts through `Predictions.predict`, and writes the answer: JSON, or JSON then
the bytes of the outputs asked for as binary, and the classification extension's top-k strings.
The ASGI fast path and the FastAPI route both call it, so they answer alike byte for byte.

Why binary: a client sends 16 bytes a row instead of about 30 characters of JSON, and numpy
reads them without a parser; standard clients (tritonclient) use it by default.
"""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from iris_api.errors import Answer, NotFound, UnsupportedMediaType
from iris_api.model import Predictor
from iris_api.predicting import Predictions
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
#: Request bodies an infer takes: JSON, with or without binary tensors after it. No
#: Content-Type is JSON too: the protocol does not require one, and clients send none.
MEDIA_TYPES = frozenset({"", "application/json", "application/octet-stream"})
ACCEPTED = "JSON, or JSON then binary tensors (Content-Type: application/json, application/octet-stream or none)"
HEADER_LENGTH = "Inference-Header-Content-Length"
_DIGITS = re.compile(r"[0-9]{1,12}")
#: Bytes of one FP32 measurement.
_FP32 = 4
#: At most this many bad values are named in one answer.
_MAX_PROBLEMS = 10
#: The keys of the requests `V2Infer.simple` reads.
_SIMPLE_REQUEST = frozenset({"id", "inputs"})
_SIMPLE_TENSOR = frozenset({"name", "shape", "datatype", "data"})


def problem(
    loc: tuple[str | int, ...], message: str, kind: str = "value_error", value: Any = None
) -> dict[str, Any]:
    """One validation problem in pydantic's shape, so every 422 reads alike."""
    return {"type": kind, "loc": loc, "msg": message, "input": value}


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


class V2Infer:
    """Infer requests for the model served as `name` (one per app)."""

    def __init__(self, predictions: Predictions, name: str, batch_limit: int) -> None:
        self.predictions = predictions
        self.name = name
        self.batch_limit = batch_limit

    def model(self, version: str | None) -> Predictor:
        """The served model; 404 when `version` is given and is not the one served."""
        return check_version(self.name, self.predictions.model(), version)

    def answer(
        self, content_type: str, header_length: str | None, body: bytes, version: str | None
    ) -> Answer:
        """The answer to one infer request; raises the errors `iris_api.errors.answer` maps."""
        if media_type(content_type) not in MEDIA_TYPES:
            raise UnsupportedMediaType(content_type, ACCEPTED)
        model = self.model(version)
        simple = self.simple(body) if header_length is None else None
        if simple is not None:
            request_id, x = simple
            wanted = _DEFAULT
        else:
            try:
                request, x = self.read(header_length, body)
                wanted = outputs(request)
            except RequestValidationError:
                self.predictions.stats.failed(model.version.version)
                raise
            request_id = request.id
        result = self.predictions.predict(model, x)
        return respond(
            self.name,
            model.version.version,
            request_id,
            wanted,
            result.labels,
            result.probabilities,
        )

    def simple(  # noqa: PLR0911, PLR0912 (an early out per check reads better than nesting)
        self, body: bytes
    ) -> tuple[str | None, npt.NDArray[np.float32]] | None:
        """The common request read without pydantic: an optional string `id` and one FP32
        [N, 4] tensor of JSON `data` (flat or rows), nothing else, every value within the
        limits; its id and rows. None for anything else, valid or not: `read` then reads it
        and names what is wrong. It accepts nothing `read` would refuse (same limits, numbers
        only, no booleans), and takes a third of its time (one orjson call, a few checks)."""
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
        if not 1 <= n <= self.batch_limit or not data:
            return None
        if type(data[0]) is list:  # rows, flattened as `V2Tensor` does
            if not all(type(row) is list for row in data):
                return None
            data = [x for row in data for x in row]
        if len(data) != n * N_FEATURES:
            return None
        for value in data:
            if (type(value) is not float and type(value) is not int) or not (
                0 < value <= MEASUREMENT_MAX_CM
            ):
                return None
        return request_id, np.array(data, dtype=np.float32).reshape(n, N_FEATURES)

    def read(
        self, header_length: str | None, body: bytes
    ) -> tuple[V2InferRequest, npt.NDArray[np.float32]]:
        """The request and its input rows (float32 [N, 4]), checked; else 422 naming the part."""
        header, binary = split(header_length, body)
        try:
            request = V2InferRequest.model_validate_json(header)
        except ValidationError as e:
            raise RequestValidationError(
                [{**error, "loc": ("body", *error["loc"])} for error in e.errors(include_url=False)]
            ) from e
        tensor = request.inputs[0]
        n, width = tensor.shape
        where = ("body", "inputs", 0)
        problems: list[dict[str, Any]] = []
        if width != N_FEATURES:
            problems.append(
                problem((*where, "shape", 1), f"must be {N_FEATURES} (the measurements)")
            )
        if n > self.batch_limit:
            problems.append(problem((*where, "shape", 0), f"at most {self.batch_limit} rows"))
        size = tensor.parameters.binary_data_size if tensor.parameters else None
        if size is None:
            problems += _json_problems(tensor.data, n, width, binary)
        else:
            problems += _binary_problems(tensor.data, n, width, size, binary)
        if problems:
            raise RequestValidationError(problems)
        if tensor.data is not None:
            return request, np.asarray(tensor.data, dtype=np.float32).reshape(n, width)
        x = np.frombuffer(binary, dtype="<f4").astype(np.float32).reshape(n, width)
        check_measurements(x, (*where, "data"))
        return request, x


def _json_problems(
    data: list[float] | None, n: int, width: int, binary: bytes
) -> list[dict[str, Any]]:
    """What is wrong with a tensor sent as JSON `data`."""
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
    elif len(data) != n * width:
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


def check_version(name: str, model: Predictor, version: str | None) -> Predictor:
    """`model` if `version` is None or the one it is; else 404 naming the one served."""
    if version is not None and version != model.version.version:
        raise NotFound(
            f"model {name!r} has no version {version!r} here: version "
            f"{model.version.version} is served"
        )
    return model


def split(header_length: str | None, body: bytes) -> tuple[bytes, bytes]:
    """The JSON and the binary tensor data after it (none without the header)."""
    if header_length is None:
        return body, b""
    if not _DIGITS.fullmatch(header_length):
        raise RequestValidationError(
            [
                problem(
                    ("header", HEADER_LENGTH),
                    "must be the JSON's length in bytes",
                    value=header_length,
                )
            ]
        )
    length = int(header_length)
    if length > len(body):
        raise RequestValidationError(
            [
                problem(
                    ("header", HEADER_LENGTH),
                    f"{length} bytes of JSON, but the body has {len(body)}",
                    value=length,
                )
            ]
        )
    return body[:length], body[length:]


def check_measurements(x: npt.NDArray[np.float32], where: tuple[str | int, ...]) -> None:
    """422 for values outside (0, 30] cm or not finite, named by their flat index as the JSON
    fields are, with pydantic's types and messages."""
    bad = np.flatnonzero(~((x > 0) & (x <= MEASUREMENT_MAX_CM)))
    if not len(bad):
        return
    flat = x.ravel()
    problems = []
    for index in bad[:_MAX_PROBLEMS].tolist():
        value = float(flat[index])
        if not np.isfinite(value):
            found = problem((*where, index), "Input should be a finite number", "finite_number")
        elif value <= 0:
            found = problem(
                (*where, index), "Input should be greater than 0", "greater_than", value
            )
            found["ctx"] = {"gt": 0.0}
        else:
            found = problem(
                (*where, index),
                f"Input should be less than or equal to {MEASUREMENT_MAX_CM:g}",
                "less_than_equal",
                value,
            )
            found["ctx"] = {"le": MEASUREMENT_MAX_CM}
        problems.append(found)
    raise RequestValidationError(problems)


#: An output asked for: its name, whether as binary data, how many classes (0: the tensor).
Wanted = tuple[str, bool, int]
_ALL = ("label", "probabilities")
#: Both outputs as JSON: what a request without `outputs` or parameters gets.
_DEFAULT: list[Wanted] = [(name, False, 0) for name in _ALL]


def outputs(request: V2InferRequest) -> list[Wanted]:
    """The outputs to send, in the order asked (default: both, as the request's
    `binary_data_output` says)."""
    binary = bool(request.parameters and request.parameters.binary_data_output)
    if not request.outputs:
        return [(name, binary, 0) for name in _ALL]
    wanted: list[Wanted] = []
    problems = []
    seen = set()
    for i, output in enumerate(request.outputs):
        p = output.parameters
        as_binary = binary if p is None or p.binary_data is None else p.binary_data
        classes = (p.classification or 0) if p is not None else 0
        if output.name in seen:
            problems.append(problem(("body", "outputs", i, "name"), "asked for twice"))
        seen.add(output.name)
        if classes and output.name == "label":
            problems.append(
                problem(
                    ("body", "outputs", i, "parameters", "classification"),
                    "applies to probabilities (label holds class indexes, not scores)",
                )
            )
        wanted.append((output.name, as_binary, classes))
    if problems:
        raise RequestValidationError(problems)
    return wanted


def respond(
    name: str,
    version: str,
    request_id: str | None,
    wanted: list[Wanted],
    labels: npt.NDArray[np.int64],
    probabilities: npt.NDArray[np.float32],
) -> Answer:
    """The infer response: JSON, or JSON then the binary outputs in the order listed."""
    n = len(labels)
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output, binary, classes in wanted:
        tensor: dict[str, Any]
        if classes:
            strings = classify(probabilities, classes)
            tensor = {"name": output, "shape": [n, classes], "datatype": "BYTES"}
            if binary:
                blobs.append(
                    b"".join(struct.pack("<I", len(s)) + s for s in (t.encode() for t in strings))
                )
            else:
                tensor["data"] = strings
        else:
            values: npt.NDArray[Any]
            if output == "label":
                tensor = {"name": output, "shape": [n], "datatype": "INT64"}
                values = labels
                little = "<i8"
            else:
                tensor = {"name": output, "shape": [n, len(CLASS_NAMES)], "datatype": "FP32"}
                values = probabilities
                little = "<f4"
            if binary:
                blobs.append(values.astype(little, copy=False).tobytes())
            else:
                tensor["data"] = values.ravel().tolist()
        if binary:
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        tensors.append(tensor)
    body: dict[str, Any] = {"model_name": name, "model_version": version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = tensors
    header = orjson.dumps(body)
    if not blobs:
        return Answer(200, header)
    return Answer(
        200,
        header + b"".join(blobs),
        {HEADER_LENGTH: str(len(header))},
        content_type="application/octet-stream",
    )


def classify(probabilities: npt.NDArray[np.float32], k: int) -> list[str]:
    """The classification extension: per row the top `k` classes as "score:index:label", best
    first (ties in class order), rows one after the other."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        f"{row[i]:.6f}:{i}:{CLASS_NAMES[i]}"
        for row, best in zip(probabilities.tolist(), order.tolist(), strict=True)
        for i in best
    ]
