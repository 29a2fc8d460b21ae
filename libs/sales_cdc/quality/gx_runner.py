"""Great Expectations, set up once per job and run once per micro-batch.

One ephemeral GX context holds the suites (loaded from the file-backed project in ``expectations/``),
a Spark dataframe asset, one validation definition per suite and a checkpoint that updates the Data
Docs site. Building these per batch would cost seconds; here a batch only calls ``checkpoint.run``.

The Data Docs site lives in a local folder or an S3 prefix that outlives the job, while the context
is ephemeral: the job holds the results of its latest ``index_runs`` suite runs in memory (the index
lists those) and drops older ones, so a long-running stream does not grow the driver's memory; pages
are never deleted (see ``docs_site``). The held results are also kept on the site, under
``RESULTS_DIR`` (one JSON file each, written when their pages are), and a job that starts loads them:
after a restart the index still lists the batches before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import boto3
import great_expectations as gx
import pyarrow as pa
from botocore.exceptions import ClientError
from great_expectations.core.expectation_suite import ExpectationSuite
from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.expectations.row_conditions import deserialize_row_condition
from pyspark.sql import DataFrame

from ..config import REGION
from ..faults import crash_point
from . import assets, gx_spark  # noqa: F401 (gx_spark registers add_sales_cdc_spark)
from .batch_pages import GX_INDEX, BatchPages, BatchSummary
from .docs_site import (
    RULE_META,
    CachedJinjaIndexPageView,
    CachedJinjaPageView,
    RetainingSiteIndexBuilder,
    RuleValidationResultsPageRenderer,
    class_config,
)
from .gx_pandas import PandasScreen, not_screenable
from .rows import is_row_level
from .suites import Rule, Suite

log = logging.getLogger(__name__)

SITE_NAME = "sales_cdc_data_quality"
SUITE_KEYS = ("name", "id", "expectations", "meta", "notes")
SITE_SECTIONS = ("expectations", "validations", "profiling")  # GX's default sections, kept, with cached views
RESULTS_DIR = "sales_cdc_results"  # under the site, per job: the results the index lists, for the next run to load


@dataclass(frozen=True)
class DocsSite:
    """Where the Data Docs site is written: a local folder or ``s3://bucket/prefix``."""

    location: str
    endpoint_url: str | None = None  # S3 only: e.g. a moto server
    region: str = REGION

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    def site_config(self, local_dir: Path, index_runs: int) -> dict[str, Any]:
        backend = {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(local_dir.resolve())}
        page_view = class_config(CachedJinjaPageView)
        return {"class_name": "SiteBuilder", "show_how_to_buttons": False, "store_backend": backend,
                "site_section_builders": {section: {"view": page_view} for section in SITE_SECTIONS} | {
                    "validations": {"view": page_view, "renderer": class_config(RuleValidationResultsPageRenderer)}},
                "site_index_builder": {**class_config(RetainingSiteIndexBuilder), "view": class_config(
                    CachedJinjaIndexPageView), "validation_results_limit": index_runs}}

    @property
    def index_url(self) -> str:
        if self.is_s3:
            return self.location.rstrip("/") + "/index.html"
        return (Path(self.location).resolve() / "index.html").as_uri()

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        parsed = urlparse(self.location)
        return parsed.netloc, parsed.path.strip("/")


