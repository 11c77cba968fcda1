"""Following the change timeline: the store's replay then the live feed (``follow``), and the
gRPC ``WatchChanges`` server over it (``grpc_server``, with the ``grpc`` extra only: nothing
here imports grpc)."""

GRPC_EXTRA_HINT = ("CHANGE_GRPC_PORT needs the grpc extra, which is not installed: "
                   "pip install 'incident-detector[grpc]' (or set CHANGE_GRPC_PORT=0)")


class GrpcExtraMissing(ImportError):
    """CHANGE_GRPC_PORT is set, but grpcio or protobuf is not installed."""
