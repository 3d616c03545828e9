"""Instrumentation: regions, frame clock, recompile monitor, profiler windows, run directory.

- regions.py      `region(name)`: NVTX range + record_function, levels off/block/layer/op
- hooks.py        `instrument_module(model)`, `wrap_method(obj, attr, name)`: regions by module name
- observer.py     `CaptureObserver`: the pipeline's observer callbacks -> regions, clock, events
- frame_clock.py  `FrameClock`: per-frame latency from CUDA events (or host timers), `stats()`
- recompiles.py   `RecompileMonitor`: recompiles, graph breaks, CUDA-graph skips, in-process
- profiler.py     `ProfilerWindow`: torch.profiler over `--profile-blocks A:B` or on demand
- rundir.py       `RunDirectory`: traces/<run-id>/ files, written atomically
- pyspy.py        `PySpyRecorder`: host stacks into the run directory
- session.py      `run_session(pipeline, ...)`: all of the above around a streaming pipeline
"""
