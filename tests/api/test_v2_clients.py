"""Conformance: standard Open Inference Protocol clients from PyPI, unchanged, against the real
API (`iris-api` from its own environment, uvicorn), through the ASGI fast path and through the
FastAPI routes. tritonclient (HTTP, its gevent and its aiohttp clients) speaks the binary
tensor data extension by default and JSON when told; open-inference-openapi is generated from
the protocol's own OpenAPI document and speaks JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from open_inference.openapi.client import OpenInferenceClient
from open_inference.openapi.core.api_error import ApiError
from open_inference.openapi.types import InferenceRequest
from tritonclient.utils import InferenceServerException

from iris_core import CLASS_NAMES, EXAMPLES
from iris_testing.api import api_process

pytestmark = pytest.mark.integration  # a real API process

ROWS = np.array(list(EXAMPLES.values()), dtype=np.float32)


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "fastapi-route"])
def api(
    request: pytest.FixtureRequest,
    model_dir: Path,
    api_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The API process serving the model folder's version 1 (the protocol does not depend on
    where the model comes from; no MLflow needed)."""
    with api_process(
        tmp_path_factory.mktemp("api"),
        "http://127.0.0.1:9",  # no registry: the folder is the source
        "IrisModel",
        api_bin,
        env={
            "IRIS_API_MODEL_DIR": str(model_dir),
            "IRIS_API_FAST_PATH": str(request.param).lower(),
            "IRIS_API_BATCH_LIMIT": "50",
        },
    ) as url:
        yield url


@pytest.fixture(scope="module")
def version() -> str:
    return "1"


