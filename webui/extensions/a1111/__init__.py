"""A1111 compatibility: the `modules` package (and `launch`) that A1111 extensions import, as a thin layer over
our own objects. This folder is put on `sys.path` when extensions load, so `import modules.scripts` finds it."""
from pathlib import Path

COMPAT_PATH = Path(__file__).resolve().parent
