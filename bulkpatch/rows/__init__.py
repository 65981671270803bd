"""Rows in: reading CSV/JSONL, typed columns, mapping a row to a request, the workload schema."""
