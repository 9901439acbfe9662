"""A real S3 server for the tests: moto's, on loopback, configured the way a user configures a store (``AWS_*``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.ray_cluster import free_port


@contextlib.contextmanager
def s3_server(bucket: str = "congrad") -> Iterator[dict[str, str]]:
    """Start moto's S3 on 127.0.0.1 with ``bucket`` created; yields the ``AWS_*`` variables that reach it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)  # its default is 0.0.0.0
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "congrad-test",
        "AWS_SECRET_ACCESS_KEY": "congrad-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()
