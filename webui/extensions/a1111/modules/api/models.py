"""A1111's `modules.api.models`, as far as extensions' routes use it: they import it with `*` and declare their own
request bodies; the web UI's request and response models are in webui/api/models.py (not exported here)."""
from __future__ import annotations

from pydantic import BaseModel, Field  # noqa: F401 - what `from modules.api.models import *` brings to extensions