class S3SiteSync:
    """GX 1.24 has no S3 store backend: the site is built in a local folder and uploaded after each batch.
    The first upload walks the folder (styles, scripts, the suites' pages); after that only the files a
    batch writes (its pages and the index) are uploaded, so a stream's thousandth batch does not walk its
    thousands of pages. Nothing is deleted on S3: pages of earlier runs stay."""

    CONTENT_TYPES: ClassVar[dict[str, str]] = {
        ".html": "text/html", ".css": "text/css", ".js": "application/javascript", ".json": "application/json",
        ".png": "image/png", ".svg": "image/svg+xml", ".woff2": "font/woff2", ".ico": "image/x-icon",
        ".gif": "image/gif", ".otf": "font/otf", ".txt": "text/plain", ".md": "text/markdown"}

    def __init__(self, site: DocsSite, local_dir: Path, s3) -> None:
        self.bucket, self.prefix = site.bucket_and_prefix
        self.local_dir, self.s3 = local_dir.resolve(), s3
        self.uploaded: dict[Path, float] = {}
        self.walked = False  # the first sync walks the whole folder

    def download(self, folder: str) -> None:
        """Copy ``folder`` of the site on S3 into the local folder (a restarted job's held results)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{folder}/")
        for obj in (o for page in pages for o in page.get("Contents", [])):
            path = self.local_dir / obj["Key"].removeprefix(f"{self.prefix}/")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.s3.download_file(self.bucket, obj["Key"], str(path))
            self.uploaded[path] = path.stat().st_mtime  # the same as on S3: not uploaded again

    def delete(self, path: Path) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{path.relative_to(self.local_dir).as_posix()}")
        self.uploaded.pop(path, None)

    def sync(self, written: list[Path] | None = None) -> int:
        """Upload the new or changed files among ``written`` (every file of the site on the first call, or
        when ``written`` is None); returns how many were uploaded."""
        paths = self.local_dir.rglob("*") if written is None or not self.walked else written
        self.walked = True
        count = 0
        for path in paths:
            if not path.is_file():
                continue
            mtime = path.stat().st_mtime
            if self.uploaded.get(path) == mtime:
                continue
            key = f"{self.prefix}/{path.relative_to(self.local_dir).as_posix()}"
            self.s3.upload_file(str(path), self.bucket, key, ExtraArgs={
                "ContentType": self.CONTENT_TYPES.get(path.suffix, "application/octet-stream")})
            self.uploaded[path] = mtime
            count += 1
        return count


def rule_notes(rule: Rule) -> list[str]:
    """What GX's pages show beside an expectation (its notes, opened by ``docs_site``): the severity and why."""
    why = [f"Why: {rule.why}"] if rule.why else []
    return [f"**Severity: {rule.severity.value}** ({rule.severity.meaning})", *why]


def _tagged(suite: Suite) -> dict[str, Any]:
    """The suite document with each expectation's rule name in its meta, so results map back to rules, and its
    severity and why in its notes, so GX's pages show them."""
    document = {k: suite.document[k] for k in SUITE_KEYS if k in suite.document}
    expectations = []
    for expectation, rule in zip(suite.document["expectations"], suite.rules, strict=True):
        notes = expectation.get("notes") or []
        expectations.append({**expectation, "meta": {**(expectation.get("meta") or {}), RULE_META: rule.name},
                             "notes": [*rule_notes(rule), *([notes] if isinstance(notes, str) else notes)]})
    return {**document, "expectations": expectations}


@dataclass(frozen=True)
class SuiteRun:
    suite: str
    result: ExpectationSuiteValidationResult
    docs_url: str | None  # where ``publish`` puts its page (on S3 for an S3 site)
    key: ValidationResultIdentifier
    page: Path | None  # that page's file in the local folder the site is built in


class _PageErrors(logging.Filter):
    """The errors GX's site builder logs, kept instead of logged: it logs a page it could not render or write at
    ERROR, with its traceback, and goes on."""

    def __init__(self) -> None:
        super().__init__()
        self.causes: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        found = re.search(r"follows:\s*(.*?)\.\s+Traceback", record.getMessage(), re.S)
        self.causes.append(found.group(1) if found else record.getMessage())
        return False


@contextlib.contextmanager
def _page_errors():
    """Raises the first page GX could not render or write as one error (the caller logs it on one line)."""
    errors = _PageErrors()
    builder = logging.getLogger("great_expectations.render.renderer.site_builder")
    builder.addFilter(errors)
    try:
        yield
    finally:
        builder.removeFilter(errors)
    if errors.causes:
        raise OSError(f"{len(errors.causes)} page(s) not written, the first: {errors.causes[0]}")


