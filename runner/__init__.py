"""runner: an OpenAI-compatible Batch API for one GPU box."""

__version__ = "0.1.0"
