"""One raw unary gRPC call with grpcio, for tests/it/otlp.rs.

Reads {"target": "127.0.0.1:PORT", "path": "/pkg.Service/Method",
"message": "<hex>", "tls": {"ca", "cert", "key"} (optional)} from stdin; prints the status code's name,
"details" when the trailers carried grpc-status-details-bin (else "-"), and
the status message.
"""

import json
import sys

import grpc

spec = json.load(sys.stdin)
tls = spec.get("tls")
if tls:
    # {"ca": PEM, "cert": PEM or absent, "key": PEM or absent}; the
    # server's name is "localhost".
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls["ca"].encode(),
        private_key=tls["key"].encode() if tls.get("key") else None,
        certificate_chain=tls["cert"].encode() if tls.get("cert") else None,
    )
    channel = grpc.secure_channel(
        spec["target"], credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )
else:
    channel = grpc.insecure_channel(spec["target"])
call = channel.unary_unary(
    spec["path"],
    request_serializer=lambda b: b,
    response_deserializer=lambda b: b,
)
try:
    _, info = call.with_call(bytes.fromhex(spec["message"]), timeout=10)
    trailers = info.trailing_metadata() or ()
    code, message = "OK", ""
except grpc.RpcError as e:
    trailers = e.trailing_metadata() or ()
    code, message = e.code().name, e.details() or ""
details = any(k == "grpc-status-details-bin" for k, _ in trailers)
print(code, "details" if details else "-", message)
