"""A1111's old name of `modules.infotext_utils` (extensions written before v1.7 import this one)."""
from .infotext_utils import *  # noqa: F401,F403
from .infotext_utils import (MISSING_KEY_DEFAULTS, create_override_settings_dict,  # noqa: F401
                             infotext_to_setting_name_mapping, parse_generation_parameters, quote, unquote)
