"""Data quality with Great Expectations: suites in ``expectations/``, warn / quarantine / halt per rule."""

from .check import DataQuality, DataQualityHalt, DqOutcome, RuleOutcome
from .suites import Rule, Severity, Suite, SuiteError, load_suites

__all__ = ["DataQuality", "DataQualityHalt", "DqOutcome", "Rule", "RuleOutcome", "Severity", "Suite", "SuiteError",
           "load_suites"]
