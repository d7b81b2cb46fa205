"""One raw unary gRPC call with grpcio, for tests/it/otlp.rs.

Reads {"target": "127.0.0.1:PORT", "path": "/pkg.Service/Method",
"message": "<hex>"} from stdin; prints the status code's name, and
"details" when the trailers carried grpc-status-details-bin.
"""

import json
import sys

import grpc

spec = json.load(sys.stdin)
channel = grpc.insecure_channel(spec["target"])
call = channel.unary_unary(
    spec["path"],
    request_serializer=lambda b: b,
    response_deserializer=lambda b: b,
)
try:
    _, info = call.with_call(bytes.fromhex(spec["message"]), timeout=10)
    trailers = info.trailing_metadata() or ()
    code = "OK"
except grpc.RpcError as e:
    trailers = e.trailing_metadata() or ()
    code = e.code().name
details = any(k == "grpc-status-details-bin" for k, _ in trailers)
print(code, "details" if details else "")
