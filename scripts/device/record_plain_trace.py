"""Record a plain torch.profiler trace (no lltrace regions, two record_function ranges) of one
wan-1.3b block on the GPU: the 'foreign trace' fixture of tests/data/. Prints the top kernels."""
import gzip
import os
import shutil
import sys

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from lltrace.pipeline.generator import StreamingPipeline
from lltrace.pipeline.presets import load_preset

out = sys.argv[1]
pipe = StreamingPipeline(load_preset(sys.argv[2] if len(sys.argv) > 2 else "baseline"), device="cuda")
pipe.start("a red fox running through snow")
for _ in range(2):
    pipe.generate_block()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    with record_function("my_forward"):
        x = torch.randn(pipe._latent_shape(3), device="cuda", dtype=pipe.dtype)
        pipe.forward(x, pipe.timesteps[0], (pipe.block_index - 1) * 3)
    with record_function("my_decode"):
        pipe.decoder.decode_block(x)
    torch.cuda.synchronize()
tmp = out + ".tmp.json"
prof.export_chrome_trace(tmp)
with open(tmp, "rb") as f, gzip.open(out, "wb", compresslevel=9) as g:
    shutil.copyfileobj(f, g)
os.remove(tmp)
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=22, max_name_column_width=70))
print("trace", out, os.path.getsize(out))
