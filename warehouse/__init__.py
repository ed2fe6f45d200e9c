"""Warehouses behind one small protocol: DuckDB (embedded default) and BigQuery (production)."""

from warehouse.base import Columns, InsertResult, Warehouse, event_columns, make_warehouse, rows_of

__all__ = ["Columns", "InsertResult", "Warehouse", "event_columns", "make_warehouse", "rows_of"]
