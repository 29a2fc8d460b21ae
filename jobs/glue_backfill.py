"""AWS Glue 6.0 batch job entry point of the backfill (Command.Name ``glueetl``).

Thin on purpose: parse the job parameters, create the Glue context, hand over to ``sales_cdc.glue_backfill``.
Parameters: docs/backfill.md "On AWS".
"""

from __future__ import annotations

import logging
import sys

import boto3
from awsglue.context import GlueContext
from awsglue.job import Job
from awsglue.utils import getResolvedOptions
from botocore.config import Config
from pyspark.context import SparkContext

from sales_cdc import glue, glue_backfill

RETRIES = Config(retries={"max_attempts": 10, "mode": "adaptive"})


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = glue.resolve_args(argv, getResolvedOptions, glue_backfill.BACKFILL_PARAMS)
    glue_context = GlueContext(SparkContext.getOrCreate())
    job = Job(glue_context)
    job.init(args["JOB_NAME"], args)
    logging.getLogger("sales_cdc").info(glue_backfill.run(
        glue_context.spark_session, args, clients=lambda service: boto3.client(service, config=RETRIES)))
    job.commit()


if __name__ == "__main__":
    main(sys.argv)
