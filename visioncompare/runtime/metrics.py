"""Prometheus metrics of one server, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self, namespace: str = "visioncompare") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.requests = Counter(
            "requests", "RPCs by method, task and status code", ["rpc", "task", "code"], namespace=ns, registry=r
        )
        self.request_latency = Histogram(
            "request_latency_seconds",
            "Total RPC latency",
            ["rpc"],
            namespace=ns,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.queue_latency = Histogram(
            "queue_latency_seconds",
            "Time a request waits for its batch",
            namespace=ns,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.inference_latency = Histogram(
            "inference_latency_seconds",
            "Model time per batch",
            namespace=ns,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            "batch_size", "Requests per model batch", namespace=ns, registry=r, buckets=BATCH_BUCKETS
        )
        self.queue_depth = Gauge("queue_depth", "Requests waiting for a batch", namespace=ns, registry=r)
        self.dropped = Counter(
            "dropped_requests",
            "Queued requests never computed: deadline passed or caller gone",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.model_loaded = Gauge("model_loaded", "1 once the model is loaded and warm", namespace=ns, registry=r)

    def serve(self, host: str, port: int) -> tuple[object, int]:
        """Start the exporter on its own port (0 picks one); returns (server, port)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, int(server.server_port)
