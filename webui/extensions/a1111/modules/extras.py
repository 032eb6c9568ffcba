"""A1111's `modules.extras`: `run_pnginfo` (what the PNG Info tab shows for an image; images-browser calls it for
every picture it lists). The old Extras entry point `run_extras` is in `modules.postprocessing`, re-exported."""
from __future__ import annotations

import html


def _html(text: str) -> str:
    return "<p>" + "<br>\n".join(html.escape(line) for line in str(text).split("\n")) + "</p>"


def run_pnginfo(image):
    """('', infotext or None, HTML of every text entry: `parameters` first) as A1111's; ('', '', '') for None."""
    if image is None:
        return "", "", ""
    from modules import images
    geninfo, items = images.read_info_from_image(image)
    items = {"parameters": geninfo, **items}
    info = "".join(f"<div>\n<p><b>{html.escape(str(key))}</b></p>\n{_html(str(text))}\n</div>\n"
                   for key, text in items.items())
    if not info:
        info = "<div><p>Nothing found in the image.<p></div>"
    return "", geninfo, info


def __getattr__(name: str):
    if name in ("run_extras", "run_postprocessing"):
        from modules import postprocessing
        return getattr(postprocessing, name)
    raise AttributeError(f"module 'modules.extras' has no attribute {name!r}")
