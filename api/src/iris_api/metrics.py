"""Our Prometheus metrics, on one registry per app (so tests can build two apps side by side),
and the HTTP metrics of prometheus-fastapi-instrumentator on the same registry (`instrument`)."""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    Summary,
)
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.metrics import Info as RequestInfo
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp

from iris_api.drift import DriftMonitor
from iris_core import CLASS_NAMES

#: Request latency buckets (s) for the instrumentator: this service answers in well under 1 ms.
REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: onnxruntime alone: about 10 us for a row, 50 us for 1,000.
INFERENCE_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
)  # fmt: skip
#: The top class probability: 1/3 is a shrug, 1 is certainty.
CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


#: Routes remembered per app by `RouteCache` (a bound: paths with parameters vary).
ROUTES_REMEMBERED = 1024


class RouteCache(PrometheusInstrumentatorMiddleware):
    """The instrumentator's middleware, remembering the route each method and path matched.
    It looks every request's route up by matching it against each route in turn (FastAPI
    re-lists every included router's routes for it), and the answer for a path never changes
    once the app runs (docs/benchmarks.md). Paths no route matched (404s: anything a client
    makes up) are not remembered."""

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        super().__init__(app, **options)
        self._routes: dict[tuple[str, str], tuple[str, bool]] = {}
        self._excluded: dict[tuple[str, bool], bool] = {}

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        scope = request.scope
        key = (scope["method"], scope["path"])
        found = self._routes.get(key)
        if found is None:
            found = super()._get_handler(request)
            if found[1] and len(self._routes) < ROUTES_REMEMBERED:
                self._routes[key] = found
        return found

    def _is_handler_excluded(self, handler: str, is_templated: bool) -> bool:
        """Remembered too (a regular expression search per excluded handler otherwise)."""
        key = (handler, is_templated)
        excluded = self._excluded.get(key)
        if excluded is None:
            excluded = super()._is_handler_excluded(handler, is_templated)
            if len(self._excluded) < ROUTES_REMEMBERED:
                self._excluded[key] = excluded
        return excluded


class HttpMetrics:
    """The HTTP metrics of prometheus-fastapi-instrumentator's `metrics.default`, as it makes
    them (names, help, labels, buckets: our REQUEST_BUCKETS for the high-resolution latency,
    its own for the others), recorded with each label set's children kept: its function
    looks the children up by label values on every request (five lookups, each under a lock,
    from lists built by `getattr`); this does it once per label set (docs/benchmarks.md)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.total = Counter(
            "http_requests_total",
            "Total number of requests by method, status and handler.",
            ("method", "status", "handler"),
            registry=r,
        )
        self.in_size = Summary(
            "http_request_size_bytes",
            "Content length of incoming requests by handler. Only value of header is "
            "respected. Otherwise ignored. No percentile calculated. ",
            ("handler",),
            registry=r,
        )
        self.out_size = Summary(
            "http_response_size_bytes",
            "Content length of outgoing responses by handler. Only value of header is "
            "respected. Otherwise ignored. No percentile calculated. ",
            ("handler",),
            registry=r,
        )
        self.highr = Histogram(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. Made for more accurate "
            "percentile calculations. ",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.lowr = Histogram(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation "
            "by handler is important. ",
            ("method", "handler"),
            buckets=(0.1, 0.5, 1),
            registry=r,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any, Any]] = {}

    def __call__(self, info: RequestInfo) -> None:
        key = (info.method, info.modified_status, info.modified_handler)
        children = self._children.get(key)
        if children is None:
            method, status, handler = key
            children = self._children[key] = (
                self.total.labels(method, status, handler),
                self.in_size.labels(handler),
                self.out_size.labels(handler),
                self.lowr.labels(method, handler),
            )
        total, in_size, out_size, lowr = children
        total.inc()
        in_size.observe(_content_length(info.request.scope["headers"]))
        out_size.observe(_content_length(info.response.raw_headers if info.response else []))
        self.highr.observe(info.modified_duration)
        lowr.observe(info.modified_duration)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The Content-Length header's value (0 without one), as the instrumentator reads it."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def instrument(app: FastAPI, registry: CollectorRegistry) -> None:
    """prometheus-fastapi-instrumentator's HTTP metrics on `registry` (`HttpMetrics`), its
    middleware replaced by `RouteCache`, which differs in the route lookup only. Call it after
    every other middleware: it must see every request, the fast path's included."""
    Instrumentator(registry=registry, excluded_handlers=["/metrics"]).add(
        HttpMetrics(registry)
    ).instrument(app)
    [i] = [
        i
        for i, m in enumerate(app.user_middleware)
        if cast(Any, m.cls) is PrometheusInstrumentatorMiddleware
    ]
    added = app.user_middleware[i]
    app.user_middleware[i] = Middleware(RouteCache, *added.args, **added.kwargs)


