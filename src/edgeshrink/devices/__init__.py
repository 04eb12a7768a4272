"""Device and network profiles (TOML data files), latency and energy estimates, and the advisor."""
