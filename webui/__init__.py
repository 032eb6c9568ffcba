"""Self-hosted Stable Diffusion web UI (A1111-compatible)."""

__version__ = "0.1.0"
