"""Request and response bodies. Limits live in the fields, so a 422 names the field at fault."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ModelWrapValidatorHandler,
    PrivateAttr,
    create_model,
    field_validator,
    model_validator,
)

from iris_core import CLASS_NAMES, EXAMPLES, FEATURES, MEASUREMENT_MAX_CM, ClassName

#: A measurement in cm: a JSON number (strings are refused, not coerced), finite, in (0, 30].
Measurement = Annotated[
    float,
    Field(
        gt=0,
        le=MEASUREMENT_MAX_CM,
        strict=True,
        allow_inf_nan=False,
        description=f"cm, greater than 0 and at most {MEASUREMENT_MAX_CM:g}",
    ),
]


def _example(class_name: str) -> dict[str, JsonValue]:
    return dict(zip(FEATURES, EXAMPLES[class_name], strict=True))


#: Swagger's example drop-down: one test-set row per class.
PREDICT_EXAMPLES: dict[str, Any] = {
    name: {"summary": f"{name} (a test-set row)", "value": _example(name)} for name in CLASS_NAMES
}


class PredictInput(BaseModel):
    """The four measurements of one flower, in cm."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [_example("Iris-setosa")]}
    )

    sepal_length: Measurement
    sepal_width: Measurement
    petal_length: Measurement
    petal_width: Measurement

    def row(self) -> tuple[float, float, float, float]:
        """The measurements in the models' input order (`iris_core.FEATURES`)."""
        return (self.sepal_length, self.sepal_width, self.petal_length, self.petal_width)


#: Swagger's example drop-down for /suggest: a test-set row per class, with its true class.
SUGGEST_EXAMPLES: dict[str, Any] = {
    name: {"summary": f"{name} (a test-set row)", "value": _example(name) | {"class_name": name}}
    for name in CLASS_NAMES
}


class SuggestInput(PredictInput):
    """A flower's four measurements and its true class: feedback for fine-tuning."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [_example("Iris-setosa") | {"class_name": "Iris-setosa"}]},
    )

    class_name: ClassName = Field(description="the true class, as UCI spells it")


class SuggestOutput(BaseModel):
    """The feedback is stored: a flow run applies it (and fine-tunes every few rows)."""

    id: int = Field(description="the row's number in the feedback store (acceptance order)")
    new: bool = Field(
        description="false when an earlier request with this Idempotency-Key stored the row"
    )
    run: Literal["created", "pending", "earlier"] = Field(
        description="`created`: the flow run that will apply the row exists (`flow_run_id`); "
        "`pending`: Prefect has not answered yet, a run will be asked for (the row is stored); "
        "`earlier`: stored by an earlier request with this Idempotency-Key"
    )
    flow_run_id: str | None
    flow_run_name: str | None
    deployment: str = Field(description="`flow/deployment` whose runs apply feedback")
    predicted_class_name: str | None = Field(
        description="what the served model says for these measurements (null: no model yet)"
    )
    model_version: str | None
    model_agreed: bool | None = Field(description="predicted_class_name == class_name")


class Prediction(BaseModel):
    class_name: Literal[CLASS_NAMES]  # type: ignore[valid-type]
    class_index: int = Field(ge=0, lt=len(CLASS_NAMES))
    probabilities: dict[str, float] = Field(description="by class name; they sum to 1")


_ANSWER: dict[str, JsonValue] = {
    "class_name": "Iris-setosa",
    "class_index": 0,
    "probabilities": {"Iris-setosa": 0.998785, "Iris-versicolor": 0.001215, "Iris-virginica": 0.0},
}


class PredictOutput(Prediction):
    model_config = ConfigDict(json_schema_extra={"examples": [_ANSWER | {"model_version": "3"}]})

    model_version: str = Field(description="registry version of the model that answered")


class BatchOutput(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"predictions": [_ANSWER], "model_version": "3"}]}
    )

    predictions: list[Prediction]
    model_version: str


@cache
def batch_input(limit: int) -> type[BaseModel]:
    """The batch request body, whose size limit is a setting (one class per limit)."""
    return create_model(
        "BatchInput",
        __config__=ConfigDict(
            extra="forbid",
            json_schema_extra={"examples": [{"instances": [_example(n) for n in CLASS_NAMES]}]},
        ),
        instances=(list[PredictInput], Field(min_length=1, max_length=limit)),
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str
    run_id: str
    test_accuracy: float | None = Field(description="from the version's `test_accuracy` tag")
    loaded_at: datetime


# Open Inference Protocol (KServe V2): the bodies of its REST API for this one model. The
# binary tensor data extension's framing is read and written by `iris_api.oip`, which validates
# binary tensors with the same limits as these fields.

#: A non-negative JSON integer (booleans and strings are refused, not coerced).
Count = Annotated[int, Field(strict=True, ge=0)]


class V2InputParameters(BaseModel):
    """An input tensor's parameters; others are accepted and ignored, as the protocol allows."""

    model_config = ConfigDict(extra="allow")

    binary_data_size: Count | None = Field(
        None, description="binary tensor data extension: the tensor's bytes follow the JSON"
    )


