"""Extra-network tags in prompts: `<kind:arg1:arg2:...>` (`<lora:name:0.8>`, `<lyco:...>`, `<hypernet:name:w>`).

Tags are cut out of the prompt text (nothing else changes) and returned as calls. Arguments split on `:`; an
argument with exactly one `=` is named (`te=0.5`, `unet=1`, `dyn=8`), any other is positional. The first positional
argument is the network's name, as in A1111.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_TAG = re.compile(r"<(\w+):([^>]+)>")


@dataclass(frozen=True)
class ExtraNetworkCall:
    kind: str                                   # "lora", "lyco", "hypernet", ...
    positional: tuple[str, ...]                 # positional[0] is the network name
    named: dict[str, str] = field(default_factory=dict, hash=False)
    tag: str = ""                               # the tag as written, for messages

    @property
    def name(self) -> str:
        return self.positional[0] if self.positional else ""

    def describe(self) -> str:
        """The tag as the user wrote it (or rebuilt from the arguments)."""
        if self.tag:
            return self.tag
        args = list(self.positional) + [f"{key}={value}" for key, value in self.named.items()]
        return "<" + ":".join([self.kind, *args]) + ">"


def _call_from_match(match: re.Match) -> ExtraNetworkCall:
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in match.group(2).split(":"):
        parts = item.split("=")
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    return ExtraNetworkCall(match.group(1), tuple(positional), named, match.group(0))


def extract_extra_networks(text: str) -> tuple[str, list[ExtraNetworkCall]]:
    """Remove every `<kind:args>` tag from `text`; return the remaining text and the calls in prompt order."""
    calls: list[ExtraNetworkCall] = []

    def take(match: re.Match) -> str:
        calls.append(_call_from_match(match))
        return ""

    return _TAG.sub(take, text), calls


def _weight(call: ExtraNetworkCall, value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{call.describe()}: {what} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{call.describe()}: {what} {value!r} is not a finite number")
    return number


def lora_multipliers(call: ExtraNetworkCall) -> tuple[float, float]:
    """(text-encoder weight, UNet weight) of a `<lora:name:te:unet>` call, A1111's way.

    te: the first positional argument after the name, overridden by `te=`; default 1.0.
    unet: the second positional argument after the name, overridden by `unet=`; default: te.
    Raises ValueError naming the tag when a weight is not a number.
    """
    te = _weight(call, call.positional[1], "text-encoder weight") if len(call.positional) > 1 else 1.0
    if "te" in call.named:
        te = _weight(call, call.named["te"], "text-encoder weight")
    unet = _weight(call, call.positional[2], "UNet weight") if len(call.positional) > 2 else te
    if "unet" in call.named:
        unet = _weight(call, call.named["unet"], "UNet weight")
    return te, unet
