"""Prometheus metrics of the server: requests by outcome, guard decisions, step and request latency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..result import ECSOResult
from ..types import ChatReply

__all__ = ["Metrics"]


@dataclass
class Metrics:
    """Prometheus metrics of one server (own registry, so several apps can live in one process)."""

    registry: Any = None
    requests: Any = None
    decisions: Any = None
    step_latency: Any = None
    request_latency: Any = None

    @classmethod
    def create(cls) -> Metrics:
        """Build the counters and histograms."""
        from prometheus_client import CollectorRegistry, Counter, Histogram

        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter("ecso_requests", "Chat-completion requests by outcome", ["status"], registry=registry),
            decisions=Counter("ecso_decisions", "Guard decisions", ["decision"], registry=registry),
            step_latency=Histogram("ecso_step_latency_seconds", "Latency of ECSO steps", ["step"], registry=registry),
            request_latency=Histogram("ecso_request_latency_seconds", "End-to-end request latency", registry=registry),
        )

    def observe(self, reply: ChatReply, seconds: float) -> None:
        """Record one answered request."""
        self.request_latency.observe(seconds)
        if isinstance(reply.raw, ECSOResult):
            self.decisions.labels(reply.raw.decision).inc()
            for step in reply.raw.steps:
                self.step_latency.labels(step.name).observe(step.latency_s)
