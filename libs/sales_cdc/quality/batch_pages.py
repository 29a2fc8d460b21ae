"""The Data Docs site's own pages, what a person reads first (GX's index becomes ``gx_index.html``):

- ``index.html`` lists every batch held, newest first: its verdict (passed, warned, quarantined, halted), events
  read, rows loaded, and what was quarantined at decode, by data quality and by the warehouse;
- ``batches/<job>-<stream>-<batch>.html`` shows one batch: the rejected records grouped by stage and reason (counts
  and example keys), the rules that failed with their severity, why and unexpected count, where the quarantined
  rows are, and links to GX's validation pages.

The pages are static HTML on the site's own Bootstrap (no script): they read the same from ``file://``, offline, or
a private bucket. Each batch's summary is kept on the site as JSON (``BATCHES_DIR``), so a restarted job's index
still lists the batches before it, as GX's held results do.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from jinja2 import Environment, PackageLoader, select_autoescape

from .. import schema as S
from .suites import Severity

BATCHES_DIR = "sales_cdc_batches"  # under the site, per job: the summaries the index lists
PAGES_DIR = "batches"
GX_INDEX = "gx_index.html"
EXAMPLES = 3  # example keys per group of rejects
VERDICTS = ("passed", "warned", "quarantined", "halted")


@dataclass(frozen=True)
class RejectGroup:
    stage: str  # decode, dq, warehouse
    reason: str
    count: int
    examples: list[str]  # keys of a few of the records (when they could be read)


@dataclass(frozen=True)
class FailedRule:
    name: str
    severity: str
    means: str  # what a failure of that severity does to the batch
    why: str
    unexpected: int | None


@dataclass(frozen=True)
class BatchSummary:
    job_name: str
    stream_id: str
    batch_id: int
    finished_at: str  # ISO-8601, UTC
    verdict: str  # one of VERDICTS
    events_read: int
    upserted: int
    deleted: int
    stale: int
    quarantined: dict[str, int]  # stage -> records
    rejects: list[RejectGroup] = field(default_factory=list)
    failed_rules: list[FailedRule] = field(default_factory=list)
    gx_pages: dict[str, str] = field(default_factory=dict)  # suite -> its validation page, relative to the site
    quarantine_at: list[str] = field(default_factory=list)  # the warehouse table, the lake's layer

    @property
    def page(self) -> str:
        """The batch page, relative to the site's root."""
        return f"{PAGES_DIR}/{_safe(self.job_name)}-{self.stream_id[:8]}-{self.batch_id}.html"

    @classmethod
    def from_json(cls, document: dict) -> BatchSummary:
        return cls(**{**document, "rejects": [RejectGroup(**r) for r in document["rejects"]],
                      "failed_rules": [FailedRule(**r) for r in document["failed_rules"]]})


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def reject_groups(quarantine_rows: pa.Table) -> list[RejectGroup]:
    """The batch's quarantine rows grouped by stage and reason, largest first, with a few keys each."""
    groups: dict[tuple[str, str], list] = {}
    for stage, reason, key in zip(*(quarantine_rows[c].to_pylist() for c in ("stage", S.QUARANTINE_REASON,
                                                                             "record_key")), strict=True):
        groups.setdefault((stage, reason), []).append(key)
    found = [RejectGroup(stage, reason, len(keys), [k for k in keys if k][:EXAMPLES])
             for (stage, reason), keys in groups.items()]
    return sorted(found, key=lambda g: (-g.count, g.stage, g.reason))


def failed_rules(outcome) -> list[FailedRule]:
    """The rules a ``DqOutcome`` failed, halt first."""
    order = {Severity.HALT: 0, Severity.QUARANTINE: 1, Severity.WARN: 2}
    failed = sorted((r for r in outcome.rules if not r.success), key=lambda r: (order[r.rule.severity], r.rule.name))
    return [FailedRule(r.rule.name, r.rule.severity.value, r.rule.severity.meaning, r.rule.why,
                       r.unexpected_count if r.unexpected_count is not None else r.failed_rows) for r in failed]