class Metrics:
    def served(self, version: str | None, role: str) -> None:
        """The version now served as `role` (champion or challenger; None: none)."""
        value = float(version) if version is not None and version.isdigit() else 0.0
        self.served_version.labels(role).set(value)

    def __init__(
        self,
        drift_window: int = 1000,
        drift_min_rows: int = 100,
        inputs: bool = True,
        feedback_store: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process (resident memory, CPU seconds, open files, start time) and the Python
        # runtime (version, garbage collections), as the default registry has them: what
        # Kubernetes dashboards read. Read from /proc at scrape time, nothing per request.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        # The feedback store's gauges only where a store is configured (an API without one
        # would otherwise report it down).
        store = r if feedback_store else None
        # Input histograms and drift scores (computed at scrape time), unless turned off.
        self.drift = DriftMonitor(drift_window, drift_min_rows) if inputs else None
        if self.drift is not None:
            r.register(self.drift)
        # The seed's counter, name and label as they were: predicted_class_name_total{class_name}.
        self.predicted = Counter(
            "predicted_class_name", "Predictions by class name", ["class_name"], registry=r
        )
        self.predicted_by_index = [self.predicted.labels(name) for name in CLASS_NAMES]
        self.inference = Histogram(
            "iris_inference_duration_seconds",
            "onnxruntime time per call (one request, one or more rows)",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.confidence = Histogram(
            "iris_prediction_confidence",
            "Probability of the predicted class, per row",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.model = Info("iris_model", "The model being served", registry=r)
        self.model_loaded = Gauge("iris_model_loaded", "1 while a model is served", registry=r)
        self.reloads = Counter(
            "iris_model_reloads", "Model loads by result (the first load counts)", ["result"],
            registry=r,
        )  # fmt: skip
        self.reload_ok = self.reloads.labels("success")
        self.reload_failed = self.reloads.labels("failure")
        self.registry_errors = Counter(
            "iris_registry_errors", "Registry checks that failed (MLflow unreachable, ...)",
            registry=r,
        )  # fmt: skip
        # Gated promotion: the versions served in each role, the challenger's answers to the
        # champion's traffic (shadow), and each role's answers on labelled feedback.
        self.served_version = Gauge(
            "iris_served_version",
            "The version in each role, served or shadow (numeric; 0: none): annotations on a change",
            ["role"],
            registry=r,
        )
        self.role_predictions = Counter(
            "iris_role_predictions", "Rows answered by role (served: the answer sent; "
            "shadow: scored beside it, never sent)", ["role", "version", "class_name"],
            registry=r,
        )  # fmt: skip
        self.shadow_rows = Counter(
            "iris_shadow_rows", "Rows the shadow model scored beside the served one, by agreement",
            ["served", "shadow", "agreed"], registry=r,
        )  # fmt: skip
        self.shadow_errors = Counter(
            "iris_shadow_errors", "Calls in which the shadow model failed (never seen by a client)",
            ["shadow"], registry=r,
        )  # fmt: skip
        self.shadow_load_failures = Counter(
            "iris_shadow_load_failures", "Shadow versions that could not be loaded",
            registry=r,
        )  # fmt: skip
        self.live_rows = Counter(
            "iris_live_rows", "Labelled feedback rows each role answered (its live accuracy's n)",
            ["role", "version"], registry=r,
        )  # fmt: skip
        self.live_correct = Counter(
            "iris_live_correct", "Labelled feedback rows each role answered right",
            ["role", "version"], registry=r,
        )  # fmt: skip
        # /suggest: feedback stored, by true class and whether the served model agreed
        # ("unknown" while no model is loaded). Counted once per stored row.
        self.feedback = Counter(
            "iris_feedback", "Feedback accepted (stored) by /suggest", ["class_name", "model_agreed"],
            registry=r,
        )  # fmt: skip
        for name in CLASS_NAMES:
            for agreed in ("true", "false"):
                self.feedback.labels(name, agreed)
        self.feedback_failures = Counter(
            "iris_feedback_failures", "Suggestions refused because the store could not take them",
            registry=r,
        )  # fmt: skip
        # The feedback store's backlog, read every IRIS_API_FEEDBACK_CHECK_S (every replica
        # reads the same store: aggregate with max, not sum).
        self.feedback_store_up = Gauge(
            "iris_feedback_store_up", "1 while the feedback store answers", registry=store
        )
        self.feedback_pending = Gauge(
            "iris_feedback_pending_rows",
            "Stored feedback rows no run has applied yet",
            registry=store,
        )
        self.feedback_pending_age = Gauge(
            "iris_feedback_oldest_pending_age_seconds",
            "Age of the oldest pending feedback row (0: none pending)",
            registry=store,
        )
        self.feedback_applied = Gauge(
            "iris_feedback_applied_rows", "Feedback rows applied by flow runs", registry=store
        )
        self.feedback_owed = Gauge(
            "iris_feedback_owed_finetunes", "Fine-tunes owed that no run is running", registry=store
        )
        self.feedback_owed_age = Gauge(
            "iris_feedback_owed_age_seconds",
            "How long the first owed fine-tune has waited for a run (0: none)",
            registry=store,
        )
        self.feedback_runs = Counter(
            "iris_feedback_runs_requested",
            "Flow runs this process asked Prefect for: for new rows, to catch up on rows or "
            "fine-tunes left by runs that crashed or were lost, or to replace a run that did "
            "not start in time",
            ["reason"],
            registry=r,
        )
        for reason in ("new", "catchup", "replace"):
            self.feedback_runs.labels(reason)
        self.feedback_run_waiting = Gauge(
            "iris_feedback_run_waiting_seconds",
            "How long the run the pending rows wait for has not started (0: none waiting)",
            registry=r,
        )
        self.feedback_superseded = Counter(
            "iris_feedback_runs_superseded",
            "Runs that did not start within IRIS_API_FEEDBACK_START_TIMEOUT_S, replaced by a new "
            "one, by the state they were stuck in",
            ["state"],
            registry=r,
        )
        for state in ("SCHEDULED", "PENDING"):
            self.feedback_superseded.labels(state)
        self.feedback_run_failures = Counter(
            "iris_feedback_run_request_failures",
            "Times Prefect could not take a run (the rows stay pending; retried)",
            registry=r,
        )
        self.flow_runs = Gauge(
            "iris_feedback_flow_runs",
            "Flow runs of the feedback deployment in Prefect, by state type (polled)",
            ["state"],
            registry=r,
        )