class V2Tensor(BaseModel):
    """An input tensor: FP32, shape [N, 4], data row-major (flat, or nested rows), or its
    bytes after the JSON (binary tensor data extension: `parameters.binary_data_size`)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(examples=["input"])
    shape: list[Annotated[int, Field(strict=True, ge=1)]] = Field(min_length=2, max_length=2)
    datatype: Literal["FP32"]
    data: list[Measurement] | None = Field(
        None, description="N x 4 measurements (cm); absent when sent as binary data"
    )
    parameters: V2InputParameters | None = None

    #: The length of each row when `data` came as rows (a list of lists), else None.
    _row_lengths: list[int] | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_rows(cls, value: Any, handler: ModelWrapValidatorHandler[V2Tensor]) -> V2Tensor:
        """Rows become one flat list (`_flatten`); how long each was is kept, so the reader
        can refuse ragged rows instead of re-cutting them by the shape."""
        rows = value.get("data") if isinstance(value, dict) else None
        lengths = [len(row) for row in rows] if _rows(rows) and rows is not None else None
        tensor = handler(value)
        tensor._row_lengths = lengths
        return tensor

    @field_validator("data", mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        return [x for row in value for x in row] if _rows(value) else value

    @property
    def row_lengths(self) -> list[int] | None:
        return self._row_lengths


def _rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, list) for r in value)


class V2OutputParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data: Annotated[bool, Field(strict=True)] | None = Field(
        None, description="binary tensor data extension: this output's bytes after the JSON"
    )
    classification: Annotated[int, Field(strict=True, ge=0, le=len(CLASS_NAMES))] | None = Field(
        None,
        description="classification extension (probabilities only): the top k classes of "
        'each row as BYTES "score:index:label", best first; 0 = off',
    )


class V2RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["label", "probabilities"]
    parameters: V2OutputParameters | None = None


class V2RequestParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    binary_data_output: Annotated[bool, Field(strict=True)] | None = Field(
        None, description="every output as binary data unless the output says otherwise"
    )


class V2InferRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id": "42",
                    "inputs": [
                        {
                            "name": "input",
                            "shape": [2, 4],
                            "datatype": "FP32",
                            "data": [*EXAMPLES["Iris-setosa"], *EXAMPLES["Iris-virginica"]],
                        }
                    ],
                }
            ]
        },
    )

    id: str | None = None
    parameters: V2RequestParameters | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1)
    outputs: list[V2RequestedOutput] | None = Field(
        None, max_length=2, description="default: label and probabilities"
    )


class V2OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["INT64", "FP32", "BYTES"]
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size` when the data follows the JSON"
    )
    data: list[float] | list[int] | list[str] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="the request's id, when it had one")
    outputs: list[V2OutputTensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="the protocol extensions this server implements")


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2RepositoryIndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ready: Annotated[bool, Field(strict=True)] = Field(
        False, description="only the models that are ready"
    )


class V2RepositoryModel(BaseModel):
    name: str
    version: str | None = None
    state: Literal["READY", "UNAVAILABLE"]
    reason: str


class V2Duration(BaseModel):
    count: int
    ns: int


class V2InferenceStats(BaseModel):
    success: V2Duration = Field(description="model calls that answered, time in the call")
    fail: V2Duration = Field(description="infer requests for this version refused for bad input")
    queue: V2Duration
    compute_input: V2Duration
    compute_infer: V2Duration = Field(description="onnxruntime alone")
    compute_output: V2Duration


class V2ModelStats(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="ms since the epoch; 0 before the first")
    inference_count: int = Field(description="rows predicted")
    execution_count: int = Field(description="model calls (a batch is one)")
    inference_stats: V2InferenceStats
    batch_stats: list[dict[str, Any]]


class V2Statistics(BaseModel):
    model_stats: list[V2ModelStats]


class V2Error(BaseModel):
    """The protocol's error body; `detail` repeats it (422s list the fields there)."""

    error: str
    detail: Any = None


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
    reason: str | None = Field(None, description="why not, while not ready")


class ErrorBody(BaseModel):
    detail: str


class ValidationProblem(BaseModel):
    type: str
    loc: list[str | int] = Field(description="where: body, then the field names and indexes")
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class ValidationErrorBody(BaseModel):
    detail: list[ValidationProblem]
