"""Face restoration models (A1111's GFPGAN and CodeFormer, and RestoreFormer) and the face detector they need,
found in their folders and loaded offline; the restoring itself is webui/engine/face_restoration.py.

Folders, A1111's names: `models/Codeformer` (`codeformer-v0.1.0.pth`), `models/GFPGAN` (`GFPGANv1.4.pth`),
`models/RestoreFormer` (`RestoreFormer.pth`). Any `.pth` / `.safetensors` there is used (the A1111 file name first,
else the first by name), once its weights are the architecture the folder is for. The detector, RetinaFace
(`detection_Resnet50_Final.pth`, else `detection_mobilenet0.25_Final.pth`), is looked for in models/GFPGAN, where
A1111 keeps facexlib's weights, then in the other two folders.

Files are read as data only: `.safetensors`, or `.pth` through torch's weights-only unpickler; spandrel then
builds the network from the weights (CodeFormer from spandrel_extra_arches, registered here only, so the upscalers
never pick up that package's non-commercial architectures). Nothing is downloaded here (see face_download.py).
"""
from __future__ import annotations

import logging
import pickle
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import UserError
from .face_sha256 import FACE_FILES
from .retinaface import DETECTOR_FILES, MOBILENET, RESNET50, RetinaFace, RetinaFaceNet, layout_of

log = logging.getLogger(__name__)

RESTORER_EXTENSIONS = (".pth", ".safetensors")
_HELPER_PREFIXES = ("detection_", "parsing_")  # facexlib's weights, which A1111 keeps beside GFPGAN's
DOWNLOAD_COMMAND = ".venv/bin/python -m webui.models.face_download"


@dataclass(frozen=True)
class RestorerKind:
    name: str  # as A1111 names it (the setting's choice, the infotext's `Face restoration`)
    folder: str  # under models/
    architecture: str  # spandrel's id
    download_name: str  # the file name A1111 saves it under


KINDS = (RestorerKind("CodeFormer", "Codeformer", "CodeFormer", "codeformer-v0.1.0.pth"),
         RestorerKind("GFPGAN", "GFPGAN", "GFPGAN", "GFPGANv1.4.pth"),
         RestorerKind("RestoreFormer", "RestoreFormer", "RestoreFormer", "RestoreFormer.pth"))
KIND_NAMES = tuple(kind.name for kind in KINDS)


class FaceRestorationError(UserError, RuntimeError):
    """A face restorer or the face detector is missing or unusable; the message says which file, where it goes and
    how to get it (HTTP 422)."""

    status = 422
    kind = "FaceRestorationError"


@dataclass(frozen=True)
class RestorerFile:
    kind: RestorerKind
    path: Path

    @property
    def name(self) -> str:
        return self.kind.name


def read_weights(path: Path, what: str) -> dict:
    """The tensors in a `.safetensors` file, or a `.pth` read by torch's weights-only unpickler (a file that
    pickles anything but tensors and plain containers is refused before any of it runs)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise FaceRestorationError(f"{what} {path.name} in {path.parent} was refused: it holds Python objects "
                                   f"beyond weights, whose unpickling could run code ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: its reader says why
        raise FaceRestorationError(f"{what} {path.name} in {path.parent} could not be read ({type(exc).__name__}: "
                                   f"{_first_line(exc)})") from exc
    if not isinstance(state, dict):
        raise FaceRestorationError(f"{what} {path.name} in {path.parent} does not hold network weights")
    return state


def _architecture(arch_id: str):
    if arch_id == "CodeFormer":
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormerArch
        return CodeFormerArch()
    from spandrel import MAIN_REGISTRY
    return MAIN_REGISTRY.get(arch_id).architecture


def _recognised_as(state: dict) -> str:
    from spandrel import MAIN_REGISTRY
    for support in MAIN_REGISTRY:
        try:
            if support.detect(state):
                return f"a {support.architecture.name} model"
        except Exception:  # noqa: BLE001 - a detector tripping over odd keys just does not match
            continue
    return "not a model spandrel knows"


def load_restorer(file: RestorerFile) -> torch.nn.Module:
    """The restorer's network (float32, on the CPU, in eval mode) from its file."""
    from spandrel import canonicalize_state_dict
    state = canonicalize_state_dict(read_weights(file.path, f"{file.name} model"))
    arch = _architecture(file.kind.architecture)
    if not arch.detect(state):
        raise FaceRestorationError(f"{file.path.name} in {file.path.parent} is not a {file.name} model (its weights "
                                   f"are {_recognised_as(state)}); put a {file.name} file there, such as "
                                   f"{file.kind.download_name}")
    try:
        descriptor = arch.load(state)
    except Exception as exc:  # noqa: BLE001 - weights of the right names but wrong shapes
        raise FaceRestorationError(f"{file.path.name} in {file.path.parent} does not fit the {file.name} network "
                                   f"({_first_line(exc)})") from exc
    return descriptor.model.float().eval()


