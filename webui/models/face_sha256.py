"""The face restoration files `face_download` can fetch: each one's official release address, the folder it goes to
(A1111's), and the sha256 the download must match, pinned here so it is checked against what this repository
expects, never against what the server it came from says.

A file whose sha256 is None has no hash we could confirm: its download is refused with a message saying so, and
the user puts the file in its folder by hand. To pin one, take `sha256sum` of a copy you trust (or the release
page's digest) and write where it came from beside it.

Where each hash was found (public data that checks these exact files; none was computed here, this project has no
copy of them):
- H: Haidra-Org/AI-Horde-image-model-reference, gfpgan.json (the AI Horde's GFPGAN download list: each file with its
  `sha256sum`, from the same release addresses)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaceFile:
    file_name: str  # the name it is saved under (A1111's)
    folder: str  # under models/
    url: str
    sha256: str | None
    role: str  # "detector", or the restorer's name
    licence: str  # of the project that publishes it


FACE_FILES: dict[str, FaceFile] = {
    "detector": FaceFile(
        "detection_Resnet50_Final.pth", "GFPGAN",
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",  # H
        "detector", "MIT (facexlib; RetinaFace weights of biubug6/Pytorch_Retinaface, MIT)"),
    "detector-mobilenet": FaceFile(
        "detection_mobilenet0.25_Final.pth", "GFPGAN",
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
        "2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",  # H
        "detector", "MIT (facexlib; RetinaFace weights of biubug6/Pytorch_Retinaface, MIT)"),
    "gfpgan": FaceFile(
        "GFPGANv1.4.pth", "GFPGAN",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
        "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",  # H
        "GFPGAN", "Apache-2.0 (TencentARC/GFPGAN)"),
    "codeformer": FaceFile(
        "codeformer-v0.1.0.pth", "Codeformer",
        "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        None,  # no recorded hash found: its download is refused (put the file in by hand)
        "CodeFormer", "NTU S-Lab License 1.0 (sczhou/CodeFormer): non-commercial use only"),
    "restoreformer": FaceFile(
        "RestoreFormer.pth", "RestoreFormer",
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",
        None,  # no recorded hash found: its download is refused (put the file in by hand)
        "RestoreFormer", "Apache-2.0 (wzhouxiff/RestoreFormer)"),
}
