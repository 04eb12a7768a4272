"""The functions a user calls, over every kind of input: `profile`, `advise`, `export` (compress, load,
save and unpack live in pipeline/ and io/; `edgeshrink/__init__.py` lists them all)."""
