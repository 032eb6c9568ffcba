"""Neural annotators: controlnet-aux 0.0.10 networks loaded offline from `models/annotators`, and the runners that
turn an image into a map with them.

Every network is built from controlnet-aux's own classes and filled from a local file with the name controlnet-aux
(and A1111's extension) expects; nothing reaches for a model hub. The few classes that would (ZoeDepth's MiDaS core,
NormalBAE's EfficientNet, the MiDaS hybrid backbone) are built with `pretrained=False` and their bundled local
source, so construction is offline too. Each network is loaded once into an `AnnotatorCache` and kept.

`download_annotators(module, folder)` fetches a module's files from lllyasviel/Annotators, each checked against the
sha256 pinned in `annotator_sha256.py`; only an explicit user action calls it.
"""
from __future__ import annotations

import argparse
import functools
import logging
import pickle
import re
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import UserError
from .annotator_sha256 import PINNED_SHA256

log = logging.getLogger(__name__)

ANNOTATOR_REPO = "lllyasviel/Annotators"
ANNOTATOR_SOURCE = f"https://huggingface.co/{ANNOTATOR_REPO}"


class AnnotatorError(UserError, RuntimeError):
    """An annotator's weight file is missing, unreadable or does not fit its network; the message says which file,
    where it belongs and where to get it (HTTP 422, as the preprocessor that needs it)."""

    status = 422
    kind = "AnnotatorError"


class AnnotatorCache:
    """Loaded neural annotators, by key, each loaded once (under a lock) from `folder` and kept."""

    def __init__(self, folder: Path, device: str = "cpu"):
        self.folder = Path(folder)
        self.device = device
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[Path], Any]) -> Any:
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = load(self.folder)
            return self._loaded[key]

    def is_loaded(self, key: str) -> bool:
        with self._lock:
            return key in self._loaded

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


# --- reading weight files ---------------------------------------------------------------------------------------

def _allowed_globals() -> list:
    """What torch's weights-only unpickler may build beyond tensors when it reads an annotator file: the plain data
    some published checkpoints keep beside their weights (a step or a loss as a numpy scalar, a numpy array, the
    training options as an argparse.Namespace). Each is data that calls nothing from the file; any other global
    (a function, a class with behaviour) is refused. Names are given both as numpy 1 and numpy 2 pickle them."""
    core = getattr(np, "_core", None) or np.core
    allowed: list = [argparse.Namespace, np.dtype, np.ndarray]
    allowed += [cls for cls in vars(np.dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(core.multiarray.scalar, f"{module}.scalar"), (core.multiarray._reconstruct,
                                                                   f"{module}._reconstruct")]
    return allowed


def read_weights(path: Path) -> Any:
    """A checkpoint's contents on the CPU, read only through torch's weights-only unpickler (with the small
    allow-list above). A file that pickles anything else is refused before any of it runs: unpickling it fully
    could run code, and files in models/annotators may come from anywhere."""
    import torch

    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _refused(path, error) from None
    except Exception as error:  # noqa: BLE001 - any read failure is the file's fault
        raise _broken(path, error) from error


def _refused(path: Path, error: Exception) -> AnnotatorError:
    """The refusal of a file the weights-only unpickler stopped: the Python object it asked for, or, for a file
    that is not a pickle of weights at all, the unpickler's reason."""
    text = str(error)
    needs = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"unrecognized function (\S+)", text) \
        or re.search(r"(?:new object for|but got) .*?(<class '[\w.]+'>)", text)
    if needs is None:
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        detail = reason.group(1).strip() if reason else (text.splitlines() or [type(error).__name__])[0]
        return AnnotatorError(f"annotator file {path.name} in {path.parent} could not be read (not a PyTorch "
                              f"weights file: {detail[:200]}); replace it with a fresh copy from {ANNOTATOR_SOURCE}")
    return AnnotatorError(f"annotator file {path.name} in {path.parent} was refused: besides weights it holds a "
                          f"Python object ({needs.group(1)}) whose unpickling could run code, so it was not loaded; "
                          f"replace it with the file from {ANNOTATOR_SOURCE}")


def _broken(path: Path, error: Exception) -> AnnotatorError:
    return AnnotatorError(f"annotator file {path.name} in {path.parent} could not be read ({type(error).__name__}: "
                          f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'}); replace it with a "
                          f"fresh copy from {ANNOTATOR_SOURCE}")


