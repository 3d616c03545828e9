"""lltrace: profiling and diagnostics for real-time autoregressive video diffusion."""

__version__ = "0.1.0"
__all__ = ["__version__", "profile"]


def __getattr__(name: str):
    # Lazy: `import lltrace` stays cheap (no torch) until the API is used.
    if name == "profile":
        from lltrace.api import profile
        return profile
    raise AttributeError(f"module 'lltrace' has no attribute {name!r}")
