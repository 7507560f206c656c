"""Benchmarks against the reference tools, and the side environments those tools live in."""
