"""Pictures as they enter the server (API base64, UI uploads, files of a batch folder): any mode Pillow opens becomes
one the rest of the app handles and PNG can store: RGB, RGBA (when the picture has transparency) or L.

16-bit and 32-bit greyscale are scaled to 8 bits (Pillow's own conversion would clip everything above 255 to white);
CMYK, YCbCr, LAB, HSV and palette pictures become RGB; palette pictures with transparency, LA and premultiplied modes
become RGBA; 1-bit becomes L. The picture's `info` (its PNG text, such as the infotext) is kept.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageColor

KEPT_MODES = ("RGB", "RGBA", "L")
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16-bit and 32-bit single-channel pictures
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def wide_to_l(image: Image.Image) -> Image.Image:
    """A 16-bit or 32-bit greyscale picture as 8-bit L, scaled (a float picture in 0..1 or 0..255, an integer one in
    0..255 or, when it goes higher, 0..65535)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        top = 1.0 if values.size and values.max() <= 1.0 else 255.0
    else:
        top = 65535.0 if values.size and values.max() > 255 else 255.0
    grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L")


def as_rgb(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """`image` as 8-bit RGB: 16-bit and 32-bit greyscale scaled down to 8 bits (Pillow's own conversion would clip
    everything above 255 to white), transparency laid over `background`."""
    if image.mode in WIDE_MODES:
        return wide_to_l(image).convert("RGB")
    if has_alpha(image):
        try:
            colour = ImageColor.getrgb(background)[:3]
        except ValueError:
            colour = (255, 255, 255)
        canvas = Image.new("RGB", image.size, colour)
        rgba = normalise_mode(image).convert("RGBA")
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def normalise_mode(image: Image.Image) -> Image.Image:
    """`image` in RGB, RGBA or L (the same object when it already is); see the module's docstring."""
    if image.mode in KEPT_MODES:
        return image
    if image.mode in WIDE_MODES:
        converted = wide_to_l(image)
    elif image.mode == "1":
        converted = image.convert("L")
    elif image.mode == "La":  # premultiplied: Pillow unpremultiplies to LA only
        converted = image.convert("LA").convert("RGBA")
    elif has_alpha(image):
        converted = image.convert("RGBA")
    else:
        converted = image.convert("RGB")
    converted.info = dict(image.info)
    converted.info.pop("transparency", None)  # a palette index or colour: meaningless once converted
    return converted
