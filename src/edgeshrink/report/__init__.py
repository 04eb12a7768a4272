"""Reports: the JSON a run writes, the per-layer table, and (later) HTML."""
