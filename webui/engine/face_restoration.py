"""Face restoration: A1111's "Restore faces" (after decoding, before saving, per image) and the Extras tab's GFPGAN
and CodeFormer. Each face the detector finds is aligned to the 512x512 FFHQ template by its five landmarks,
restored by the chosen network, and pasted back under a soft mask: pixels outside the face's crop never change.

As A1111 (facexlib's FaceRestoreHelper), with three differences on purpose: the paste mask is the crop square,
eroded and feathered (facexlib's mask for when it runs without its face-parsing network, which A1111 runs; here with
odd windows, so the feathered edge never reaches past the crop); GFPGAN uses the
fixed noise stored in its weights, so a picture restores the same way every time; and the CodeFormer weight reaches
the network (A1111 1.10 passes it under a name spandrel's CodeFormer ignores, so there it is always 0.5).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..core.images import as_rgb
from ..models.face_restorers import FaceRestorationError, FaceRestorers

FACE_SIZE = 512
# Where the eyes, nose tip and mouth corners sit in a 512x512 FFHQ-aligned face (the template facexlib uses).
FFHQ_LANDMARKS = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                           [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)
OUTSIDE_GREY = (132, 133, 135)  # what fills a crop beyond the picture's edge (RGB; facexlib's grey)


def model_in_use(request, options) -> str | None:
    """The restorer a generation uses: the setting `face_restoration_model` when the request's `restore_faces` (or,
    when it leaves that unset, the setting `face_restoration`) is on; None when faces are left alone."""
    wanted = request.restore_faces if getattr(request, "restore_faces", None) is not None \
        else options.get("face_restoration")
    return str(options.get("face_restoration_model")) if wanted else None


def restore_faces(image: Image.Image, restorers: FaceRestorers, name: str,
                  codeformer_weight: float = 0.5) -> tuple[Image.Image, int]:
    """(`image` with every detected face restored by the restorer `name`, how many faces). The CodeFormer weight
    trades the restorer's own idea of a face (0) for the input's (1)."""
    net, detector = restorers.net(name), restorers.detector()
    import cv2

    rgb = np.ascontiguousarray(np.asarray(as_rgb(image), dtype=np.uint8))
    faces = detector.detect(np.ascontiguousarray(rgb[..., ::-1]))
    canvas = rgb.astype(np.float32)
    restored_count = 0
    for face in faces:
        matrix = cv2.estimateAffinePartial2D(face.landmarks, FFHQ_LANDMARKS, method=cv2.LMEDS)[0]
        if matrix is None:  # landmarks that fit no similarity transform (all in one point): not a face to align
            continue
        crop = cv2.warpAffine(rgb, matrix, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT,
                              borderValue=OUTSIDE_GREY)
        canvas = _paste(canvas, _restore(net, name, crop, codeformer_weight, restorers.device), matrix)
        restored_count += 1
    return Image.fromarray(canvas.astype(np.uint8)), restored_count


def _restore(net, name: str, crop: np.ndarray, weight: float, device: torch.device) -> np.ndarray:
    """One aligned 512x512 RGB crop through the network, in the [-1, 1] range all three were trained on."""
    pixels = torch.from_numpy(crop.astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    try:
        with torch.inference_mode():
            pixels = pixels.to(device)
            if name == "CodeFormer":
                out = net(pixels, weight=float(weight), adain=True)[0]
            elif name == "GFPGAN":
                out = net(pixels, return_rgb=False, randomize_noise=False)[0]
            else:
                out = net(pixels)[0]
    except (RuntimeError, torch.OutOfMemoryError) as exc:
        raise FaceRestorationError(f"{name} failed on a face ({str(exc).splitlines()[0][:200]})") from exc
    out = (out[0].float().clamp(-1, 1) + 1) / 2
    return (out.permute(1, 2, 0).cpu().numpy() * 255.0).astype(np.uint8)  # truncated, as A1111


def _paste(canvas: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`face` warped back to where it was cut from, blended in under the crop square's mask: shrunk by a twentieth
    of the face's size and feathered over that width, so no seam shows. The windows are odd, so the mask shrinks
    evenly on every side and its feathered edge stays inside the crop: nothing outside it moves."""
    import cv2

    height, width = canvas.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    warped = cv2.warpAffine(face, inverse, (width, height)).astype(np.float32)
    inside = cv2.warpAffine(np.ones((FACE_SIZE, FACE_SIZE), np.float32), inverse, (width, height))
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8))  # the resampled border is part-black: left out
    edge = max(1, int(float(inside.sum()) ** 0.5) // 20)
    window = (2 * edge + 1, 2 * edge + 1)
    soft = cv2.GaussianBlur(cv2.erode(inside, np.ones(window, np.uint8)), window, 0)[..., None]
    return soft * (inside[..., None] * warped) + (1 - soft) * canvas


def blend(before: Image.Image, after: Image.Image, visibility: float) -> Image.Image:
    """The Extras tab's visibility: the restored picture over the one before, as A1111 blends it."""
    if visibility >= 1.0:
        return after
    return Image.blend(as_rgb(before), as_rgb(after), float(visibility))


def restore_batch(pictures: list[Image.Image], restorers: FaceRestorers, name: str, options,
                  control=None) -> list[Image.Image]:
    """A generation's decoded pictures, each with its faces restored (A1111's "Restore faces"), then the networks
    moved off the GPU when the setting `face_restoration_unload` asks."""
    if control is not None:
        control.report(textinfo=f"Restoring faces ({name})")
    weight = float(options.get("code_former_weight"))
    try:
        return [restore_faces(picture, restorers, name, weight)[0] for picture in pictures]
    finally:
        if options.get("face_restoration_unload"):
            restorers.offload()