def summarize(job_name: str, stream_id: str, batch_id: int, *, events_read: int, merge=None, outcome=None,
              quarantine_rows: pa.Table | None = None, gx_pages: dict[str, str] | None = None,
              quarantine_at: list[str] | None = None) -> BatchSummary:
    """A batch's summary from what the handler has at its end (``merge`` None: nothing was written, a halt)."""
    rejects = reject_groups(quarantine_rows) if quarantine_rows is not None else []
    quarantined: dict[str, int] = {}
    for group in rejects:
        quarantined[group.stage] = quarantined.get(group.stage, 0) + group.count
    dq_outcome = outcome.outcome if outcome is not None else "not checked"
    return BatchSummary(
        job_name, stream_id, batch_id, datetime.now(UTC).isoformat(), verdict(quarantined, dq_outcome), events_read,
        merge.upserted_rows if merge else 0, merge.deleted_rows if merge else 0, merge.stale_rows if merge else 0,
        quarantined, rejects, failed_rules(outcome) if outcome is not None else [], gx_pages or {}, quarantine_at or [])


def verdict(quarantined: dict[str, int], dq_outcome: str) -> str:
    if dq_outcome == "halted":
        return "halted"
    if any(quarantined.values()) or dq_outcome == "quarantined":
        return "quarantined"
    return "warned" if dq_outcome == "warned" else "passed"


class BatchPages:
    """The index and the batch pages of one job's site folder (``site_dir``), for its latest ``limit`` batches."""

    def __init__(self, site_dir: Path, job_name: str, limit: int):
        self.site_dir, self.limit = site_dir, limit
        self.folder = site_dir / BATCHES_DIR / _safe(job_name)
        self.env = Environment(loader=PackageLoader("sales_cdc.quality", "templates"),
                               autoescape=select_autoescape(["html"]))
        self.held: list[BatchSummary] = []

    @property
    def summaries_folder(self) -> str:
        """The summaries' folder relative to the site (what a restarted job downloads from an S3 site)."""
        return self.folder.relative_to(self.site_dir).as_posix()

    def load(self) -> list[Path]:
        """Hold the summaries an earlier job of this name kept (the newest ``limit``); the older ones' files, deleted
        (a smaller --docs-index-batches than before)."""
        found = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.exists() else []:
            try:
                found.append(BatchSummary.from_json(json.loads(path.read_text())))
            except (ValueError, TypeError, KeyError):  # from another release: its page stays, the index skips it
                continue
        found.sort(key=lambda s: s.finished_at)
        self.held = found[-self.limit:]
        dropped = [self._kept(s) for s in found[:-self.limit]]
        for path in dropped:
            path.unlink(missing_ok=True)
        return dropped

    def _kept(self, summary: BatchSummary) -> Path:
        return self.folder / f"{Path(summary.page).stem}.json"

    def add(self, summary: BatchSummary) -> tuple[list[Path], list[Path]]:
        """Keep ``summary``, write its page and the index: (the files written, the summaries no longer listed,
        deleted so that a restarted job reads ``limit`` files, not every batch's; their pages stay)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        kept = self._kept(summary)
        kept.write_text(json.dumps(asdict(summary)))
        held = [s for s in self.held if s.page != summary.page] + [summary]
        self.held, dropped = held[-self.limit:], [self._kept(s) for s in held[:-self.limit]]
        for path in dropped:
            path.unlink(missing_ok=True)
        page = self.site_dir / summary.page
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(self.env.get_template("batch.html.j2").render(
            batch=summary, root=_root(self.site_dir, page), gx_index=GX_INDEX))
        return [kept, page, self.write_index()], dropped

    def write_index(self) -> Path:
        index = self.site_dir / "index.html"
        newest_first = sorted(self.held, key=lambda s: s.finished_at, reverse=True)
        index.write_text(self.env.get_template("index.html.j2").render(
            batches=newest_first, root="", gx_index=GX_INDEX, stages=S.QUARANTINE_STAGES))
        return index


def _root(site_dir: Path, page: Path) -> str:
    return os.path.relpath(site_dir, page.parent).replace(os.sep, "/") + "/"
