"""Instrumentation: regions, frame clock, recompile monitor, profiler windows, run directory."""
