"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class LltraceError(Exception):
    """A mistake in the user's input or environment (bad flag, bad file, no CUDA).

    `hint` is an optional second sentence telling the user what to do.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class NeedsCudaError(LltraceError):
    """A GPU-only feature was asked for on a machine without CUDA."""

    def __init__(self, feature: str):
        super().__init__(f"{feature} needs CUDA, and no CUDA device is available",
                         "run it on a machine with an NVIDIA GPU")
