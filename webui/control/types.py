"""Control types (A1111's "Control Type" radio): each narrows the preprocessor and model dropdowns.

Models are matched to a type by a substring of their file name, as A1111's extension does (a scribble model is often
called "sketch", a tile model "blur", a normal-map model "normal").
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ControlType:
    name: str
    model_words: tuple[str, ...]  # a model belongs to the type when its name contains one of these (lower case)
    default_module: str


CONTROL_TYPES: tuple[ControlType, ...] = (
    ControlType("All", (), "none"),
    ControlType("Canny", ("canny",), "canny"),
    ControlType("Depth", ("depth",), "depth_midas"),
    ControlType("NormalMap", ("normal",), "normal_bae"),
    ControlType("OpenPose", ("openpose", "pose"), "openpose_full"),
    ControlType("MLSD", ("mlsd",), "mlsd"),
    ControlType("Lineart", ("lineart",), "lineart_standard"),
    ControlType("SoftEdge", ("softedge", "hed", "pidi"), "softedge_pidinet"),
    ControlType("Scribble", ("scribble", "sketch"), "scribble_pidinet"),
    ControlType("Shuffle", ("shuffle",), "shuffle"),
    ControlType("Tile", ("tile", "blur"), "tile_resample"),
    ControlType("Inpaint", ("inpaint",), "inpaint_only"),
)
TYPE_NAMES = tuple(t.name for t in CONTROL_TYPES)


def control_type(name: str) -> ControlType:
    for entry in CONTROL_TYPES:
        if entry.name.lower() == str(name).strip().lower():
            return entry
    raise KeyError(f"unknown control type {name!r}; known: {', '.join(TYPE_NAMES)}")


def models_for_type(type_name: str, model_titles: list[str]) -> list[str]:
    """The model titles offered under a control type ("None" first; "All" keeps every model)."""
    entry = control_type(type_name)
    titles = [t for t in model_titles if t != "None"]
    if entry.model_words:
        titles = [t for t in titles if any(word in t.lower() for word in entry.model_words)]
    return ["None", *titles]
