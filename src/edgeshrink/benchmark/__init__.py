"""`edgeshrink bench`: compare models across runtimes the way MLPerf Tiny reports them (accuracy, latency by
timed windows, memory, energy), with trade-off plots.

protocol.py   the windowed latency protocol (clock replaceable)
runtimes.py   the runtimes a file can be benchmarked in, and loading a file in one
run.py        `bench(...)`: export per runtime, measure, the Pareto front
report.py     bench.json, report.html and the table
"""