def load_detector(path: Path, device: torch.device) -> RetinaFace:
    """RetinaFace from its file, in whichever of the two published layouts the weights are."""
    state = read_weights(path, "Face detector")
    state = {(key[len("module."):] if key.startswith("module.") else key): value for key, value in state.items()}
    layout = layout_of(state)
    if layout is None:
        raise FaceRestorationError(f"face detector {path.name} in {path.parent} is not RetinaFace weights (expected "
                                   f"{DETECTOR_FILES[RESNET50]} or {DETECTOR_FILES[MOBILENET]} from facexlib)")
    net = RetinaFaceNet(layout)
    own = net.state_dict()
    missing = [key for key in own if key not in state and not key.endswith("num_batches_tracked")]
    wrong = [key for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    if missing or wrong:
        sample = ", ".join((missing or wrong)[:3])
        raise FaceRestorationError(f"face detector {path.name} in {path.parent} does not fit RetinaFace "
                                   f"({len(missing)} weights missing, {len(wrong)} of the wrong shape, e.g. {sample})")
    net.load_state_dict({key: value for key, value in state.items() if key in own}, strict=False)
    return RetinaFace(net.float(), path, device)


class FaceRestorers:
    """The restorers a user can pick and the detector, each loaded once and kept (the last two restorers used)."""

    def __init__(self, models_dir: Path, device: torch.device | str = "cpu", keep: int = 2):
        self.models_dir = Path(models_dir)
        self.device = torch.device(device)
        self.keep = max(1, keep)
        self._lock = threading.RLock()
        self._nets: OrderedDict[tuple[Path, float], torch.nn.Module] = OrderedDict()
        self._detector: tuple[tuple[Path, float], RetinaFace] | None = None

    # ---- finding files ---------------------------------------------------------------------------------------------
    def folder(self, kind: RestorerKind) -> Path:
        return self.models_dir / kind.folder

    def installed(self) -> list[RestorerFile]:
        """One file per restorer whose folder holds one, in A1111's order (CodeFormer, GFPGAN), then RestoreFormer."""
        found = []
        for kind in KINDS:
            path = self._file_in(kind)
            if path is not None:
                found.append(RestorerFile(kind, path))
        return found

    def names(self) -> list[str]:
        return [file.name for file in self.installed()]

    def _file_in(self, kind: RestorerKind) -> Path | None:
        folder = self.folder(kind)
        if not folder.is_dir():
            return None
        files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RESTORER_EXTENSIONS
                        and not p.name.lower().startswith(_HELPER_PREFIXES)), key=lambda p: p.name.lower())
        preferred = [p for p in files if p.name.lower() == kind.download_name.lower()]
        return (preferred or files or [None])[0]

    def file(self, name: str) -> RestorerFile:
        """The installed file of the restorer `name` (case-insensitive); FaceRestorationError saying where to put
        one when there is none."""
        wanted = str(name or "").strip().lower()
        kind = next((k for k in KINDS if k.name.lower() == wanted), None)
        if kind is None:
            raise FaceRestorationError(f"Unknown face restoration model {name!r}; the models are "
                                       f"{', '.join(KIND_NAMES)}")
        path = self._file_in(kind)
        if path is None:
            source = FACE_FILES[kind.name.lower()]
            how = f"or download it: {DOWNLOAD_COMMAND} {kind.name.lower()}" if source.sha256 else \
                f"from {source.url}"
            raise FaceRestorationError(f"No {kind.name} model: put {kind.download_name} in {self.folder(kind)} "
                                       f"({how})")
        return RestorerFile(kind, path)

    def detector_path(self) -> Path | None:
        folders = [self.models_dir / "GFPGAN"] + [self.folder(k) for k in KINDS if k.folder != "GFPGAN"]
        for file_name in (DETECTOR_FILES[RESNET50], DETECTOR_FILES[MOBILENET]):
            for folder in folders:
                if (folder / file_name).is_file():
                    return folder / file_name
        return None

    def check_ready(self, name: str) -> RestorerFile:
        """The restorer's file, when it and the face detector are both there; FaceRestorationError otherwise."""
        file = self.file(name)
        if self.detector_path() is None:
            raise self._no_detector()
        return file

    def _no_detector(self) -> FaceRestorationError:
        return FaceRestorationError(f"Face restoration needs the face detector: put {DETECTOR_FILES[RESNET50]} (or "
                                    f"{DETECTOR_FILES[MOBILENET]}) in {self.models_dir / 'GFPGAN'} (or download it: "
                                    f"{DOWNLOAD_COMMAND} detector)")

    # ---- loading ---------------------------------------------------------------------------------------------------
    def detector(self) -> RetinaFace:
        path = self.detector_path()
        if path is None:
            raise self._no_detector()
        key = (path, path.stat().st_mtime)
        with self._lock:
            if self._detector is None or self._detector[0] != key:
                self._detector = (key, load_detector(path, self.device))
                log.info("loaded face detector %s (%s) on %s", path.name, self._detector[1].layout, self.device)
            return self._detector[1].to(self.device)

    def net(self, name: str) -> torch.nn.Module:
        """The restorer's network on the device (loaded now, or from the cache)."""
        file = self.check_ready(name)
        key = (file.path, file.path.stat().st_mtime)
        with self._lock:
            net = self._nets.get(key)
            if net is None:
                net = load_restorer(file)
                for old in [k for k in self._nets if k[0] == file.path]:
                    del self._nets[old]
                self._nets[key] = net
                log.info("loaded face restorer %s (%s)", file.path.name, file.name)
            self._nets.move_to_end(key)
            while len(self._nets) > self.keep:
                self._nets.popitem(last=False)
            return net.to(self.device)

    def offload(self) -> None:
        """Move the loaded networks to the CPU (A1111's "Move face restoration model from VRAM into RAM after
        processing")."""
        if self.device.type == "cpu":
            return
        with self._lock:
            for net in self._nets.values():
                net.to("cpu")
            if self._detector is not None:
                self._detector[1].to("cpu")
        torch.cuda.empty_cache()

    def unload(self) -> None:
        with self._lock:
            self._nets.clear()
            self._detector = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
