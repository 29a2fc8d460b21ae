from setuptools import find_packages, setup

setup(
    name="sales-cdc",
    version="0.1.0",
    description="Change-data-capture pipeline for e-commerce orders: DynamoDB -> Kinesis -> Spark/Glue -> lake + Redshift",
    python_requires=">=3.11",
    package_dir={"": "libs"},
    packages=find_packages("libs"),
    install_requires=[
        "pyspark==4.1.1",
        "pyarrow>=17",
        "pandas>=2.2",  # pyspark's Arrow conversions need it
        "boto3>=1.35",
        "psycopg[binary]>=3.2",
        "pgserver>=0.1.4",
        "rich>=13",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "chispa>=0.11",
            "ruff>=0.8",
            "sqlglot>=25",
        ],
    },
    entry_points={"console_scripts": ["sales-cdc=sales_cdc.cli:main"]},
)
