"""The command lines' surface: every option explained, and the job's own `run` (jobs/local_job.py, the job package
alone) and the harness's `sales-cdc run` taking the same job options."""

from __future__ import annotations

import argparse

from sales_cdc import local_job
from sales_cdc_local.parser import _commands, build_parser

HARNESS_OWN = {"--pg-data-dir", "--verbose", "--quiet", "--log-format", "--help"}  # the console and embedded PostgreSQL


def _options(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[-1]: a for a in command._actions if a.option_strings}


def _run_command(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices["run"]


def test_every_option_of_every_command_is_explained():
    parsers = [*_commands(next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))),
               _run_command(local_job.build_parser())]
    unexplained = [(p.prog, name) for p in parsers for name, action in _options(p).items() if not action.help]
    assert unexplained == []


def test_the_local_job_s_run_takes_the_harness_s_job_options():
    harness = _options(_run_command(build_parser()))
    job = _options(_run_command(local_job.build_parser()))
    assert set(harness) - HARNESS_OWN == set(job) - HARNESS_OWN
    for name in set(job) - HARNESS_OWN - {"--warehouse-url", "--docs-location"}:  # (the harness has defaults)
        assert job[name].default == harness[name].default, name
