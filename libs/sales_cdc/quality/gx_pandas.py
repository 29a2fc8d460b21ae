"""GX's pandas engine as a screen for small batches: clean ones cleared without a Spark query.

On GX's Spark engine a batch's verdicts cost one Spark query per bundle of metrics, ~0.6 s however few its
rows; GX's pandas engine, over the state collected as Arrow, gives the same suites' verdicts in ~0.1 s at
1,000 rows. The screen only ever clears a batch: when every rule passes on pandas, those results are the
batch's; when any fails, they are dropped and the batch goes the Spark way (row predicates, detail), whose
verdicts are then the record. A difference between the engines can so cost time, never a wrong pass that
the Spark engine would fail — which ``tests/test_dq_engines.py`` holds on random and poisoned rows.

The column-type rules check the frame's schema in Spark's terms (``DecimalType``); GX's pandas engine knows
numpy and Python types only, with none for a decimal column. They run on GX's Spark engine, which reads
the schema and starts no Spark job, and their results join the pandas ones in the suite's order.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from great_expectations.core.expectation_suite import ExpectationSuite
from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.expectations.row_conditions import deserialize_row_condition
from great_expectations.validator.v1_validator import Validator
from great_expectations.validator.validation_statistics import calc_validation_statistics
from pyspark.sql import DataFrame

from .docs_site import RULE_META

# rules about the frame's schema in Spark's type names: answered by the Spark engine (no Spark job)
SCHEMA_RULES = frozenset({"expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"})
BOOLEAN_ONLY = {"result_format": "BOOLEAN_ONLY"}


def not_screenable(suites: list[ExpectationSuite]) -> str | None:
    """Why the suites cannot run on pandas (a row condition in Spark SQL), or None."""
    for suite in suites:
        for expectation in suite.expectation_configurations:
            condition = expectation.kwargs.get("row_condition")
            if condition and isinstance(deserialize_row_condition(condition), str):
                return f"suite {suite.name} has a row_condition in Spark SQL, which pandas cannot evaluate"
    return None


def _part(suite: ExpectationSuite, schema_rules: bool) -> ExpectationSuite:
    """The suite's schema rules (or all its other rules), as a suite of the same name (not in any store)."""
    return ExpectationSuite(name=suite.name, expectations=[
        e for e in suite.expectation_configurations if (e.type in SCHEMA_RULES) == schema_rules])


def _joined(suite: ExpectationSuite, parts: list[ExpectationSuiteValidationResult],
            run_id: RunIdentifier) -> ExpectationSuiteValidationResult:
    """One result for the suite from its parts' results, in the suite's order, with the run's identity."""
    order = {e.meta[RULE_META]: n for n, e in enumerate(suite.expectation_configurations)}
    results = sorted((r for part in parts for r in part.results),
                     key=lambda result: order[result.expectation_config.meta[RULE_META]])
    statistics = calc_validation_statistics(results)
    main = parts[0]
    return ExpectationSuiteValidationResult(
        results=results, success=statistics.success, suite_name=suite.name, batch_id=main.batch_id,
        statistics={"evaluated_expectations": statistics.evaluated_expectations,
                    "successful_expectations": statistics.successful_expectations,
                    "unsuccessful_expectations": statistics.unsuccessful_expectations,
                    "success_percent": statistics.success_percent},
        meta={**main.meta, "run_id": run_id, "validation_time": run_id.run_time,
              "batch_parameters": {"dataframe": "<DATAFRAME>"}})


class PandasScreen:
    """The suites on GX's pandas engine (their schema rules on the Spark engine's schema), BOOLEAN_ONLY."""

    def __init__(self, context, name: str, suites: list[ExpectationSuite], spark_batches) -> None:
        asset = context.data_sources.add_pandas(f"{name}_pandas").add_dataframe_asset("micro_batch")
        self._pandas_batches = asset.add_batch_definition_whole_dataframe("batch")
        self._spark_batches = spark_batches
        self._suites = [(suite, _part(suite, False), _part(suite, True)) for suite in suites]

    def run(self, state: DataFrame, rows: pa.Table, parameters: dict[str, Any],
            run_id: RunIdentifier) -> dict[ValidationResultIdentifier, ExpectationSuiteValidationResult]:
        """Each suite's result on ``rows`` (``state`` collected), keyed as a checkpoint keys them."""
        # integers with nulls as Python ints, not floats: a float64 column rounds values above 2**53
        frame = rows.to_pandas(integer_object_nulls=True)
        on_pandas = Validator(self._pandas_batches, BOOLEAN_ONLY, {"dataframe": frame})
        on_schema = Validator(self._spark_batches, BOOLEAN_ONLY, {"dataframe": state})
        results = {}
        for suite, values, schema in self._suites:
            parts = [on_pandas.validate_expectation_suite(values, parameters)]
            if schema.expectation_configurations:
                parts.append(on_schema.validate_expectation_suite(schema, parameters))
            result = _joined(suite, parts, run_id)
            key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
                                             run_id=run_id, batch_identifier=result.batch_id)
            results[key] = result
        return results
