"""A1111's old name of `modules.infotext_utils` (extensions written before v1.7 import this one): the same module
object, as in A1111, so that buttons registered through either name are wired alike."""
import sys

from . import infotext_utils

sys.modules[__name__] = infotext_utils
