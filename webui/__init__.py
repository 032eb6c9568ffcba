"""Self-hosted Stable Diffusion web UI (A1111-compatible)."""
