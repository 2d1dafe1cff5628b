"""Our Prometheus metrics, on one registry per app (so tests can build two apps side by side)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

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


class Metrics:
    def __init__(
        self, drift_window: int = 1000, drift_min_rows: int = 100, inputs: bool = True
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process (resident memory, CPU seconds, open files, start time) and the Python
        # runtime (version, garbage collections), as the default registry has them: what
        # Kubernetes dashboards read. Read from /proc at scrape time, nothing per request.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
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
        # /suggest: feedback handed to Prefect, by true class and whether the served model
        # agreed ("unknown" while no model is loaded). Counted once per accepted suggestion.
        self.feedback = Counter(
            "iris_feedback", "Feedback accepted by /suggest", ["class_name", "model_agreed"],
            registry=r,
        )  # fmt: skip
        for name in CLASS_NAMES:
            for agreed in ("true", "false"):
                self.feedback.labels(name, agreed)
        self.feedback_failures = Counter(
            "iris_feedback_failures", "Suggestions not accepted because Prefect failed",
            registry=r,
        )  # fmt: skip
        self.flow_runs = Gauge(
            "iris_feedback_flow_runs",
            "Flow runs of the feedback deployment in Prefect, by state type (polled)",
            ["state"],
            registry=r,
        )
