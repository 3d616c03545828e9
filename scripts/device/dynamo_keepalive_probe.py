"""Device diagnostic (issue #13): why `lltrace doctor` segfaults in torch 2.11's dynamo.

The crash is in `torch._dynamo.graph_bytecode_inputs.reset_user_object_tracking`, which dynamo
calls before it compiles a new frame: it clears `keep_alive`, the list that holds the objects
(CUDA streams, events) that compiled code registered, so the crash is most likely in one of
those objects' destructors. This runs `lltrace doctor ARGS` with that function wrapped:
it prints what `keep_alive` holds at each reset (types and count, flushed before the clear),
with HOLD=1 it moves the objects into a list of its own instead of freeing them, and with
TEXT=1 it also runs the text encoder's compile check. GC=off disables the cyclic garbage
collector; GC=each collects before each check (the crash then follows the check whose garbage
it was).

    python3 scripts/device/dynamo_keepalive_probe.py --preset baseline --stages recache
    HOLD=1 python3 scripts/device/dynamo_keepalive_probe.py --preset baseline
"""
import collections
import os
import sys

import torch._dynamo.convert_frame as convert_frame
import torch._dynamo.graph_bytecode_inputs as inputs

held: list = []
original = inputs.reset_user_object_tracking


def logged_reset() -> None:
    kinds = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in inputs.keep_alive)
    print(f"[keepalive] reset: {len(inputs.keep_alive)} objects {dict(kinds)}", file=sys.stderr, flush=True)
    if os.environ.get("HOLD") == "1":
        held.extend(inputs.keep_alive)
        del inputs.keep_alive[:]
    original()


convert_frame.reset_user_object_tracking = logged_reset
inputs.reset_user_object_tracking = logged_reset
try:
    import torch._dynamo.variables.streams as streams
    streams.reset_user_object_tracking = logged_reset
except ImportError:
    pass

import lltrace.doctor.pipeline as doctor_pipeline  # noqa: E402
from lltrace.commands.cli import main  # noqa: E402

if os.environ.get("GC") == "off":   # is it the cyclic GC (a destructor it runs) that crashes?
    import gc
    gc.disable()
elif os.environ.get("GC") == "each":   # collect before each check: the crash names whose garbage
    import gc
    _diagnose = doctor_pipeline.diagnose_preset

    def _collecting(*args, progress=lambda s: None, **kwargs):
        def step(line):
            print(f"[gc] collecting before: {line}", file=sys.stderr, flush=True)
            gc.collect()
            progress(line)
        return _diagnose(*args, progress=step, **kwargs)
    doctor_pipeline.diagnose_preset = _collecting

if os.environ.get("TEXT") == "1":   # also run the text encoder's compile check the doctor skips on 2.11
    doctor_pipeline._text_compile_crashes = lambda pipe: False

sys.argv = ["lltrace", "doctor", *sys.argv[1:]]
main()
