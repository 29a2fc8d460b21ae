"""Pieces of GX's Data Docs site builder, adapted to a long-running job with an ephemeral context.

GX builds a new ``SiteBuilder`` on every docs update, and its index builder, called as GX calls it,
deletes every page whose validation result is no longer in the results store. This job keeps only the
latest results in memory (a stream validates forever), so as GX ships it the site would hold only the
last batch's pages. Configured through the site's ``view`` / ``site_index_builder`` class names:

- ``RetainingSiteIndexBuilder`` never deletes pages, and its index lists the runs whose results the
  job holds (the latest ``validation_results_limit``, loaded again by a restarted job, see
  ``gx_runner``). Older pages stay on the site and are linked from the results-history table
  (``docs_url``).
- ``CachedJinjaPageView`` / ``CachedJinjaIndexPageView`` compile GX's Jinja templates once per job:
  with a fresh ``Environment`` per build, every batch recompiled ~100 templates (0.6 s per batch); an
  expectation's notes (its severity and why) are shown open.
- ``RuleValidationResultsPageRenderer`` adds to GX's validation page a table of the suite's rules: severity,
  outcome, unexpected count and why.
"""

from __future__ import annotations

import threading
from typing import ClassVar

from great_expectations.render.components import (
    RenderedSectionContent,
    RenderedStringTemplateContent,
    RenderedTableContent,
)
from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer
from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder
from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import Environment

from .suites import Severity

RULE_META = "rule"  # each expectation's meta names its rule (set when the suites are loaded: gx_runner)


class _SharedEnvironment:
    """One Jinja ``Environment`` per view class and custom folders, shared by every instance. The filters
    GX registers on it are bound to the first instance; they keep no state besides that environment.
    Jinja environments are safe to share between threads."""

    _environments: ClassVar[dict[tuple, Environment]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, custom_styles_directory=None, custom_views_directory=None) -> None:
        key = (type(self), custom_styles_directory, custom_views_directory)
        with self._lock:
            environment = self._environments.get(key)
            if environment is None:
                super().__init__(custom_styles_directory, custom_views_directory)
                self._environments[key] = self.env
                return
        self.custom_styles_directory = custom_styles_directory
        self.custom_views_directory = custom_views_directory
        self.env = environment


# An expectation's notes (its severity and why, gx_runner.rule_notes): GX folds them away; they are shown open
NOTES_COLLAPSED = 'class="card card-body p-1 collapse m-2"'
NOTES_OPEN = 'class="card card-body p-1 collapse show m-2"'


class _NotesOpen:
    """A page whose expectations' notes (their severity and why) show without a click."""

    def render(self, document, template=None, **kwargs):
        return super().render(document, template, **kwargs).replace(NOTES_COLLAPSED, NOTES_OPEN)


class CachedJinjaPageView(_NotesOpen, _SharedEnvironment, DefaultJinjaPageView):
    """GX's page view (validation results, suites) with templates compiled once."""


class CachedJinjaIndexPageView(_SharedEnvironment, DefaultJinjaIndexPageView):
    """GX's index page view with templates compiled once."""


class RetainingSiteIndexBuilder(DefaultSiteIndexBuilder):
    """GX's index builder that never deletes pages and lists the runs whose results are still held."""

    def build(self, skip_and_clean_missing: bool = True, build_index: bool = True):
        return super().build(skip_and_clean_missing=False, build_index=build_index)

    def _build_validation_and_profiling_result_site_keys(self, skip_and_clean_missing: bool) -> list:
        # GX lists the pages in the folder the site is built in; a restarted job with an S3 site builds it
        # in a new folder, where the pages of the results it loaded are not (they are on S3). Every held
        # result has its page on the site: it was published (pages first) before it was kept.
        store_name = self.site_section_builders_config["validations"].get("source_store_name")
        return list(self.data_context.stores[store_name].list_keys())


class RuleValidationResultsPageRenderer(ValidationResultsPageRenderer):
    """GX's validation page, with a section after its overview that lists every rule of the suite: its severity
    (what a failure does to the batch), passed or failed, the unexpected count and why the rule exists."""

    def _collect_rendered_document_content_sections(self, validation_results, *args, **kwargs):
        sections = super()._collect_rendered_document_content_sections(validation_results, *args, **kwargs)
        rows = [_rule_row(result) for result in validation_results.results]
        rows.sort(key=lambda row: (row[2] == "passed", row[0]))  # the failed rules first
        header = RenderedStringTemplateContent(content_block_type="string_template", string_template={
            "template": RULES_SECTION, "tag": "h5", "styling": {"classes": ["m-0"]}})
        table = RenderedTableContent(
            content_block_type="table", header=header, header_row=["Rule", "Severity", "Outcome", "Unexpected", "Why"],
            table=rows,
            styling={"classes": ["col-12", "table-responsive", "mt-1"], "body": {"classes": ["table", "table-sm"]}})
        return [sections[0], RenderedSectionContent(section_name=RULES_SECTION, content_blocks=[table]),
                *sections[1:]]


RULES_SECTION = "Rules: severity and why"


def _rule_row(result) -> list[str]:
    meta = result.expectation_config.meta if result.expectation_config is not None else {}
    severity = meta.get("severity", "")
    means = f" ({Severity(severity).meaning})" if severity in {s.value for s in Severity} else ""
    unexpected = (result.result or {}).get("unexpected_count")
    return [meta.get(RULE_META, result.expectation_config.type if result.expectation_config else "?"),
            f"{severity}{means}", "passed" if result.success else "FAILED",
            "" if unexpected is None else str(unexpected), meta.get("why", "")]


def class_config(cls: type) -> dict[str, str]:
    """A GX ``module_name`` / ``class_name`` entry naming ``cls``, for a site builder's configuration."""
    return {"module_name": cls.__module__, "class_name": cls.__name__}
