"""Warehouse sinks: one merge contract (``sales_cdc.sql``), one adapter per engine."""

from .base import MergeResult, Warehouse
from .postgres import PostgresWarehouse

__all__ = ["MergeResult", "PostgresWarehouse", "Warehouse"]
