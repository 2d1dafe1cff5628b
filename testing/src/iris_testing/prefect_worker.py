"""The Jobs Prefect's Kubernetes worker creates for flow runs of a real Prefect server, made by
the worker's own code: `KubernetesWorkerJobConfiguration.resolve_for_flow_run` of
prefect-kubernetes, the call the worker makes before it submits a run (the run's deployment
and flow read, their job variables merged over the work pool's base job template, the run's
environment and labels added). Its process's Prefect settings go into every Job's environment,
as the worker's own do: run it with the worker pod's (`iris_testing.k8s.flow_run_jobs`).

    python -m iris_testing.prefect_worker SERVER_API_URL WORKER_NAME FLOW_RUN_ID... > jobs.json
    python -m iris_testing.prefect_worker --offline BASE_JOB_TEMPLATE JOB_VARIABLES > job.json

SERVER_API_URL is where the runs and the work pool are read (a server on this machine), not
PREFECT_API_URL, which is the worker's (the cluster's address) and the one the Jobs carry.
`--offline` needs no server: the worker's own steps minus its reads (the template and the job
variables merged, an example flow run prepared), for checks of the template alone.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any


async def resolve(server_api_url: str, worker_name: str, flow_run_ids: list[str]) -> list[Any]:
    """Each flow run's Job manifest, in order."""
    from prefect.client.orchestration import PrefectClient  # noqa: PLC0415  # in this process only
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration  # noqa: PLC0415

    jobs = []
    # the worker's HTTP/2 setting is for the Jobs; this process's own client speaks HTTP/1.1
    async with PrefectClient(server_api_url, httpx_settings={"http2": False}) as client:
        for run_id in flow_run_ids:
            run = await client.read_flow_run(uuid.UUID(run_id))
            if run.work_pool_name is None:
                raise SystemExit(f"flow run {run_id} has no work pool")
            pool = await client.read_work_pool(run.work_pool_name)
            config = await KubernetesWorkerJobConfiguration.resolve_for_flow_run(
                run, client=client, work_pool=pool, worker_name=worker_name
            )
            jobs.append(config.job_manifest)
    return jobs


async def render(template: dict[str, Any], variables: dict[str, Any]) -> Any:
    """The Job of an example flow run with these job variables, from the base job template."""
    from prefect.client.schemas.objects import FlowRun  # noqa: PLC0415
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration  # noqa: PLC0415

    config = await KubernetesWorkerJobConfiguration.from_template_and_values(
        base_job_template=template,
        values=variables,
        client=None,  # only asked for {{ prefect.blocks.* }} and {{ prefect.variables.* }}
    )
    flow_run = FlowRun(id=uuid.UUID(int=1), flow_id=uuid.UUID(int=2), name="example-run")
    config.prepare_for_flow_run(flow_run=flow_run)
    return config.job_manifest


def main() -> None:
    if sys.argv[1:2] == ["--offline"]:
        template, variables = (json.loads(Path(f).read_text()) for f in sys.argv[2:4])
        sys.stdout.write(json.dumps(asyncio.run(render(template, variables))))
        return
    server_api_url, worker_name, *flow_run_ids = sys.argv[1:]
    jobs = asyncio.run(resolve(server_api_url, worker_name, flow_run_ids))
    sys.stdout.write(json.dumps(jobs))


if __name__ == "__main__":
    main()
