"""Helpers shared by the test files (importable as `helpers.<module>`: pytest puts tests/ on sys.path).

- synthetic_trace  hand-made Kineto-shaped GPU traces that know where each kernel belongs
- fake_pipeline    a small streaming pipeline with the StreamingPipeline interface
- tiny_run         a real profiled run of the tiny model on the CPU
- recorded_run     a run directory with fixed numbers, and `plain()` for rendered text
- doctor_cases     modules with and without CUDA-graph hazards, and `where()` their lines are
"""
