"""One fine-tuning set-up of its own: a deployment cloned from `local`, a fresh feedback store
(SQLite in a folder, or a URL given: a PostgreSQL database), copies of the registered
champions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from iris_core import CLASS_NAMES, EXAMPLES, FEATURES
from iris_core.feedback import STORE_URL, FeedbackStore
from iris_finetune.flow import FLOW_NAME
from iris_testing.prefect_rest import PrefectRest
from iris_testing.training import Registered


@dataclass(frozen=True)
class FeedbackCase:
    """One test's fine-tuning set-up: deployment, feedback store and registered model names."""

    prefect: PrefectRest
    deployment: str  # flow/deployment, for IRIS_API_FEEDBACK_DEPLOYMENT
    deployment_id: str
    store: FeedbackStore
    sklearn_model: str
    onnx_model: str
    experiment: str
    client: MlflowClient
    env: dict[str, str]

    @classmethod
    def create(
        cls,
        prefect: PrefectRest,
        registered: Registered,
        folder: Path,
        store_url: str | None = None,
        pool: str | None = None,
        job_variables: dict[str, Any] | None = None,
        **settings: str,
    ) -> FeedbackCase:
        """`settings`: more environment of the deployment's runs (IRIS_FINETUNE_...); `pool`:
        the work pool its runs go to (default: `local`'s); `job_variables`: more of the runs'
        job variables (a `command`, say)."""
        tag = uuid.uuid4().hex[:8]
        client = MlflowClient(registered.tracking_uri)
        names = {}
        for kind, source in (
            ("sklearn", registered.registry.sklearn_model_name),
            ("onnx", registered.registry.onnx_model_name),
        ):
            name = f"{source}-{tag}"
            version = registered.outcome.versions[source]
            copy = client.copy_model_version(f"models:/{source}/{version}", name)
            client.set_registered_model_alias(name, registered.registry.alias, copy.version)
            names[kind] = name
        store_url = store_url or f"sqlite:///{folder.resolve() / 'feedback.db'}"
        store = FeedbackStore.open(store_url)
        env = {
            STORE_URL: store_url,
            "IRIS_FINETUNE_SKLEARN_MODEL_NAME": names["sklearn"],
            "IRIS_FINETUNE_ONNX_MODEL_NAME": names["onnx"],
            "IRIS_FINETUNE_EXPERIMENT": f"finetune-{tag}",
            **settings,
        }
        deployment_id = prefect.clone_deployment(
            f"{FLOW_NAME}/local", f"test-{tag}", env, pool, job_variables
        )
        return cls(
            prefect,
            f"{FLOW_NAME}/test-{tag}",
            deployment_id,
            store,
            names["sklearn"],
            names["onnx"],
            env["IRIS_FINETUNE_EXPERIMENT"],
            client,
            env,
        )

    @property
    def store_url(self) -> str:
        return self.env[STORE_URL]

    @property
    def tracking_uri(self) -> str:
        return str(self.client.tracking_uri)

    def versions(self, name: str) -> list[ModelVersion]:
        """The versions of registered model `name`, oldest first."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted(found, key=lambda v: int(v.version))


def suggestion(i: int) -> dict[str, Any]:
    """The i-th suggestion: a distinct flower (so rows can be told apart) of each class in
    turn, with its true class; every one a textbook flower nudged by at most 0.2 cm."""
    name = CLASS_NAMES[i % len(CLASS_NAMES)]
    nudged = [round(v + (i // 3 % 20) / 100, 2) for v in EXAMPLES[name]]
    return dict(zip(FEATURES, nudged, strict=True)) | {"class_name": name}