@pytest.fixture
def triton_client(api: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(api.removeprefix("http://"))
    yield client
    client.close()


def _input(rows: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def test_tritonclient_metadata_health_config_statistics_repository(
    triton_client: triton.InferenceServerClient, version: str
) -> None:
    c = triton_client
    assert c.is_server_live()
    assert c.is_server_ready()
    assert c.is_model_ready("iris")
    assert c.is_model_ready("iris", version)
    assert not c.is_model_ready("iris", "999")
    assert not c.is_model_ready("nope")
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]
    meta = c.get_model_metadata("iris", version)
    assert meta["versions"] == [version]
    assert [i["datatype"] for i in meta["inputs"]] == ["FP32"]
    assert c.get_model_config("iris")["max_batch_size"] == 50
    assert c.get_model_repository_index() == [
        {"name": "iris", "version": version, "state": "READY", "reason": ""}
    ]
    c.load_model("iris")  # asks the registry now: the version served is still the alias'
    with pytest.raises(InferenceServerException, match="not unloaded on request") as refused:
        c.unload_model("iris")
    assert refused.value.status() == "409"
    c.infer("iris", [_input(ROWS, binary=True)])
    (stats,) = c.get_inference_statistics("iris", version)["model_stats"]
    assert stats["inference_count"] >= 3
    assert stats["inference_stats"]["success"]["count"] >= 1


def test_tritonclient_binary_and_json_give_the_same_answer(
    triton_client: triton.InferenceServerClient, version: str
) -> None:
    c = triton_client
    binary = c.infer("iris", [_input(ROWS, binary=True)])  # binary both ways, the default
    labels = binary.as_numpy("label")
    probabilities = binary.as_numpy("probabilities")
    assert labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2]
    assert probabilities.shape == (3, len(CLASS_NAMES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert binary.get_response()["model_version"] == version

    as_json = c.infer(
        "iris",
        [_input(ROWS, binary=False)],
        model_version=version,
        request_id="r-7",
        outputs=[
            triton.InferRequestedOutput("label", binary_data=False),
            triton.InferRequestedOutput("probabilities", binary_data=False),
        ],
    )
    assert as_json.get_response()["id"] == "r-7"
    assert "data" in as_json.get_output("label")
    assert as_json.as_numpy("label").tolist() == labels.tolist()
    np.testing.assert_array_equal(as_json.as_numpy("probabilities"), probabilities)


def test_tritonclient_classification(triton_client: triton.InferenceServerClient) -> None:
    for binary in (True, False):
        result = triton_client.infer(
            "iris",
            [_input(ROWS, binary=binary)],
            outputs=[
                triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
            ],
        )
        classes = result.as_numpy("probabilities")
        assert classes.shape == (3, 2)
        best = [entry.decode() if isinstance(entry, bytes) else entry for entry in classes[:, 0]]
        assert [b.split(":", 1)[1] for b in best] == [f"{i}:{n}" for i, n in enumerate(CLASS_NAMES)]


def test_tritonclient_errors_carry_the_servers_message(
    triton_client: triton.InferenceServerClient,
) -> None:
    c = triton_client
    with pytest.raises(InferenceServerException, match="'nope'") as unknown:
        c.infer("nope", [_input(ROWS, binary=True)])
    assert unknown.value.status() == "404"
    with pytest.raises(InferenceServerException, match="'999'") as other:
        c.infer("iris", [_input(ROWS, binary=True)], model_version="999")
    assert other.value.status() == "404"
    bad = ROWS.copy()
    bad[1, 2] = np.nan
    for binary in (True, False):
        with pytest.raises(InferenceServerException, match=r"inputs\.0\.data\.6") as nan:
            c.infer("iris", [_input(bad, binary=binary)])
        assert nan.value.status() == "422"
    wide = np.ones((2, 5), dtype=np.float32)
    with pytest.raises(InferenceServerException, match=r"inputs\.0\.shape\.1"):
        c.infer("iris", [_input(wide, binary=True)])


def test_tritonclient_aio_binary(api: str) -> None:
    async def run() -> tuple[list[int], str]:
        client = triton_aio.InferenceServerClient(api.removeprefix("http://"))
        try:
            tensor = triton_aio.InferInput("input", list(ROWS.shape), "FP32")
            tensor.set_data_from_numpy(ROWS, binary_data=True)
            result = await client.infer("iris", [tensor])
            metadata = await client.get_model_metadata("iris")
            return result.as_numpy("label").tolist(), metadata["name"]
        finally:
            await client.close()

    assert asyncio.run(run()) == ([0, 1, 2], "iris")


def test_open_inference_openapi_client(api: str, version: str) -> None:
    with httpx.Client(timeout=10) as http:
        _open_inference_calls(OpenInferenceClient(base_url=api, httpx_client=http), version)


def _open_inference_calls(client: OpenInferenceClient, version: str) -> None:
    client.check_server_liveness()
    client.check_server_readiness()
    client.check_model_readiness("iris")
    client.check_model_version_readiness("iris", version)
    server = client.read_server_metadata()
    assert "statistics" in server.extensions
    for meta in (
        client.read_model_metadata("iris"),
        client.read_model_version_metadata("iris", version),
    ):
        assert meta.versions == [version]
        assert meta.inputs is not None
        assert meta.inputs[0].shape == [-1, 4]

    # The generated models are pydantic v1's: built from plain data, as their docs show.
    request = InferenceRequest.parse_obj(
        {
            "id": "oip-1",
            "inputs": [
                {"name": "input", "shape": [3, 4], "datatype": "FP32", "data": ROWS.tolist()}
            ],
            "outputs": [{"name": "label"}],
        }
    )
    for answer in (
        client.model_infer("iris", request=request),
        client.model_version_infer("iris", version, request=request),
    ):
        assert (answer.model_name, answer.model_version, answer.id) == ("iris", version, "oip-1")
        (label,) = answer.outputs
        assert label.data.__root__ == [0, 1, 2]

    with pytest.raises(ApiError) as missing:
        client.read_model_version_metadata("iris", "999")
    assert missing.value.status_code == 404
    assert "'999'" in missing.value.body["error"]
    bad = InferenceRequest.parse_obj(
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, -4]}]}
    )
    with pytest.raises(ApiError) as refused:
        client.model_infer("iris", request=bad)
    assert refused.value.status_code == 422
    assert "inputs.0.data.3" in refused.value.body["error"]
