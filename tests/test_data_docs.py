"""The Data Docs site as a reader sees it: `sales-cdc demo-fixtures`, then its pages opened in headless Chromium with
every host name unresolvable (offline); the rendered DOM is read, and screenshots are kept
(``SALES_CDC_ARTIFACTS``, default ``test-artifacts/``; docs/data-quality.md shows two of them)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sales_cdc_local.cli import main
from tests.helpers import REPO, rendered_dom, screenshot

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("SALES_CDC_ARTIFACTS", REPO / "test-artifacts")) / "data-docs"
JOB = "sales-cdc-demo"


@pytest.fixture(scope="module")
def site(tmp_path_factory, pg_url) -> Path:
    work = tmp_path_factory.mktemp("docs-demo")
    assert main(["demo-fixtures", "--work-dir", str(work), "--warehouse-url", pg_url, "--db-schema", "data_docs"]) == 0
    return work / "data_docs"


def _batch_page(site: Path, batch_id: int) -> Path:
    (page,) = site.glob(f"batches/{JOB}-*-{batch_id}.html")
    return page


def _cells(dom: str) -> list[list[str]]:
    """The rows of the page's tables as text."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", dom, flags=re.S)
    return [[re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", cell)).strip()
             for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)] for row in rows]


def test_the_index_lists_every_batch_newest_first_with_its_verdict_and_counts(site):
    dom = rendered_dom(site / "index.html")
    rows = [r for r in _cells(dom) if r and r[0].isdigit()]
    assert [r[0] for r in rows] == ["5", "4", "3", "2", "1", "0"]
    batch_2 = next(r for r in rows if r[0] == "2")
    # verdict, events read, loaded, quarantined at decode / by data quality / by the warehouse
    assert batch_2[3:8] == ["quarantined", "9", "3", "6", "0"]
    assert any("orders.quantity.be_between (quarantine)" in r[-1] for r in rows)
    screenshot(site / "index.html", ARTIFACTS / "index.png", "1400,760")


def test_a_batch_page_shows_its_decode_rejects_with_their_reasons(site):
    page = _batch_page(site, 2)
    rows = _cells(rendered_dom(page))
    rejects = {r[1]: r for r in rows if len(r) == 4 and r[0] == "decode"}
    assert "payload is not valid JSON" in rejects and "missing dynamodb.SequenceNumber" in rejects
    assert rejects["unknown eventName 'UPSERT' (expected one of INSERT, MODIFY, REMOVE)"][2:] == ["1", "o-0008"]
    assert sum(int(r[2]) for r in rejects.values()) == 6
    screenshot(page, ARTIFACTS / "batch.png", "1400,1100")


def test_a_failed_rule_shows_its_severity_and_why_on_the_batch_page_and_on_gx_s_page(site):
    dom = rendered_dom(_batch_page(site, 3))
    failed = {r[0]: r for r in _cells(dom) if r and r[0].startswith("orders.")}
    rule = failed["orders.quantity.be_between"]
    assert rule[1].startswith("quarantine: the failing rows are quarantined") and rule[3] == \
        "The shop sells 1 to 5 units per order."
    (gx_page,) = site.glob(f"validations/orders/{JOB}-batch-3/*/*.html")
    gx_dom = rendered_dom(gx_page)
    gx_rows = {r[0]: r for r in _cells(gx_dom) if r and r[0].startswith("orders.")}
    assert gx_rows["orders.quantity.be_between"][1:3] == [
        "quarantine (the failing rows are quarantined, the rest of the batch is written)", "FAILED"]
    screenshot(gx_page, ARTIFACTS / "validation.png", "1400,1400")


def test_a_clean_batch_s_gx_page_shows_observed_values_not_unknown(site):
    (page,) = site.glob(f"validations/cdc_envelope/{JOB}-batch-0/*/*.html")
    dom = rendered_dom(page)
    assert "100% not null" in dom and "% unexpected" in dom and "unknown % not null" not in dom


def test_gx_s_own_index_and_pages_load_their_scripts_and_styles_from_the_site(site):
    dom = rendered_dom(site / "gx_index.html")
    assert 'data-index="0"' in dom  # bootstrap-table (jQuery, offline) built the list of validation results
    for page in [site / "index.html", site / "gx_index.html", *site.glob("validations/*/*/*/*.html"),
                 *site.glob("expectations/*.html"), *site.glob("batches/*.html")]:
        html = page.read_text()
        loaded = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="([^"]+)"', html)
        assert not [url for url in loaded if "://" in url], page  # nothing from another host
        for url in loaded:
            assert (page.parent / url.split("?")[0]).resolve().exists(), f"{page.name}: {url} is not on the site"
