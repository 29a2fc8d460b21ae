"""Two packages in one project: ``sales_cdc``, the job (what the Glue wheel holds), and ``sales_cdc_local``,
the local harness (CLI, demos, generator, pipe emulator, moto, embedded PostgreSQL, deploy), which imports
the job and is never imported by it.

``pip install -e ".[local,dev]"`` (``make install``) installs both. ``SALES_CDC_WHEEL=job pip wheel .``
(``make wheel``, ``sales-cdc deploy``) builds the job alone, with the job's requirements only: that wheel
is what Glue installs.
"""

import os

from setuptools import find_packages, setup

JOB_ONLY = os.environ.get("SALES_CDC_WHEEL") == "job"

# What the job needs everywhere (Glue included: Glue brings its own Spark, so pyspark is an extra).
JOB_REQUIRES = [
    "boto3>=1.35",
    "pyarrow>=17",
    "psycopg[binary]>=3.2",
    "deltalake==1.6.6",  # the lake sink (delta-rs); Glue 6.0 also has Spark-native Delta
    "great_expectations==1.24.1",  # data-quality suites in expectations/ (GX 1.x file format)
    "pyyaml>=6",  # table contracts
    "jsonschema>=4",  # the contract file's format is checked with it
]
# laptop runs: the harness, local Spark (pinned to Glue 6.0's version), embedded PostgreSQL, moto server
LOCAL_REQUIRES = [
    "rich>=13",
    "faker>=30",
    "pyspark==4.1.1",
    "pandas>=2.2",  # pyspark's Arrow conversions need it
    "pgserver>=0.1.4",
    "moto[server]==5.2.5",
]
DEV_REQUIRES = [
    "pytest>=8",
    "pytest-xdist>=3.5",  # make test: two pytest workers, one test file each at a time
    "hypothesis>=6.100",  # property tests: every sink against a last-writer-by-sequence model
    "chispa>=0.11",
    "ruff>=0.8",
    "sqlglot>=25",
    "cfn-lint>=1.20",  # checkov lives in its own venv (Makefile): it pins packaging<24
    "matplotlib>=3.8",  # bench/ charts
    "psutil>=5.9",  # bench/: the CPU each process of the emulated source uses
]

setup(
    name="sales-cdc",
    version="0.1.0",
    description="Change-data-capture pipeline from a DynamoDB table to a lake and Redshift, on Glue streaming",
    python_requires=">=3.11",
    package_dir={"": "libs"},
    packages=find_packages("libs", include=["sales_cdc", "sales_cdc.*"] if JOB_ONLY else ["sales_cdc*"]),
    install_requires=JOB_REQUIRES,
    # the default contract and suites travel with the job; the orders fixtures with the harness (demo-fixtures)
    # and the Data Docs pages' scripts, styles and fonts (served from the site: it works offline)
    package_data={"sales_cdc": ["contracts/*.yaml", "expectations/great_expectations.yml",
                                "expectations/expectations/*.json", "quality/static/vendor.json",
                                "quality/static/vendor/**/*", "quality/templates/*.j2"],
                  "sales_cdc_local": ["fixtures/cdc/*.jsonl", "fixtures/expected/*.jsonl"]},
    extras_require={} if JOB_ONLY else {"local": LOCAL_REQUIRES, "dev": DEV_REQUIRES},
    entry_points={} if JOB_ONLY else {"console_scripts": ["sales-cdc=sales_cdc_local.cli:main"]},
)
