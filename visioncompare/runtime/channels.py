"""How the project's gRPC channels and servers are set up: message limits and TLS credentials.

Both ends use these: the model server (`visioncompare.runtime.server`), the client
(`visioncompare.runtime.client`), the gateway and the tools. Here, not in the server
module, so that a client imports no server.
"""

from __future__ import annotations

import grpc

from visioncompare.runtime.settings import ServerSettings


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    key = settings.tls_key_file.read_bytes()
    cert = settings.tls_cert_file.read_bytes()
    ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(
    root_ca: bytes | None, client_cert: bytes | None = None, client_key: bytes | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=root_ca, private_key=client_key, certificate_chain=client_cert
    )
