"""lltrace: profiling and diagnostics for real-time autoregressive video diffusion."""

__version__ = "0.1.0"
