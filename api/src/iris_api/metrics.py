"""Our Prometheus metrics, on one registry per app (so tests can build two apps side by side)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

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
        self,
        drift_window: int = 1000,
        drift_min_rows: int = 100,
        inputs: bool = True,
        feedback_store: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
            "Flow runs this process asked Prefect for: for new rows, or to catch up on rows or "
            "fine-tunes left by runs that crashed or were lost",
            ["reason"],
            registry=r,
        )
        for reason in ("new", "catchup"):
            self.feedback_runs.labels(reason)
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
