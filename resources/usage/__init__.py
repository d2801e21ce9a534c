"""Usage warehouse: DuckDB tables, prices, reports, 5-hour blocks and the status line's live figures."""
