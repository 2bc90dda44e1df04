"""Ray metrics (`ray.util.metrics`) for the dashboard and Prometheus, all named `stxpipe_*`.

Created lazily inside the worker actor (metrics need a connected Ray worker), once per process.
"""

from __future__ import annotations

from functools import lru_cache

_SECONDS_BOUNDS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800]
_LPIPS_BOUNDS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]


class RunMetrics:
    """Rows by status, seconds per row, optimisation steps per second, LPIPS distances."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        tags = ("status",)
        self.rows = Counter("stxpipe_rows_total", description="Rows finished, by status.", tag_keys=tags)
        self.row_seconds = Histogram(
            "stxpipe_row_seconds", description="Wall seconds per row (optimisation + metrics).", boundaries=_SECONDS_BOUNDS
        )
        self.steps_per_second = Gauge(
            "stxpipe_steps_per_second", description="Optimisation steps per second of the latest batch (per row).", tag_keys=("worker",)
        )
        self.lpips_style = Histogram(
            "stxpipe_lpips_style", description="LPIPS distance of outputs to their style image.", boundaries=_LPIPS_BOUNDS
        )
        self.lpips_content = Histogram(
            "stxpipe_lpips_content", description="LPIPS distance of outputs to their content image.", boundaries=_LPIPS_BOUNDS
        )

    def record(self, result: dict, worker: str) -> None:
        self.rows.inc(1, tags={"status": result["status"]})
        if result.get("seconds") is not None:
            self.row_seconds.observe(result["seconds"])
        if result["status"] == "ok":
            if result.get("seconds"):
                self.steps_per_second.set(result["iterations"] / result["seconds"], tags={"worker": worker})
            self.lpips_style.observe(result["lpips_style"])
            self.lpips_content.observe(result["lpips_content"])


@lru_cache(maxsize=1)
def run_metrics() -> RunMetrics:
    return RunMetrics()
