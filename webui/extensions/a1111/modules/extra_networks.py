"""A1111's `modules.extra_networks`: prompt tags `<kind:arg1:arg2...>` handled by extensions.

An extension subclasses `ExtraNetwork("mytype")` and calls `register_extra_network(instance)`. Before each batch is
sampled, `activate(p, params_list)` is called with the `ExtraNetworkParams` of every `<mytype:...>` tag in the
batch's (first) prompt; every other registered network is activated with an empty list, as A1111 does. After the
last batch `deactivate(p)` runs (when the prompt had any tag). The tags never reach the model: our prompt parser
cuts every `<kind:...>` tag out (webui/prompts/extra_networks.py), and the infotext keeps the prompt as written.
Our own LoRAs (`<lora:...>`, `<lyco:...>`) are applied by the engine (webui/engine/networks.py); a kind nobody
handles gives the engine's "not supported" warning. The engine side: webui/extensions/a1111/script_hooks.py.
"""
from __future__ import annotations

import contextlib
import logging
import re
from collections import defaultdict

from webui.extensions.a1111.runtime import RUNTIME

log = logging.getLogger("webui.extensions")

extra_network_registry: dict = {}  # name -> ExtraNetwork
extra_network_aliases: dict = {}  # alias -> ExtraNetwork
_owners: dict = {}  # id(ExtraNetwork) -> the Loading (extension) that registered it: its errors are reported there

re_extra_net = re.compile(r"<(\w+):([^>]+)>")


class ExtraNetworkParams:
    """One tag's arguments: `items` as written (split on `:`), `positional` and `named` (`key=value`)."""

    def __init__(self, items=None):
        self.items = items or []
        self.positional = []
        self.named = {}
        for item in self.items:
            parts = item.split("=", 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        return isinstance(other, ExtraNetworkParams) and self.items == other.items

    def __repr__(self):
        return f"ExtraNetworkParams({self.items!r})"


class ExtraNetwork:
    """Subclass it; `name` is the tag's kind (`<name:...>`)."""

    def __init__(self, name):
        self.name = name

    def activate(self, p, params_list):
        """Called before a batch is sampled with the ExtraNetworkParams of this kind's tags (maybe none)."""
        raise NotImplementedError

    def deactivate(self, p):
        """Called after the last batch: undo what activate did."""
        raise NotImplementedError


def initialize():
    extra_network_registry.clear()
    extra_network_aliases.clear()
    _owners.clear()


def register_extra_network(extra_network):
    extra_network_registry[extra_network.name] = extra_network
    _owners.setdefault(id(extra_network), RUNTIME.current)


def register_extra_network_alias(extra_network, alias):
    extra_network_aliases[alias] = extra_network
    _owners.setdefault(id(extra_network), RUNTIME.current)


def _as_owner(network):
    """While calling `network`: its extension is the one calling (errors.display reports under its name)."""
    owner = _owners.get(id(network))
    if owner is None:
        return contextlib.nullcontext()
    return RUNTIME.loading(owner.extension, owner.basedir, owner.script_path)


def register_default_extra_networks():
    """A1111 registers its hypernetworks here; our LoRAs are the engine's own (nothing to register)."""


def handled_kinds() -> set[str]:
    """The tag kinds extensions handle (the engine does not warn about them)."""
    return set(extra_network_registry) | set(extra_network_aliases)


def lookup_extra_networks(extra_network_data):
    """{ExtraNetwork: [ExtraNetworkParams, ...]} for parsed tags (unknown kinds skipped)."""
    found = {}
    for name, params in list((extra_network_data or {}).items()):
        network = extra_network_registry.get(name) or extra_network_aliases.get(name)
        if network is None:
            log.info("Skipping unknown extra network: %s", name)
            continue
        found.setdefault(network, []).extend(params)
    return found


def _display(network, exc, task):
    from modules import errors
    with _as_owner(network):
        errors.display(exc, task)


def _call(network, task: str, function, *args) -> bool:
    """`function(*args)` as `network`'s extension; what it raises is reported under it (the run goes on)."""
    try:
        with _as_owner(network):
            function(*args)
        return True
    except Exception as exc:  # noqa: BLE001
        _display(network, exc, task)
        return False


def activate(p, extra_network_data):
    """Activate the tagged networks in prompt order, then every other registered one with [] (as A1111, also one
    whose activation with its tags failed)."""
    activated = [network for network, params in lookup_extra_networks(extra_network_data).items()
                 if _call(network, f"activating extra network {network.name} with arguments {params}",
                          network.activate, p, params)]
    for name, network in list(extra_network_registry.items()):
        if network not in activated:
            _call(network, f"activating extra network {name}", network.activate, p, [])


def deactivate(p, extra_network_data):
    """Deactivate the tagged networks, then every other registered one."""
    tagged = lookup_extra_networks(extra_network_data)
    for network in tagged:
        _call(network, f"deactivating extra network {network.name}", network.deactivate, p)
    for name, network in list(extra_network_registry.items()):
        if network not in tagged:
            _call(network, f"deactivating unmentioned extra network {name}", network.deactivate, p)


def parse_prompt(prompt):
    """(the prompt without its tags, {kind: [ExtraNetworkParams, ...]})."""
    found = defaultdict(list)

    def take(match):
        found[match.group(1)].append(ExtraNetworkParams(items=match.group(2).split(":")))
        return ""

    return re.sub(re_extra_net, take, prompt or ""), found


def parse_prompts(prompts):
    """(each prompt without its tags, the first prompt's tags), as A1111."""
    cleaned, data = [], None
    for prompt in prompts:
        text, parsed = parse_prompt(prompt)
        if data is None:
            data = parsed
        cleaned.append(text)
    return cleaned, data if data is not None else defaultdict(list)


def get_user_metadata(filename, lister=None):
    """A network file's user metadata (A1111 keeps it in a .json beside the file): {} when there is none."""
    import json
    import os
    if filename is None:
        return {}
    path = os.path.splitext(filename)[0] + ".json"
    try:
        with open(path, encoding="utf8") as file:
            data = json.load(file)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _publish() -> None:
    from webui.engine.networks import set_extension_kinds
    set_extension_kinds(handled_kinds)


_publish()
