from setuptools import find_packages, setup

setup(
    name="sales-cdc",
    version="0.1.0",
    description="Change-data-capture pipeline for e-commerce orders: DynamoDB -> Kinesis -> Spark/Glue -> lake + Redshift",
    python_requires=">=3.11",
    package_dir={"": "libs"},
    packages=find_packages("libs"),
    # What the job needs everywhere (Glue included: Glue brings its own Spark, so pyspark is an extra).
    install_requires=[
        "boto3>=1.35",
        "pyarrow>=17",
        "psycopg[binary]>=3.2",
        "rich>=13",
        "faker>=30",
        "deltalake==1.6.6",  # the lake sink (delta-rs); Glue 6.0 also has Spark-native Delta
        "great_expectations==1.24.1",  # data-quality suites in expectations/ (GX 1.x file format)
        "pyyaml>=6",  # table contracts
        "jsonschema>=4",  # the contract file's format is checked with it
    ],
    package_data={"sales_cdc": ["contracts/*.yaml"]},
    extras_require={
        # laptop runs: local Spark (pinned to Glue 6.0's version), embedded PostgreSQL, moto server
        "local": [
            "pyspark==4.1.1",
            "pandas>=2.2",  # pyspark's Arrow conversions need it
            "pgserver>=0.1.4",
            "moto[server]==5.2.5",
        ],
        "dev": [
            "pytest>=8",
            "hypothesis>=6.100",  # property tests: every sink against a last-writer-by-sequence model
            "chispa>=0.11",
            "ruff>=0.8",
            "sqlglot>=25",
            "cfn-lint>=1.20",  # checkov lives in its own venv (Makefile): it pins packaging<24
            "pyyaml>=6",
            "matplotlib>=3.8",  # bench/ charts
            "psutil>=5.9",  # bench/: the CPU each process of the emulated source uses
        ],
    },
    entry_points={"console_scripts": ["sales-cdc=sales_cdc.cli:main"]},
)
