"""Warehouse sinks: one merge contract (``sales_cdc.sql``), one adapter per engine."""

from .base import MergeResult, Warehouse
from .postgres import PostgresWarehouse
from .redshift import RedshiftDataApiWarehouse, RedshiftStatementError, RedshiftTarget

__all__ = ["MergeResult", "PostgresWarehouse", "RedshiftDataApiWarehouse", "RedshiftStatementError", "RedshiftTarget",
           "Warehouse"]
