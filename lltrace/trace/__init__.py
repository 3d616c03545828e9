"""Trace reading: streaming Kineto/Chrome loader, GPU attribution, budgets, kernel classes.

The API other layers use (diff, export, TUI):
    load_trace(path_or_rundir, progress=None) -> Trace      lltrace.trace.loader
    resolve_source(path) -> Source(kind="run"|"trace"|"budget", ...)
    build_budget(trace, meta=None) -> Budget                 lltrace.trace.budget
    load_budget(path, progress=None) -> Budget               (run dir, trace or budget JSON)
    Budget.to_dict() / Budget.from_dict(d)                   docs/FORMATS.md §3
Modules: reader (streaming JSON), events (compact event model), attribution (launch ->
kernel links, range nesting), regions (ll/ names -> tree nodes), kernels (kernel classes).
"""
