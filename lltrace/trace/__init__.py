"""Trace reading: streaming Kineto/Chrome loader, GPU attribution, instances, budgets, kernel classes.

A trace goes one way: reader -> attribution -> instances -> budget.
    load_trace(path_or_rundir, progress=None) -> Trace      lltrace.trace.loader
    resolve_source(path) -> Source(kind="run"|"trace"|"budget", ...)
    regions_and_attribution(trace) -> RegionAttribution      lltrace.trace.attribution
    measure(trace, meta=None, ra=None) -> Instances           lltrace.trace.instances (per-instance values)
    budget_of(trace, instances) -> Budget                    lltrace.trace.budget
    build_budget(trace, meta=None) -> Budget                 (= budget_of(trace, measure(trace, meta)))
    load_budget(path, progress=None) -> Budget               (run dir, trace or budget JSON)
    Budget.to_dict() / Budget.from_dict(d)                   docs/FORMATS.md §3
Modules: reader (streaming JSON), events (compact event model), attribution (region forest,
launch -> kernel links, kernel classes per activity), instances (the one pass over them),
budget (sums and percentiles of the instances), regions (ll/ names -> tree nodes), kernels
(kernel classes), jsonround (how numbers are written to JSON).
"""
