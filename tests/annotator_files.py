"""Random-weight annotator files in the layouts the real ones have (lllyasviel/Annotators), for tests.

Each writer builds the controlnet-aux network, seeds torch, keeps the network's own random initialisation and
`torch.save`s its weights under the file name controlnet-aux expects, nested and prefixed as the published file is
(PiDiNet under "state_dict" with "module.", LeReS under "depth_model", Zoe and NormalBAE under "model", OpenPose
body/hand without the block prefix). Nothing here is ever committed.
"""
from __future__ import annotations

import contextlib
import functools
import io
import types
import zlib
from pathlib import Path
from typing import Callable

import torch

from webui.control.annotators import ANNOTATORS, MODULE_ANNOTATORS, import_controlnet_aux


def _plain(network) -> dict:
    return {k: v.clone() for k, v in network.state_dict().items()}


def _prefixed(network, prefix: str = "module.") -> dict:
    return {prefix + k: v.clone() for k, v in network.state_dict().items()}


def _pose(network) -> dict:
    """OpenPose files name layers without the network's block prefix ("conv1_1.weight", not "model0.conv1_1...")."""
    return {k.split(".", 1)[1]: v.clone() for k, v in network.state_dict().items()}


def _hed():
    from controlnet_aux.hed import ControlNetHED_Apache2
    return _plain(ControlNetHED_Apache2())


def _pidinet():
    from controlnet_aux.pidi.model import pidinet
    return {"state_dict": _prefixed(pidinet())}


def _mlsd():
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large
    return _plain(MobileV2_MLSD_Large())


def _lineart():
    from controlnet_aux.lineart import Generator
    return _plain(Generator(3, 1, 3))


def _lineart_anime():
    import torch.nn as nn
    from controlnet_aux.lineart_anime import UnetGenerator
    norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return _plain(UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False))


def _body():
    from controlnet_aux.open_pose.model import bodypose_model
    return _pose(bodypose_model())


def _hand():
    from controlnet_aux.open_pose.model import handpose_model
    return _pose(handpose_model())


def _face():
    from controlnet_aux.open_pose.face import FaceNet
    return _plain(FaceNet())


def _midas():
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel
    return _plain(DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True))


def _zoe():
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    from controlnet_aux.zoe.zoedepth.utils.config import get_config
    return {"model": _plain(ZoeDepth.build_from_config(get_config("zoedepth", "infer")))}


def _normal_bae():
    from controlnet_aux.normalbae.nets.NNET import NNET
    args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4,
                                 importance_ratio=0.7)
    with contextlib.redirect_stdout(io.StringIO()):
        return {"model": _prefixed(NNET(args))}


def _leres():
    from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel
    return {"depth_model": _prefixed(RelDepthModel(backbone="resnext101"))}


def _leres_boost():
    from controlnet_aux.leres.pix2pix.models import networks
    return _plain(networks.define_G(2, 1, 64, "unet_1024", "none", False, "normal", 0.02, []))


WRITERS: dict[str, Callable[[], dict]] = {
    "hed": _hed, "pidinet": _pidinet, "mlsd": _mlsd, "lineart": _lineart, "lineart_coarse": _lineart,
    "lineart_anime": _lineart_anime, "openpose_body": _body, "openpose_hand": _hand, "openpose_face": _face,
    "midas": _midas, "zoe": _zoe, "normal_bae": _normal_bae, "leres": _leres, "leres_boost": _leres_boost,
}


def write_annotator(key: str, folder: Path, seed: int = 0) -> Path:
    """Write annotator `key`'s file (random weights, real shapes) into `folder`; returns its path."""
    import_controlnet_aux()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (name,) = ANNOTATORS[key].files
    path = folder / name
    if not path.exists():
        torch.manual_seed(seed + zlib.crc32(key.encode()))  # two annotators of one class still differ
        torch.save(WRITERS[key](), path)
    return path


def write_module_files(module: str, folder: Path, seed: int = 0) -> list[Path]:
    """Every file preprocessor `module` needs (none for model-free modules)."""
    return [write_annotator(key, folder, seed) for key in MODULE_ANNOTATORS.get(module, ())]


class HubResponse(io.BytesIO):
    """What urllib.request.urlopen returns, enough for the downloader: a body with a Content-Length."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def serve_as_hub(monkeypatch, module: str, folder: Path) -> tuple[bytes, list[str]]:
    """Replace the network: urlopen answers every URL with `module`'s (single, real-layout) annotator file.
    Returns (the file's bytes, the URLs asked for)."""
    import urllib.request

    (source,) = write_module_files(module, folder)
    data = source.read_bytes()
    asked: list[str] = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        return HubResponse(data)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return data, asked
