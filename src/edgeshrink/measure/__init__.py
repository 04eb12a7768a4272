"""Measurements: counts, memory, latency, energy estimates."""