def _unwrap(state: Any, path: Path, key: str | None = None, prefix: str = "module.") -> dict:
    """The state dict inside a checkpoint (under `key` when the file nests it), with a training `prefix` removed."""
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            raise AnnotatorError(f"annotator file {path.name} in {path.parent} has no {key!r} entry: it is not the "
                                 f"file this preprocessor expects; get it from {ANNOTATOR_SOURCE}")
        state = state[key]
    if not isinstance(state, dict):
        raise AnnotatorError(f"annotator file {path.name} in {path.parent} does not hold network weights; get it "
                             f"from {ANNOTATOR_SOURCE}")
    return {(k[len(prefix):] if prefix and k.startswith(prefix) else k): v for k, v in state.items()}


def _fill(network, state: dict, path: Path, ignore: Callable[[str], bool] = lambda name: False):
    """Load `state` into `network`, requiring every weight (but those `ignore` names) to be present and fit."""
    own = network.state_dict()
    # files saved before PyTorch 0.4.1 lack BatchNorm's step counter; load_state_dict fills it in
    missing = [k for k in own if k not in state and not ignore(k) and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and not ignore(k)]
    wrong = [k for k in own
             if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        details = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if names:
                details.append(f"{len(names)} {label} (e.g. {', '.join(names[:3])})")
        raise AnnotatorError(f"annotator file {path.name} in {path.parent} does not fit its network: "
                             f"{'; '.join(details)}; replace it with the file from {ANNOTATOR_SOURCE}")
    network.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return network.float().eval()


# --- building each network --------------------------------------------------------------------------------------

def import_controlnet_aux():
    """Import controlnet-aux once, without the deprecation and "mediapipe not installed" warnings its package
    import prints (the first import takes a few seconds: it imports every detector)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import controlnet_aux
    return controlnet_aux


def _hed(paths, device):
    from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

    path = paths["ControlNetHED.pth"]
    return HEDdetector(_fill(ControlNetHED_Apache2(), _unwrap(read_weights(path), path), path)).to(device)


def _pidinet(paths, device):
    from controlnet_aux.pidi import PidiNetDetector
    from controlnet_aux.pidi.model import pidinet

    path = paths["table5_pidinet.pth"]
    return PidiNetDetector(_fill(pidinet(), _unwrap(read_weights(path), path, "state_dict"), path)).to(device)


def _mlsd(paths, device):
    from controlnet_aux.mlsd import MLSDdetector
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

    path = paths["mlsd_large_512_fp32.pth"]
    return MLSDdetector(_fill(MobileV2_MLSD_Large(), _unwrap(read_weights(path), path), path)).to(device)


def _lineart_generator(path: Path):
    from controlnet_aux.lineart import Generator

    return _fill(Generator(3, 1, 3), _unwrap(read_weights(path), path), path)


def _lineart(paths, device):
    from controlnet_aux.lineart import LineartDetector

    net = _lineart_generator(paths["sk_model.pth"])
    return LineartDetector(net, net).to(device)


def _lineart_coarse(paths, device):
    from controlnet_aux.lineart import LineartDetector

    net = _lineart_generator(paths["sk_model2.pth"])
    return LineartDetector(net, net).to(device)  # the detector reads the device from its first slot


def _lineart_anime(paths, device):
    import torch.nn as nn
    from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator

    path = paths["netG.pth"]
    norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    net = UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)
    return LineartAnimeDetector(_fill(net, _unwrap(read_weights(path), path), path)).to(device)


def _pose_net(network, path: Path):
    """OpenPose body/hand files name their layers without the block prefix ("conv1_1.weight" for the network's
    "model0.conv1_1.weight"), as controlnet-aux's `util.transfer` maps them."""
    state = _unwrap(read_weights(path), path)
    renamed = {}
    for name in network.state_dict():
        short = name.split(".", 1)[1]
        if short in state:
            renamed[name] = state[short]
    return _fill(network, renamed, path)


def _openpose_body(paths, device):
    from controlnet_aux.open_pose.body import Body
    from controlnet_aux.open_pose.model import bodypose_model

    body = Body.__new__(Body)  # Body() would torch.load without map_location; the network is filled here instead
    body.model = _pose_net(bodypose_model(), paths["body_pose_model.pth"])
    return body.to(device)


def _openpose_hand(paths, device):
    from controlnet_aux.open_pose.hand import Hand
    from controlnet_aux.open_pose.model import handpose_model

    hand = Hand.__new__(Hand)
    hand.model = _pose_net(handpose_model(), paths["hand_pose_model.pth"])
    return hand.to(device)


def _openpose_face(paths, device):
    from controlnet_aux.open_pose.face import Face, FaceNet, params

    path = paths["facenet.pth"]
    face = Face.__new__(Face)
    face.inference_size = params["inference_img_size"]
    face.sigma = params["gaussian_sigma"]
    face.threshold = params["heatmap_peak_thresh"]
    face.model = _fill(FaceNet(), _unwrap(read_weights(path), path), path)
    return face.to(device)


def _midas(paths, device):
    from controlnet_aux.midas import MidasDetector
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    path = paths["dpt_hybrid-midas-501f0c75.pt"]
    state = read_weights(path)
    if isinstance(state, dict) and "optimizer" in state and "model" in state:
        state = state["model"]
    # the hybrid ViT backbone is built by timm with pretrained=False (DPT's default): no download
    net = DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    return MidasDetector(_fill(net, _unwrap(state, path), path)).to(device)


def _zoe(paths, device):
    from controlnet_aux.zoe import ZoeDetector
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    from controlnet_aux.zoe.zoedepth.utils.config import get_config

    path = paths["ZoeD_M12_N.pt"]
    state = read_weights(path)
    # the "infer" config builds the BEiT MiDaS core from controlnet-aux's bundled midas_repo (torch.hub source=
    # "local") with use_pretrained_midas=False and no pretrained_resource: nothing is fetched
    net = ZoeDepth.build_from_config(get_config("zoedepth", "infer"))
    # relative_position_index buffers are rebuilt by timm and differ between timm versions; they carry no weights
    net = _fill(net, _unwrap(state, path, "model" if isinstance(state, dict) and "model" in state else None), path,
                ignore=lambda name: "relative_position_index" in name)
    return ZoeDetector(net).to(device)


def _normal_bae(paths, device):
    import types

    from controlnet_aux.normalbae import NormalBaeDetector
    from controlnet_aux.normalbae.nets.NNET import NNET

    path = paths["scannet.pt"]
    args = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4,
                                 importance_ratio=0.7)
    # NNET's encoder builds tf_efficientnet_b5_ap from the bundled efficientnet_repo (torch.hub source="local",
    # pretrained=False): nothing is fetched
    net = _quiet(lambda: NNET(args))
    return NormalBaeDetector(_fill(net, _unwrap(read_weights(path), path, "model"), path)).to(device)


