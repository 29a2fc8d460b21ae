"""Great Expectations, set up once per job and run once per micro-batch.

One ephemeral GX context holds the suites (loaded from the file-backed project in ``expectations/``),
a Spark dataframe asset, one validation definition per suite and a checkpoint that updates the Data
Docs site. Building these per batch would cost seconds; here a batch only calls ``checkpoint.run``.

The Data Docs site lives in a local folder or an S3 prefix that outlives the job, while the context
is ephemeral: the index builder is told not to drop pages of earlier runs
(``skip_and_clean_missing: false``), and results are removed from the in-memory store once their
pages are written, so a long-running stream does not grow the driver's memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import great_expectations as gx
from great_expectations.core.expectation_suite import ExpectationSuite
from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.row_conditions import deserialize_row_condition
from pyspark.sql import DataFrame

from .suites import Suite

log = logging.getLogger(__name__)

SITE_NAME = "sales_cdc_data_quality"
RULE_META = "rule"  # added to each expectation's meta at load time: results name their rule
SUITE_KEYS = ("name", "id", "expectations", "meta", "notes")


@dataclass(frozen=True)
class DocsSite:
    """Where the Data Docs site is written: a local folder or ``s3://bucket/prefix``."""

    location: str
    endpoint_url: str | None = None  # S3 only: e.g. a moto server
    region: str = "us-east-1"

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    def site_config(self) -> dict[str, Any]:
        if self.is_s3:
            parsed = urlparse(self.location)
            backend: dict[str, Any] = {"class_name": "TupleS3StoreBackend", "bucket": parsed.netloc,
                                       "prefix": parsed.path.strip("/"),
                                       "boto3_options": {"region_name": self.region}}
            if self.endpoint_url:
                backend["boto3_options"]["endpoint_url"] = self.endpoint_url
        else:
            backend = {"class_name": "TupleFilesystemStoreBackend",
                       "base_directory": str(Path(self.location).resolve())}
        return {"class_name": "SiteBuilder", "show_how_to_buttons": False, "store_backend": backend,
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "skip_and_clean_missing": False}}

    @property
    def index_url(self) -> str:
        if self.is_s3:
            return self.location.rstrip("/") + "/index.html"
        return (Path(self.location).resolve() / "index.html").as_uri()


def _tagged(suite: Suite) -> dict[str, Any]:
    """The suite document with each expectation's rule name in its meta, so results map back to rules."""
    document = {k: suite.document[k] for k in SUITE_KEYS if k in suite.document}
    expectations = []
    for expectation, rule in zip(suite.document["expectations"], suite.rules, strict=True):
        expectations.append({**expectation, "meta": {**(expectation.get("meta") or {}), RULE_META: rule.name}})
    return {**document, "expectations": expectations}


@dataclass(frozen=True)
class SuiteRun:
    suite: str
    result: ExpectationSuiteValidationResult
    docs_url: str | None


class GxRunner:
    def __init__(self, suites: list[Suite], docs: DocsSite | None, result_format: str = "SUMMARY",
                 name: str = "sales_cdc"):
        # GX's INFO chatter floods job logs (one of its modules pins its own logger to INFO)
        for name in ("great_expectations", "great_expectations.data_context.types.base"):
            logging.getLogger(name).setLevel(logging.WARNING)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        context.config.data_docs_sites = {}  # drop GX's default site in a temp folder
        if docs is not None:
            context.add_data_docs_site(SITE_NAME, docs.site_config())
        datasource = context.data_sources.add_spark(f"{name}_spark")
        batch_definition = datasource.add_dataframe_asset("micro_batch").add_batch_definition_whole_dataframe("batch")
        definitions = []
        for suite in suites:
            gx_suite = context.suites.add(ExpectationSuite(**_tagged(suite)))
            definitions.append(context.validation_definitions.add(
                gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=gx_suite)))
        actions = [gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[SITE_NAME])] if docs else []
        self.checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{name}_micro_batch", validation_definitions=definitions, actions=actions,
            result_format={"result_format": result_format, "partial_unexpected_count": 10}))
        self.context = context
        self.docs = docs
        self._engine = datasource.get_execution_engine()

    def row_condition_sql(self, row_condition: Any, condition_parser: str | None = None) -> str:
        """A suite's ``row_condition`` as Spark SQL, translated by GX's own Spark engine."""
        condition = deserialize_row_condition(row_condition)
        if isinstance(condition, str):
            if condition_parser != "spark":
                raise ValueError(f"string row_condition needs condition_parser 'spark': {condition!r}")
            return condition
        return self._engine.condition_to_filter_clause(condition)

    def validate(self, df: DataFrame, run_name: str, parameters: dict[str, Any]) -> list[SuiteRun]:
        result = self.checkpoint.run(batch_parameters={"dataframe": df}, expectation_parameters=parameters,
                                     run_id=RunIdentifier(run_name=run_name))
        runs = []
        store = self.context.validation_results_store
        for key, suite_result in result.run_results.items():
            url = self._page_url(key) if self.docs is not None else None
            runs.append(SuiteRun(suite_result.suite_name, suite_result, url))
            store.remove_key(key)  # its page is written; keep the driver's memory flat
        return runs

    def _page_url(self, key) -> str | None:
        urls = self.context.get_docs_sites_urls(resource_identifier=key, site_name=SITE_NAME, only_if_exists=False)
        return urls[0].get("site_url") if urls else None
