"""Local AWS: a moto server in its own process, clients pointed at it, and the demo's resources.

moto runs as a separate process (docs/design.md §3): an in-process ThreadedMotoServer cannot serve while a
native library (delta-rs) holds the calling thread.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from sales_cdc.aws import aws_client, aws_resource
from sales_cdc.config import REGION

if TYPE_CHECKING:
    from sales_cdc.schema import EntitySchema

KINESIS_STREAM = "kinesis-for-sales-data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    """``with MotoServer() as moto: moto.client("kinesis")`` — a moto server on a free loopback port."""

    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sales_cdc_local.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            # a session of its own: a Ctrl-C at the terminal stops the job, which then stops this server
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self.process.returncode}")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self, service: str):
        return aws_client(service, endpoint=self.endpoint)

    def resource(self, service: str):
        return aws_resource(service, endpoint=self.endpoint)


STREAM = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}


def create_source_table(dynamodb_client, entity: EntitySchema, table_name: str, stream: bool = True) -> str | None:
    """The source table (the entity's key: partition, then sort key) with its NEW_AND_OLD_IMAGES stream (or
    none yet, ``stream=False``: :func:`enable_stream` later); returns the stream ARN."""
    dynamodb_client.create_table(
        TableName=table_name,
        KeySchema=[{"AttributeName": k, "KeyType": kind}
                   for k, kind in zip(entity.keys, ("HASH", "RANGE"), strict=False)],
        AttributeDefinitions=[{"AttributeName": f.name, "AttributeType": f.ddb_type} for f in entity.key_fields],
        BillingMode="PAY_PER_REQUEST",
        **({"StreamSpecification": STREAM} if stream else {}),
        SSESpecification={"Enabled": True},
    )
    dynamodb_client.get_waiter("table_exists").wait(TableName=table_name)
    return dynamodb_client.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")


def enable_stream(dynamodb_client, table_name: str) -> str:
    """Attach a NEW_AND_OLD_IMAGES stream to an existing table (it carries the changes from now on); its ARN."""
    dynamodb_client.update_table(TableName=table_name, StreamSpecification=STREAM)
    return dynamodb_client.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]


def create_kinesis_stream(kinesis_client, name: str = KINESIS_STREAM, shards: int = 2) -> str:
    kinesis_client.create_stream(StreamName=name, ShardCount=shards)
    kinesis_client.get_waiter("stream_exists").wait(StreamName=name)
    return kinesis_client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]


ALERT_TOPIC = "sales-cdc-alerts"


def create_alert_topic(sns_client, sqs_client, name: str = ALERT_TOPIC) -> tuple[str, str]:
    """An SNS topic with an SQS queue subscribed (raw delivery off: the queue gets SNS envelopes, as an
    email or HTTPS subscriber would see Subject + Message). Returns (topic ARN, queue URL)."""
    topic_arn = sns_client.create_topic(Name=name)["TopicArn"]
    queue_url = sqs_client.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
    attributes = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    sns_client.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=attributes["QueueArn"])
    return topic_arn, queue_url


def read_alerts(sqs_client, queue_url: str, wait_seconds: int = 1) -> list[dict]:
    """Every SNS notification waiting in ``queue_url`` (the SNS envelope: Subject, Message, ...), consumed."""
    notifications = []
    while True:
        response = sqs_client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds)
        messages = response.get("Messages", [])
        if not messages:
            return notifications
        for message in messages:
            notifications.append(json.loads(message["Body"]))
            sqs_client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _exists(describe) -> bool:
    """Whether ``describe()`` finds its resource (a not-found error: no; any other error is raised)."""
    try:
        describe()
    except ClientError as error:
        if error.response["Error"]["Code"] in ("ResourceNotFoundException", "404", "NoSuchBucket"):
            return False
        raise
    return True


def set_up_source(endpoint: str, entity: EntitySchema, table_name: str, kinesis_stream: str = KINESIS_STREAM,
                  shards: int = 2, bucket: str | None = None, region: str = REGION) -> list[str]:
    """On a moto server at ``endpoint``: the table (with its stream), the Kinesis stream ``pipe`` writes and the job
    reads, and a bucket for the lake, each unless it exists. Returns what was created (a second call: nothing)."""
    dynamodb, kinesis, s3 = (aws_client(s, endpoint=endpoint, region=region) for s in ("dynamodb", "kinesis", "s3"))
    created = []
    # asked by name, not found in a listing: list_tables and list_streams return a page (100) of the names
    if not _exists(lambda: dynamodb.describe_table(TableName=table_name)):
        create_source_table(dynamodb, entity, table_name)
        created.append(f"DynamoDB table {table_name} (stream NEW_AND_OLD_IMAGES)")
    if not _exists(lambda: kinesis.describe_stream_summary(StreamName=kinesis_stream)):
        create_kinesis_stream(kinesis, kinesis_stream, shards)
        created.append(f"Kinesis stream {kinesis_stream} ({shards} shards)")
    if bucket and not _exists(lambda: s3.head_bucket(Bucket=bucket)):
        where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, **where)
        created.append(f"S3 bucket {bucket}")
    return created
