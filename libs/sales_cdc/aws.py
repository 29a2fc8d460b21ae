"""AWS clients with the project's retries (botocore's standard mode: throttling and transient errors are
retried with backoff, so no caller hand-rolls it). An endpoint on 127.0.0.1 (a local moto server) gets
dummy credentials when none are set."""

from __future__ import annotations

import os

import boto3
from botocore.config import Config

from .config import REGION

RETRIES = Config(retries={"mode": "standard", "max_attempts": 10}, connect_timeout=5, read_timeout=30)


def _local_credentials(endpoint: str | None) -> dict:
    # moto accepts any credentials; real endpoints use the normal credential chain only.
    if endpoint and "127.0.0.1" in endpoint and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return {}


def aws_client(service: str, *, endpoint: str | None = None, region: str = REGION, config: Config | None = None):
    """A client with the project's retries (``config``, if given, is merged over them)."""
    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        config=RETRIES if config is None else RETRIES.merge(config), **_local_credentials(endpoint))


def aws_resource(service: str, *, endpoint: str | None = None, region: str = REGION):
    return boto3.resource(service, endpoint_url=endpoint, region_name=region, config=RETRIES,
                          **_local_credentials(endpoint))