def _leres(paths, device):
    from controlnet_aux.leres import LeresDetector
    from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel

    path = paths["res101.pth"]
    net = _fill(RelDepthModel(backbone="resnext101"), _unwrap(read_weights(path), path, "depth_model"), path)
    return LeresDetector(net, None).to(device)


def _leres_boost(paths, device):
    """The pix2pix merging network of LeReS++ (boost), built from parsed defaults rather than sys.argv."""
    import torch
    from controlnet_aux.leres.pix2pix.models import get_option_setter
    from controlnet_aux.leres.pix2pix.models.pix2pix4depth_model import Pix2Pix4DepthModel
    from controlnet_aux.leres.pix2pix.options.test_options import TestOptions

    path = paths["latest_net_G.pth"]
    options = TestOptions()
    parser = options.initialize(argparse.ArgumentParser())
    parser = get_option_setter("pix2pix4depth")(parser, False)
    opt = parser.parse_args([])
    opt.isTrain, opt.gpu_ids = False, []
    model = _quiet(lambda: Pix2Pix4DepthModel(opt))
    _fill(model.netG, _unwrap(read_weights(path), path), path)
    model.netG.to(device)
    model.device = torch.device(device)
    return model


def _quiet(build: Callable[[], Any]) -> Any:
    """Run a constructor that prints progress lines (NormalBAE, pix2pix) without them reaching the console."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return build()


@dataclass(frozen=True)
class Annotator:
    key: str
    files: tuple[str, ...]
    build: Callable[[dict[str, Path], str], Any]  # (file name -> path, device) -> the loaded network or detector


ANNOTATORS: dict[str, Annotator] = {a.key: a for a in (
    Annotator("hed", ("ControlNetHED.pth",), _hed),
    Annotator("pidinet", ("table5_pidinet.pth",), _pidinet),
    Annotator("mlsd", ("mlsd_large_512_fp32.pth",), _mlsd),
    Annotator("lineart", ("sk_model.pth",), _lineart),
    Annotator("lineart_coarse", ("sk_model2.pth",), _lineart_coarse),
    Annotator("lineart_anime", ("netG.pth",), _lineart_anime),
    Annotator("openpose_body", ("body_pose_model.pth",), _openpose_body),
    Annotator("openpose_hand", ("hand_pose_model.pth",), _openpose_hand),
    Annotator("openpose_face", ("facenet.pth",), _openpose_face),
    Annotator("midas", ("dpt_hybrid-midas-501f0c75.pt",), _midas),
    Annotator("zoe", ("ZoeD_M12_N.pt",), _zoe),
    Annotator("normal_bae", ("scannet.pt",), _normal_bae),
    Annotator("leres", ("res101.pth",), _leres),
    Annotator("leres_boost", ("latest_net_G.pth",), _leres_boost),
)}

# preprocessor module -> the annotators it runs
MODULE_ANNOTATORS: dict[str, tuple[str, ...]] = {
    "depth_midas": ("midas",),
    "depth_leres": ("leres",),
    "depth_leres++": ("leres", "leres_boost"),
    "depth_zoe": ("zoe",),
    "openpose": ("openpose_body",),
    "openpose_hand": ("openpose_body", "openpose_hand"),
    "openpose_face": ("openpose_body", "openpose_face"),
    "openpose_faceonly": ("openpose_body", "openpose_face"),
    "openpose_full": ("openpose_body", "openpose_hand", "openpose_face"),
    "softedge_hed": ("hed",),
    "softedge_hedsafe": ("hed",),
    "scribble_hed": ("hed",),
    "softedge_pidinet": ("pidinet",),
    "softedge_pidisafe": ("pidinet",),
    "scribble_pidinet": ("pidinet",),
    "lineart_realistic": ("lineart",),
    "lineart_coarse": ("lineart_coarse",),
    "lineart_anime": ("lineart_anime",),
    "mlsd": ("mlsd",),
    "normal_bae": ("normal_bae",),
}


def module_files(module: str) -> tuple[str, ...]:
    """The weight files a preprocessor module needs in models/annotators (none for model-free ones)."""
    return tuple(f for key in MODULE_ANNOTATORS.get(module, ()) for f in ANNOTATORS[key].files)


def missing_files(module: str, folder: Path) -> list[str]:
    return [name for name in module_files(module) if not (Path(folder) / name).is_file()]


def missing_message(module: str, folder: Path, missing: list[str]) -> str:
    files = ", ".join(missing)
    return (f"ControlNet preprocessor {module!r} needs {files} in {Path(folder)}: put the file"
            f"{'s' if len(missing) > 1 else ''} there (download from {ANNOTATOR_SOURCE}, or run "
            f"`.venv/bin/python -m webui.control.download {module}`) and run it again")


def load_annotator(key: str, folder: Path, device: str = "cpu") -> Any:
    """Build annotator `key` from its files in `folder` (AnnotatorError when one is missing or broken)."""
    spec = ANNOTATORS[key]
    import_controlnet_aux()
    paths = {name: Path(folder) / name for name in spec.files}
    absent = [name for name, path in paths.items() if not path.is_file()]
    if absent:
        raise AnnotatorError(f"annotator {key!r} needs {', '.join(absent)} in {Path(folder)}; download from "
                             f"{ANNOTATOR_SOURCE}")
    try:
        return spec.build(paths, device)
    except AnnotatorError:
        raise
    except Exception as error:  # noqa: BLE001 - a file that builds a broken network is the file's fault
        names = ", ".join(spec.files)
        raise AnnotatorError(f"annotator {key!r} could not be loaded from {names} in {Path(folder)} "
                             f"({type(error).__name__}: {str(error)[:200]}); replace the file"
                             f"{'s' if len(spec.files) > 1 else ''} with fresh copies from {ANNOTATOR_SOURCE}") \
            from error


def detectors(module: str, cache: AnnotatorCache) -> list[Any]:
    """The loaded annotators of `module`, loading those not yet in `cache` (missing files reported together)."""
    keys = MODULE_ANNOTATORS[module]
    pending = [key for key in keys if not cache.is_loaded(key)]
    absent = [name for key in pending for name in ANNOTATORS[key].files if not (cache.folder / name).is_file()]
    if absent:
        raise AnnotatorError(missing_message(module, cache.folder, absent))
    return [cache.get(key, lambda folder, key=key: load_annotator(key, folder, cache.device)) for key in keys]


# --- runners: (image HWC uint8 RGB, resolution, threshold a, threshold b, mask, cache) -> map HWC uint8 -----------

def _depth_midas(image, res, a, b, mask, cache):
    (midas,) = detectors("depth_midas", cache)
    return midas(image, detect_resolution=res, image_resolution=res, output_type="np")


# controlnet-aux's boost resolution search needs a picture over 448 / 3 px on its longer side (smaller ones hit an
# unbound variable in `calculateprocessingres`), so LeReS++ estimates at least at this size and scales the map down
BOOST_MIN_RESOLUTION = 256


def _leres_runner(module: str, boost: bool):
    def run(image, res, remove_near, remove_background, mask, cache):
        loaded = detectors(module, cache)
        from controlnet_aux.leres import LeresDetector

        detector = LeresDetector(loaded[0].model, loaded[1] if boost else None)
        detect = max(res, BOOST_MIN_RESOLUTION) if boost else res
        return detector(image, thr_a=remove_near, thr_b=remove_background, boost=boost, detect_resolution=detect,
                        image_resolution=res, output_type="np")
    return run


def _depth_zoe(image, res, a, b, mask, cache):
    (zoe,) = detectors("depth_zoe", cache)
    return zoe(image, detect_resolution=res, image_resolution=res, output_type="np")


def _openpose_runner(module: str, body: bool, hand: bool, face: bool):
    def run(image, res, a, b, mask, cache):
        loaded = dict(zip(MODULE_ANNOTATORS[module], detectors(module, cache)))
        from controlnet_aux.open_pose import OpenposeDetector

        detector = OpenposeDetector(loaded["openpose_body"], loaded.get("openpose_hand"), loaded.get("openpose_face"))
        return detector(image, detect_resolution=res, image_resolution=res, include_body=body, include_hand=hand,
                        include_face=face, output_type="np")
    return run


def _edge_runner(module: str, **options):
    def run(image, res, a, b, mask, cache):
        (detector,) = detectors(module, cache)
        return detector(image, detect_resolution=res, image_resolution=res, output_type="np", **options)
    return run


def _lineart_runner(module: str, coarse: bool = False):
    def run(image, res, a, b, mask, cache):
        (detector,) = detectors(module, cache)
        options = {"coarse": coarse} if module != "lineart_anime" else {}
        return detector(image, detect_resolution=res, image_resolution=res, output_type="np", **options)
    return run


def _mlsd_runner(image, res, value_threshold, distance_threshold, mask, cache):
    (detector,) = detectors("mlsd", cache)
    return detector(image, thr_v=value_threshold, thr_d=distance_threshold, detect_resolution=res,
                    image_resolution=res, output_type="np")


def _normal_bae(image, res, a, b, mask, cache):
    (detector,) = detectors("normal_bae", cache)
    return detector(image, detect_resolution=res, image_resolution=res, output_type="np")


NEURAL_RUNNERS: dict[str, Callable] = {
    "depth_midas": _depth_midas,
    "depth_leres": _leres_runner("depth_leres", boost=False),
    "depth_leres++": _leres_runner("depth_leres++", boost=True),
    "depth_zoe": _depth_zoe,
    "openpose": _openpose_runner("openpose", body=True, hand=False, face=False),
    "openpose_hand": _openpose_runner("openpose_hand", body=True, hand=True, face=False),
    "openpose_face": _openpose_runner("openpose_face", body=True, hand=False, face=True),
    "openpose_faceonly": _openpose_runner("openpose_faceonly", body=False, hand=False, face=True),
    "openpose_full": _openpose_runner("openpose_full", body=True, hand=True, face=True),
    "softedge_hed": _edge_runner("softedge_hed"),
    "softedge_hedsafe": _edge_runner("softedge_hedsafe", safe=True),
    "scribble_hed": _edge_runner("scribble_hed", scribble=True),
    "softedge_pidinet": _edge_runner("softedge_pidinet"),
    "softedge_pidisafe": _edge_runner("softedge_pidisafe", safe=True),
    "scribble_pidinet": _edge_runner("scribble_pidinet", scribble=True),
    "lineart_realistic": _lineart_runner("lineart_realistic"),
    "lineart_coarse": _lineart_runner("lineart_coarse", coarse=True),
    "lineart_anime": _lineart_runner("lineart_anime"),
    "mlsd": _mlsd_runner,
    "normal_bae": _normal_bae,
}


# --- model-free maps from controlnet-aux ------------------------------------------------------------------------

_GLOBAL_RANDOM = threading.Lock()  # ContentShuffleDetector draws from numpy's global generator


def content_shuffle(image: np.ndarray, res: int) -> np.ndarray:
    """controlnet-aux's content shuffle, seeded from the image's pixels so a given image gives the same map."""
    import_controlnet_aux()
    from controlnet_aux.shuffle import ContentShuffleDetector

    seed = zlib.crc32(np.ascontiguousarray(image).tobytes()) ^ (image.shape[0] << 16) ^ image.shape[1]
    with _GLOBAL_RANDOM:
        saved = np.random.get_state()
        np.random.seed(seed & 0xFFFFFFFF)
        try:
            return ContentShuffleDetector()(image, detect_resolution=res, image_resolution=res, output_type="np")
        finally:
            np.random.set_state(saved)


def lineart_standard(image: np.ndarray) -> np.ndarray:
    """controlnet-aux's lineart_standard (Gaussian difference, no network) at the image's own size."""
    import_controlnet_aux()
    from controlnet_aux.lineart_standard import LineartStandardDetector

    height, width = image.shape[:2]
    return LineartStandardDetector()(image, detect_resolution=min(height, width), output_type="np")


# --- download ---------------------------------------------------------------------------------------------------

Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes total or 0 when unknown)


def download_annotators(module_name: str, folder: Path, progress: Progress | None = None,
                        timeout: float = 60.0) -> list[Path]:
    """Fetch the weight files of `module_name` missing from `folder` from lllyasviel/Annotators.

    Each file streams to a temporary name beside its target, must match the sha256 pinned for it in this
    repository (`annotator_sha256.PINNED_SHA256`) and load as its network, and only then takes its real name. A file
    with no pinned sha256 is not downloaded at all. Returns the paths of the module's files. Raises AnnotatorError
    (with the file and the reason) when a download fails, is refused or does not verify. Only an explicit user
    action calls this; tests and start-up never do.
    """
    folder = Path(folder)
    wanted = module_files(module_name)
    if not wanted:
        return []
    missing = [name for name in wanted if not (folder / name).is_file()]
    unpinned = [name for name in missing if not PINNED_SHA256.get(name)]
    if unpinned:  # refused before anything is fetched: an unchecked file could be anything
        raise AnnotatorError(f"{', '.join(unpinned)} cannot be downloaded: this version has no sha256 pinned for "
                             f"{'them' if len(unpinned) > 1 else 'it'} to check the download against. Get the "
                             f"file{'s' if len(unpinned) > 1 else ''} from {ANNOTATOR_SOURCE} yourself and put "
                             f"{'them' if len(unpinned) > 1 else 'it'} in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    for name in missing:
        expected = str(PINNED_SHA256[name]).lower()
        partial = folder / f".{name}.partial"
        try:
            digest = _fetch(name, partial, progress, timeout)
            if digest != expected:
                raise AnnotatorError(f"downloaded {name} does not match its checksum (sha256 {digest}, expected "
                                     f"{expected}); nothing was saved. Try again; if it keeps differing, the file was changed where it "
                                     f"is published (or our pinned sum is wrong): put a file you trust in {folder} "
                                     "yourself")
            _check_loadable(name, partial)
            partial.replace(folder / name)
            log.info("downloaded %s into %s (sha256 %s)", name, folder, digest)
        finally:
            partial.unlink(missing_ok=True)
    return [folder / name for name in wanted]


def _fetch(name: str, partial: Path, progress: Progress | None, timeout: float) -> str:
    import hashlib
    import urllib.error
    import urllib.request

    url = f"{ANNOTATOR_SOURCE}/resolve/main/{name}"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            if progress:
                progress(name, 0, total)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(name, done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise AnnotatorError(f"could not download {name} from {url} ({error}); check the connection, or put the "
                             f"file in {partial.parent} yourself") from error
    return digest.hexdigest()


def _check_loadable(name: str, path: Path) -> None:
    """Build the annotator that owns `name` from the downloaded file, so a truncated or wrong file is refused."""
    import shutil
    import tempfile

    key = next(k for k, spec in ANNOTATORS.items() if name in spec.files)  # every annotator has one file
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        trial = Path(scratch) / name
        try:
            trial.hardlink_to(path)
        except OSError:
            shutil.copy2(path, trial)
        try:
            load_annotator(key, Path(scratch), "cpu")
        except AnnotatorError as error:
            raise AnnotatorError(f"downloaded {name} is not a usable annotator file ({error}); nothing was saved") \
                from error
