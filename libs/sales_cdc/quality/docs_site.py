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
  with a fresh ``Environment`` per build, every batch recompiled ~100 templates (0.6 s per batch).
"""

from __future__ import annotations

import threading
from typing import ClassVar

from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder
from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView
from jinja2 import Environment


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


class CachedJinjaPageView(_SharedEnvironment, DefaultJinjaPageView):
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


def class_config(cls: type) -> dict[str, str]:
    """A GX ``module_name`` / ``class_name`` entry naming ``cls``, for a site builder's configuration."""
    return {"module_name": cls.__module__, "class_name": cls.__name__}
