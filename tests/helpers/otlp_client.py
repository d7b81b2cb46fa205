"""Sends metrics, logs and traces through orgsplit with the OpenTelemetry
Python SDK and its OTLP/HTTP (protobuf) exporters: an independent OTLP
sender for tests/it/otlp.rs.

Reads from stdin:
  {"endpoint": "http://127.0.0.1:PORT", "headers": {...}, "compression": "gzip"|"none",
   "protocol": "http"|"grpc",           # OTLP/HTTP (protobuf) or OTLP/gRPC exporters
   "namespaces": ["shop-prod", ...],   # one data point, log record and span each,
                                       # with a `namespace` attribute on the item
   "resource_namespace": "billing"}    # and one more of each from a resource
                                       # carrying k8s.namespace.name
Prints one line per export: "<signal> <SUCCESS|FAILURE>".
"""

import json
import logging
import sys

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

spec = json.load(sys.stdin)
base = spec["endpoint"].rstrip("/")
headers = spec.get("headers", {})
gzip = spec.get("compression") == "gzip"
compression = Compression.Gzip if gzip else Compression.NoCompression

if spec.get("protocol") == "grpc":
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
        OTLPLogExporter as GrpcLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
        OTLPMetricExporter as GrpcMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcSpanExporter,
    )

    def grpc_exporter(cls):
        def make(endpoint, headers, compression):
            return cls(
                endpoint=base,
                insecure=True,
                headers=tuple(headers.items()),
                compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
                timeout=5,
            )

        return make

    OTLPMetricExporter = grpc_exporter(GrpcMetricExporter)  # noqa: F811
    OTLPSpanExporter = grpc_exporter(GrpcSpanExporter)  # noqa: F811
    OTLPLogExporter = grpc_exporter(GrpcLogExporter)  # noqa: F811
namespaces = spec["namespaces"]
resource_ns = spec.get("resource_namespace")


def resources():
    yield Resource.create({"service.name": "e2e"}), True
    if resource_ns:
        yield Resource.create({"service.name": "e2e", "k8s.namespace.name": resource_ns}), False


# Metrics: a counter with one point per namespace.
metrics_data = []
for resource, per_item in resources():
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    counter = provider.get_meter("e2e-meter").create_counter("orders", unit="1")
    for i, ns in enumerate(namespaces if per_item else ["any"]):
        counter.add(i + 1, {"namespace": ns, "job": "api"} if per_item else {"job": "api"})
    metrics_data.append(reader.get_metrics_data())
exporter = OTLPMetricExporter(
    endpoint=base + "/v1/metrics", headers=headers, compression=compression
)
for data in metrics_data:
    print("metrics", exporter.export(data).name, flush=True)

# Traces: one span per namespace.
for resource, per_item in resources():
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e-tracer")
    for ns in namespaces if per_item else ["any"]:
        with tracer.start_as_current_span("work in " + ns) as span:
            if per_item:
                span.set_attribute("namespace", ns)
            span.add_event("checkpoint", {"step": 1})
    exporter = OTLPSpanExporter(
        endpoint=base + "/v1/traces", headers=headers, compression=compression
    )
    print("traces", exporter.export(memory.get_finished_spans()).name, flush=True)

# Logs: one record per namespace, through the logging bridge.
for resource, per_item in resources():
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = logging.getLogger("e2e-" + str(per_item))
    logger.propagate = False
    logger.addHandler(LoggingHandler(logger_provider=provider))
    logger.setLevel(logging.INFO)
    for ns in namespaces if per_item else ["any"]:
        if per_item:
            logger.info("line from " + ns, extra={"namespace": ns})
        else:
            logger.info("line from the resource")
    exporter = OTLPLogExporter(
        endpoint=base + "/v1/logs", headers=headers, compression=compression
    )
    print("logs", exporter.export(memory.get_finished_logs()).name, flush=True)
