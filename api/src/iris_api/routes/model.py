"""GET /model: what is being served."""

from __future__ import annotations

from fastapi import APIRouter

from iris_api.deps import PredictorDep
from iris_api.schemas import ErrorBody, ModelInfo

router = APIRouter(tags=["model"])


@router.get("/model", responses={503: {"model": ErrorBody}})
async def model_info(model: PredictorDep) -> ModelInfo:
    """Name, version, alias, run and test accuracy of the served model, and when it was loaded."""
    v = model.version
    return ModelInfo(
        name=v.name,
        version=v.version,
        alias=v.alias,
        run_id=v.run_id,
        test_accuracy=model.test_accuracy,
        loaded_at=model.loaded_at,
    )