class GxRunner:
    def __init__(self, suites: list[Suite], docs: DocsSite | None, result_format: str = "SUMMARY",
                 name: str = "sales_cdc", s3_client=None, index_batches: int = 100):
        # GX's INFO chatter floods job logs (one of its modules pins its own logger to INFO)
        for logger in ("great_expectations", "great_expectations.data_context.types.base"):
            logging.getLogger(logger).setLevel(logging.WARNING)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        context.config.data_docs_sites = {}  # drop GX's default site in a temp folder
        self.sync: S3SiteSync | None = None
        # results held for the index: the latest index_batches batches, one result per suite each
        self._held: deque = deque()
        self._held_limit = index_batches * len(suites) if docs is not None else 0
        if docs is not None:
            local_dir = Path(tempfile.mkdtemp(prefix="sales-cdc-docs-") if docs.is_s3 else docs.location).resolve()
            assets.install(local_dir)  # the pages' scripts and styles (an S3 site's first sync uploads them)
            context.add_data_docs_site(SITE_NAME, docs.site_config(local_dir, self._held_limit))
            if docs.is_s3:
                self.sync = S3SiteSync(docs, local_dir, s3_client or boto3.client(
                    "s3", endpoint_url=docs.endpoint_url, region_name=docs.region))
        # persist=False: GX would persist every frame it validates and never unpersist it (one cached frame
        # per batch for the life of the stream); the batch handler checkpoints the state before GX's Spark
        # queries read it, and releases it
        datasource = context.data_sources.add_sales_cdc_spark(f"{name}_spark", persist=False)
        batch_definition = datasource.add_dataframe_asset("micro_batch").add_batch_definition_whole_dataframe("batch")
        definitions = []
        for suite in suites:
            gx_suite = context.suites.add(ExpectationSuite(**_tagged(suite)))
            definitions.append(context.validation_definitions.add(
                gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=gx_suite)))
        # Two checkpoints over the same definitions: the configured detail, and BOOLEAN_ONLY for batches the
        # row predicates found clean (verdicts only: a third of the Spark jobs; nothing to show anyway).
        # No docs action: ``publish`` renders the pages of a batch's final runs, once, when the caller asks.
        # No unexpected-index query: GX renders it by analysing ``df.filter(<condition>)``, which Spark refuses
        # for the window condition of the unique rule; GX swallows that, but Spark's listener bus logged it as
        # an ERROR with ~200 Java frames per batch. The query is a text for the docs; the rows are ours (rows.py).
        self.checkpoints = {
            detail: context.checkpoints.add(gx.Checkpoint(
                name=f"{name}_micro_batch_{detail.lower()}", validation_definitions=definitions, actions=[],
                result_format={"result_format": detail, "partial_unexpected_count": 10,
                               "return_unexpected_index_query": False}))
            for detail in {result_format, "BOOLEAN_ONLY"}}
        reason = not_screenable([d.suite for d in definitions])
        self.pandas = PandasScreen(context, name, [d.suite for d in definitions], batch_definition) \
            if reason is None else None
        if reason is not None:
            log.info("data quality: every batch on Spark (%s)", reason)
        self.result_format = result_format
        self._rules = {rule.name: rule for suite in suites for rule in suite.rules}
        self._suite_pages_built = False
        self.context = context
        self.docs = docs
        self._engine = datasource.get_execution_engine()
        # per job name: two jobs writing one site do not load (or drop) each other's results
        self._results_folder = f"{RESULTS_DIR}/{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
        self._site_dir = local_dir if docs is not None else None  # where the site is built
        self._results_dir = local_dir / self._results_folder if docs is not None else None
        self.batch_pages = BatchPages(local_dir, name, index_batches) if docs is not None else None
        if self._results_dir is not None:
            self._load_held()
            if self.sync is not None:
                self.sync.download(self.batch_pages.summaries_folder)
            for path in self.batch_pages.load():
                if self.sync is not None:
                    self.sync.delete(path)

    def row_condition_sql(self, row_condition: Any, condition_parser: str | None = None) -> str:
        """A suite's ``row_condition`` as Spark SQL, translated by GX's own Spark engine."""
        condition = deserialize_row_condition(row_condition)
        if isinstance(condition, str):
            if condition_parser != "spark":
                raise ValueError(f"string row_condition needs condition_parser 'spark': {condition!r}")
            return condition
        return self._engine.condition_to_filter_clause(condition)

    def validate(self, df: DataFrame, run_name: str, parameters: dict[str, Any], *, detailed: bool = True,
                 run_time=None) -> list[SuiteRun]:
        """Run the checkpoint (the configured result format, or BOOLEAN_ONLY when not ``detailed``); the
        same ``run_time`` makes a detailed re-run replace the results of a first, boolean one. Pages are
        made by ``publish``."""
        checkpoint = self.checkpoints[self.result_format if detailed else "BOOLEAN_ONLY"]
        result = checkpoint.run(batch_parameters={"dataframe": df}, expectation_parameters=parameters,
                                run_id=RunIdentifier(run_name=run_name, run_time=run_time))
        return self._runs(result.run_results, detailed)

    def screen(self, df: DataFrame, rows: pa.Table, run_name: str, parameters: dict[str, Any],
               run_time=None) -> list[SuiteRun] | None:
        """The batch's runs on the pandas screen (``gx_pandas``) over ``rows``, ``df`` collected, if every rule
        passes there; else None (nothing held), and the batch goes the Spark way."""
        if self.pandas is None:
            return None
        results = self.pandas.run(df, rows, parameters, RunIdentifier(run_name=run_name, run_time=run_time))
        if not all(result.success for result in results.values()):
            return None
        return self._runs(results, detailed=False)

    def _runs(self, run_results: dict, detailed: bool) -> list[SuiteRun]:
        runs = []
        for key, suite_result in run_results.items():
            if not detailed:
                self._fill_passing_counts(suite_result)
            url, page = self._page(key) if self.docs is not None else (None, None)
            runs.append(SuiteRun(suite_result.suite_name, suite_result, url, key, page))
        self._hold(run_results)
        return runs

    def _fill_passing_counts(self, suite_result: ExpectationSuiteValidationResult) -> None:
        """A BOOLEAN_ONLY run carries no observed values (its pages read "unknown"). A row rule that passed without
        ``mostly`` had no unexpected row: that is said, so its page shows 0 % unexpected."""
        for result in suite_result.results:
            rule = self._rules.get((result.expectation_config.meta or {}).get(RULE_META)) \
                if result.expectation_config is not None else None
            if result.success and not result.result and rule is not None and is_row_level(rule) \
                    and "mostly" not in rule.kwargs:
                result.result = {"unexpected_count": 0, "unexpected_percent": 0.0, "partial_unexpected_list": [],
                                 "missing_count": 0, "missing_percent": 0.0}

    def publish(self, runs: list[SuiteRun]) -> None:
        """Render the runs' pages and the index (of the results ``validate`` holds) in one build, and upload
        them to an S3 site. GX's docs action built the index once per suite, and the suites' pages every
        time; they do not change while the job runs."""
        if self.docs is None:
            return
        # The pages are built from the results store. A run's result is stored here, off the batch's critical
        # path, not as it is made: storing serialises it (a fifth of a small batch's data quality, profiled).
        # (A checkpoint already stored its own results; a BOOLEAN_ONLY one has since had its counts filled in.)
        for run in runs:
            self.context.validation_results_store.set(run.key, run.result)
        resources = [r.key for r in runs]
        if not self._suite_pages_built:
            resources += [ExpectationSuiteIdentifier(name=suite.name) for suite in self.context.suites.all()]
        with _page_errors():
            self.context.build_data_docs(site_names=[SITE_NAME], resource_identifiers=resources, build_index=True)
        site_dir = self._site_dir
        written = [site_dir / "index.html", *[r.page for r in runs if r.page is not None]]
        if not self._suite_pages_built:
            written += sorted((site_dir / "expectations").rglob("*.html"))
        assets.serve_locally(site_dir, written)  # their scripts and styles from the site itself
        (site_dir / "index.html").replace(site_dir / GX_INDEX)  # the site's index is the batches' (batch_pages)
        written[0] = site_dir / GX_INDEX
        written.append(self.batch_pages.write_index())
        self._suite_pages_built = True
        crash_point("mid-docs")  # pages written, the results the next run's index reads not yet
        kept = [self._keep(r) for r in runs]  # after their pages: a loaded result always has its page
        if self.sync is not None:
            self.sync.sync([*written, *kept])

    def add_batch(self, summary: BatchSummary) -> None:
        """The batch's own page and the index that lists it (``batch_pages``), uploaded to an S3 site."""
        if self.batch_pages is None:
            return
        written, dropped = self.batch_pages.add(summary)
        if self.sync is not None:
            self.sync.sync(written)
            for path in dropped:
                self.sync.delete(path)

    def gx_pages(self, runs: list[SuiteRun]) -> dict[str, str]:
        """Suite -> its validation page of ``runs``, relative to the site."""
        return {r.suite: r.page.relative_to(self._site_dir).as_posix() for r in runs if r.page is not None}

    def _hold(self, keys) -> None:
        """Keep the results the index lists (the latest ``index_batches`` batches), drop older ones."""
        store = self.context.validation_results_store
        for key in keys:
            if key not in self._held:  # a detailed re-run of a batch replaces its results under the same key
                self._held.append(key)
        while len(self._held) > self._held_limit:
            dropped = self._held.popleft()
            if store.has_key(dropped):  # a result never published (no docs site) was never stored
                store.remove_key(dropped)
            self._forget(dropped)

    # --- the held results on the site, for the next job --------------------------------------------
    def _kept_path(self, key: ValidationResultIdentifier) -> Path:
        name = hashlib.sha256(json.dumps(key.to_tuple()).encode()).hexdigest()[:24]
        return self._results_dir / f"{name}.json"

    def _keep(self, run: SuiteRun) -> Path:
        """Write a published run's result where the next job loads it from; returns the file."""
        path = self._kept_path(run.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        store = self.context.validation_results_store
        document = {"key": list(run.key.to_tuple()), "result": store.serialize(run.result)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document))
        tmp.replace(path)  # whole or not at all: a crash never leaves half a file to load
        return path

    def _forget(self, key: ValidationResultIdentifier) -> None:
        if self._results_dir is None:  # no docs site: nothing kept
            return
        path = self._kept_path(key)
        path.unlink(missing_ok=True)
        if self.sync is not None:
            try:
                self.sync.delete(path)
            except ClientError as error:  # e.g. a role without s3:DeleteObject there: the index is still right
                log.warning("docs: could not delete the dropped result %s on S3 (%s)", path.name, error)

    def _load_held(self) -> None:
        """Hold the results an earlier job kept (newest ``index_batches`` batches), oldest first as a job holds
        them: by validation time (in each result's key), then suite."""
        if self.sync is not None:
            self.sync.download(self._results_folder)
        store = self.context.validation_results_store
        kept = []  # (key, result)
        for path in sorted(self._results_dir.glob("*.json")) if self._results_dir.exists() else []:
            try:  # unreadable (or from a GX that serialised differently): its page stays, the index skips it
                document = json.loads(path.read_text())
                kept.append((ValidationResultIdentifier.from_tuple(tuple(document["key"])),
                             store.deserialize(document["result"])))
            except Exception as error:  # any of: not JSON, a missing field, GX refusing the result
                log.warning("docs: not indexing kept result %s (%s: %s)", path.name, type(error).__name__, error)
        kept.sort(key=lambda entry: (entry[0].run_id.run_time, entry[0].expectation_suite_identifier.name))
        newest = len(kept) - self._held_limit
        for n, (key, result) in enumerate(kept):
            if n < newest:
                self._forget(key)  # out of the index (a smaller --docs-index-batches than before)
            else:
                store.set(key, result)
                self._held.append(key)

    def _page(self, key) -> tuple[str | None, Path | None]:
        """A result's page: its URL (on S3 for an S3 site) and its file in the local folder it is built in."""
        urls = self.context.get_docs_sites_urls(resource_identifier=key, site_name=SITE_NAME, only_if_exists=False)
        url = urls[0].get("site_url") if urls else None
        page = Path(url.removeprefix("file://")) if url and url.startswith("file://") else None
        if page is not None and self.sync is not None:  # the local file's place on S3
            url = f"{self.docs.location.rstrip('/')}/{page.relative_to(self.sync.local_dir).as_posix()}"
        return url, page
