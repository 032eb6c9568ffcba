"""A FLUX.1 checkpoint made whole: its transformer, and the AE, CLIP-L and T5-XXL from the file itself or from the
separate files people keep beside it (Forge's "VAE / Text Encoder" choice: `ae.safetensors` in models/VAE,
`clip_l.safetensors` and `t5xxl_fp16.safetensors` / `t5xxl_fp8_e4m3fn.safetensors` in models/text_encoder).

Where a part comes from, in order: the checkpoint file; the files chosen in "VAE / Text Encoder"
(`forge_additional_modules`), sorted by their tensors; else, when the folders hold exactly one file of that kind,
that one (said in the model's notes). Anything still missing is a CheckpointFormatError naming the part, the folder
and the setting. The separate files used are the model's `part_names`, written to the infotext as Forge does
("Module 1: ae, Module 2: clip_l, ...").
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from .architecture import CheckpointFormatError
from .families import FAMILIES
from .folders import walk_folder
from .load_progress import LoadProgress
from .t5_tokenizer import default_folder, t5_tokenizer
from .tokenizer import clip_tokenizer

log = logging.getLogger(__name__)

PART_LABELS = {"vae": "VAE (ae.safetensors)", "clip_l": "CLIP-L text encoder (clip_l.safetensors)",
               "qwen3": "Qwen3-4B text encoder (qwen_3_4b.safetensors)",
               "clip_g": "CLIP-G text encoder (clip_g.safetensors)",
               "t5": "T5-XXL text encoder (t5xxl_fp16.safetensors)"}
PART_FOLDERS = {"vae": "models/VAE", "clip_l": "models/text_encoder", "clip_g": "models/text_encoder",
                "qwen3": "models/text_encoder",
                "t5": "models/text_encoder"}
# BFL: dev and Fill 512, schnell 256; SD3: diffusers' 256
T5_MAX_LENGTH = {"flux": 512, "flux-schnell": 256, "flux-fill": 512, "sd3": 256}
TEXT_MAX_LENGTH = {"zimage": 512}  # Z-Image: ZImagePipeline's max_sequence_length
VARIANT_FAMILIES = {"dev": "flux", "schnell": "flux-schnell", "fill": "flux-fill"}  # FLUX.1 variant -> family


@dataclass(frozen=True)
class Assembly:
    """How a transformer family's checkpoint is made whole: its parts (in the infotext's "Module N" order), which
    of them it cannot run without, how a separate file is sorted, how each part is read, and the attribute of the
    family's parts object holding each."""

    label: str
    kinds: tuple[str, ...]
    required: frozenset
    part_kind: Callable
    readers: dict  # kind -> (state, name, dtype) -> module
    attributes: dict  # kind -> attribute of the parts object (flux.FluxParts, sd3.SD3Parts)
    text_side: Callable  # (parts, dtype, cache_dir, tokenizer folders, data dir, notes) -> (encoders, tokenizers)
    check: Callable | None = None  # (transformer, parts, name): a separate part that cannot serve -> error


def _flux_assembly() -> Assembly:
    from . import flux
    return Assembly("FLUX.1", ("vae", "clip_l", "t5"), frozenset({"vae", "clip_l", "t5"}), flux.part_kind,
                    {"vae": lambda st, n, d: flux.read_vae_file(st, n), "clip_l": lambda st, n, d:
                     flux.read_clip_l_file(st, n), "t5": flux.read_t5_file},
                    {"vae": "vae", "clip_l": "clip", "t5": "t5"}, _clip_t5_side)


def _sd3_assembly() -> Assembly:
    from . import sd3
    return Assembly("SD3", ("vae", "clip_l", "clip_g", "t5"), frozenset({"vae", "clip_l", "clip_g"}),
                    sd3.sd3_part_kind, {"vae": lambda st, n, d: sd3.read_sd3_vae_file(st, n),
                                        "clip_l": lambda st, n, d: sd3.read_clip_l_file(st, n),
                                        "clip_g": lambda st, n, d: sd3.read_clip_g_file(st, n),
                                        "t5": sd3.read_t5_file},
                    {"vae": "vae", "clip_l": "clip_l", "clip_g": "clip_g", "t5": "t5"}, _clip_t5_side)


def _zimage_assembly() -> Assembly:
    from . import zimage
    return Assembly("Z-Image", ("vae", "qwen3"), frozenset({"vae", "qwen3"}), zimage.zimage_part_kind,
                    {"vae": lambda st, n, d: zimage.read_zimage_vae_file(st, n), "qwen3": zimage.read_qwen3_file},
                    {"vae": "vae", "qwen3": "text_encoder"}, _qwen_side,
                    lambda transformer, have, name: zimage.check_text_encoder(transformer, have["qwen3"], name))


def _tokenizer_folders(tokenizer_folders, data_dir: Path | None, default_folder_of) -> list[Path]:
    folders = [*tokenizer_folders]
    if data_dir is not None:
        folders.append(default_folder_of(data_dir))
    return folders


def _clip_t5_side(have: dict, dtype, cache_dir: Path, tokenizer_folders, data_dir, notes: list[str]):
    """FLUX.1's and SD3's: the CLIP encoders (CLIP-L, and SD3's CLIP-G padding with "!"), then T5 (SD3 may lack
    it: None, and the prompt encoder fills its part with zeros)."""
    clips = [have[kind].to(dtype) for kind in ("clip_l", "clip_g") if have.get(kind) is not None]
    tokenizers = [clip_tokenizer(cache_dir, "<|endoftext|>")]
    if have.get("clip_g") is not None:
        tokenizers.append(clip_tokenizer(cache_dir, "!"))  # OpenCLIP G pads with "!" (SDXL's and SD3's)
    if have.get("t5") is None:
        notes.append("no T5-XXL text encoder: prompts are encoded by the CLIP encoders alone")
        return [*clips, None], [*tokenizers, None]
    folders = _tokenizer_folders(tokenizer_folders, data_dir, default_folder)
    return [*clips, have["t5"]], [*tokenizers, t5_tokenizer(folders)]


def _qwen_side(have: dict, dtype, cache_dir: Path, tokenizer_folders, data_dir, notes: list[str]):
    """Z-Image's: Qwen3 and its tokenizer (with the chat template)."""
    from .qwen_tokenizer import default_folder as qwen_default_folder, qwen_tokenizer
    folders = _tokenizer_folders(tokenizer_folders, data_dir, qwen_default_folder)
    return [have["qwen3"]], [qwen_tokenizer(folders)]


@dataclass(frozen=True)
class SeparateParts:
    """Where a checkpoint's missing parts may come from."""

    chosen: tuple[Path, ...] = ()  # the "VAE / Text Encoder" files, resolved inside their folders
    folders: tuple[Path, ...] = ()  # models/VAE and models/text_encoder: a single file of a kind is taken
    data_dir: Path | None = None  # for the T5 tokenizer's default folder
    unknown: tuple[str, ...] = ()  # chosen names that are no file in the folders (said in the model's warnings)
    gpu_weights_mb: int = 0  # "GPU Weights (MB)": the VRAM budget for weights (0: free memory less a reserve)
    # ({kind: file} found, {required kinds not found}) -> None, called before the files are read when the checkpoint
    # lacks parts; raises to refuse them (a pool worker checks that the head has the very same files:
    # webui/worker_host.py)
    check: Callable | None = None

    @property
    def key(self) -> tuple[str, ...]:
        """What a loaded model depends on: changing the choice reloads it."""
        return (*(str(path) for path in self.chosen), f"gpu weights {self.gpu_weights_mb}")


def header_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors' names, shapes and dtypes of a .safetensors file (as meta tensors: nothing is read)."""
    state = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            piece = handle.get_slice(key)
            dtype = _DTYPES.get(piece.get_dtype(), torch.float32)
            state[key] = torch.empty(piece.get_shape(), dtype=dtype, device="meta")
    return state


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32}


def candidate_files(folders) -> list[Path]:
    found = []
    for folder in folders:
        for dirpath, _, files in walk_folder(Path(folder)):
            found.extend(dirpath / name for name in files if name.endswith(".safetensors"))
    return found


def _kind_of(path: Path, part_kind: Callable) -> str | None:
    try:
        return part_kind(header_state(path))
    except Exception:  # noqa: BLE001 - an unreadable file in the folder is not a part
        return None


def find_parts(missing: set[str], separate: SeparateParts, notes: list[str], assembly: Assembly) -> dict[str, Path]:
    """{kind: file} for the missing kinds: the chosen files first, then a folder's only file of that kind."""
    found: dict[str, Path] = {}
    for path in separate.chosen:
        kind = _kind_of(path, assembly.part_kind)
        if kind is None:
            notes.append(f"{path.name} (chosen in VAE / Text Encoder) is not a {assembly.label} VAE or text "
                         "encoder: ignored")
        elif kind in missing and kind not in found:
            found[kind] = path
    still = missing - set(found)
    if still:
        by_kind: dict[str, list[Path]] = {}
        for path in candidate_files(separate.folders):
            kind = _kind_of(path, assembly.part_kind)
            if kind in still:
                by_kind.setdefault(kind, []).append(path)
        for kind in sorted(still):
            if len(by_kind.get(kind, ())) == 1:
                found[kind] = by_kind[kind][0]
                notes.append(f"{PART_LABELS[kind].split(' (')[0]}: {found[kind].name} (the only one in "
                             f"{PART_FOLDERS[kind]})")
    return found


def assemble_flux(parts, name: str, policy, cache_dir: Path, separate: SeparateParts, progress: LoadProgress,
                  tokenizer_folders: tuple[Path, ...] = (), started: float | None = None):
    """A LoadedModel of the FLUX.1 `parts` (webui.models.flux.FluxParts), completed from `separate`."""
    if parts.variant not in VARIANT_FAMILIES:
        raise CheckpointFormatError(f"{name} is a FLUX.1 Depth / Canny checkpoint (a control image as extra input "
                                    "channels): FLUX.1 dev, schnell, Fill and their fine-tunes run; Depth / Canny do "
                                    "not yet")
    family = VARIANT_FAMILIES[parts.variant]
    return assemble(_flux_assembly(), family, parts, name, policy, cache_dir, separate, progress,
                    tokenizer_folders, started)


def assemble_sd3(parts, name: str, policy, cache_dir: Path, separate: SeparateParts, progress: LoadProgress,
                 tokenizer_folders: tuple[Path, ...] = (), started: float | None = None):
    """A LoadedModel of the SD3 / SD3.5 `parts` (webui.models.sd3.SD3Parts), completed from `separate`."""
    return assemble(_sd3_assembly(), "sd3", parts, name, policy, cache_dir, separate, progress, tokenizer_folders,
                    started)


def assemble(assembly: Assembly, family: str, parts, name: str, policy, cache_dir: Path, separate: SeparateParts,
             progress: LoadProgress, tokenizer_folders: tuple[Path, ...] = (), started: float | None = None):
    """The checkpoint's parts completed from the chosen / only files, tokenizers added, placed on the device."""
    from .loader import LoadedModel, read_state_dict

    started = started or time.perf_counter()
    notes: list[str] = []
    have = {kind: getattr(parts, assembly.attributes[kind], None) for kind in assembly.kinds}
    missing = {kind for kind, module in have.items() if module is None}
    files = find_parts(missing, separate, notes, assembly) if missing else {}
    if separate.check is not None and missing:
        separate.check(files, (missing - set(files)) & assembly.required)
    absent = (missing - set(files)) & assembly.required
    if absent:
        listed = ", ".join(PART_LABELS[kind] for kind in sorted(absent))
        raise CheckpointFormatError(
            f"{name} is a {assembly.label} checkpoint without its {listed}: put the file in "
            f"{' / '.join(sorted({PART_FOLDERS[k] for k in absent}))} and choose it in Settings > VAE / Text Encoder "
            "(forge_additional_modules)")
    for kind, path in files.items():
        state = read_state_dict(path)
        have[kind] = assembly.readers[kind](state, path.name, policy.dtype_for(family))
        del state
    if assembly.check is not None:
        assembly.check(parts.transformer, have, name)
    vae = have["vae"].to(policy.vae_dtype_for(family))
    progress.begin("tokenizers")
    encoders, tokenizers = assembly.text_side(have, policy.dtype_for(family), cache_dir,
                                              tokenizer_folders, separate.data_dir, notes)
    label = f"{FAMILIES[family].label} ({parts.variant}, {parts.layout})"
    model = LoadedModel(name, family, FAMILIES[family].inpainting, parts.transformer, vae, encoders, tokenizers, {},
                        label)
    model.t5_max_length = T5_MAX_LENGTH.get(family, 0)
    model.text_max_length = TEXT_MAX_LENGTH.get(family, 0)
    model.compute_dtype = getattr(parts, "compute_dtype", None) or policy.dtype_for(family)
    model.quantized = "GGUF" in str(parts.layout) or "NF4" in str(parts.layout)
    model.joint_attention_dim = int(getattr(parts.transformer.config, "joint_attention_dim", 4096))
    order = {kind: index for index, kind in enumerate(assembly.kinds)}
    model.part_names = tuple(path.stem for _, path in sorted(files.items(), key=lambda item: order[item[0]]))
    model.parts_key = separate.key
    for note in notes:
        log.info("%s: %s", name, note)
    model.warnings.extend(f"VAE / Text Encoder: {unknown!r} is no .safetensors file in models/VAE or "
                          "models/text_encoder: ignored" for unknown in separate.unknown)
    progress.begin("place")
    _place_transformer_model(model, policy, separate.gpu_weights_mb)
    progress.done()
    model.load_seconds = time.perf_counter() - started
    return model


def _place_transformer_model(model, policy, gpu_weights_mb: int) -> None:
    """On a GPU, the parts go where the memory allows (streaming.py); on the CPU they stay."""
    from .loader import _place
    from .streaming import apply_placement, placement_for

    if policy.device.type != "cuda":
        _place(model, policy)
        return
    placement = placement_for(model, policy, gpu_weights_mb)
    log.info("%s: %s", model.name, placement.reason)
    model.placement = placement
    apply_placement(model, policy.device, placement)


# --- diffusers folders ---------------------------------------------------------------------------------------------

_FLUX_PIPELINES = ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline", "FluxFillPipeline")


def is_flux_folder(folder: Path) -> bool:
    import json
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return index.get("_class_name") in _FLUX_PIPELINES


@dataclass
class FolderParts:
    """A FLUX.1 diffusers folder's modules, as `flux.read_flux_file` gives a single file's."""

    transformer: torch.nn.Module
    vae: torch.nn.Module | None
    clip: torch.nn.Module | None
    t5: torch.nn.Module | None
    variant: str
    layout: str = "diffusers folder"


def load_flux_folder(folder: Path, policy, cache_dir: Path, name: str, separate: SeparateParts, on_progress=None):
    """A FLUX.1 diffusers folder (transformer/, vae/, text_encoder/, text_encoder_2/, tokenizer_2/); a part left
    out of the folder comes from `separate` as for single files."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    from .load_progress import FOLDER_STAGES

    started = time.perf_counter()

    def part(cls, sub: str, **kwargs):
        if not (folder / sub).is_dir():
            return None
        return cls.from_pretrained(folder / sub, local_files_only=True, **kwargs).eval().requires_grad_(False)

    with LoadProgress(name, FOLDER_STAGES, on_progress) as progress:
        try:
            progress.begin("unet")
            transformer = part(FluxTransformer2DModel, "transformer", torch_dtype=policy.dtype_for("flux"))
            if transformer is None:
                raise CheckpointFormatError(f"{name}: diffusers folder has no 'transformer' component")
            progress.begin("vae")
            vae = part(AutoencoderKL, "vae", torch_dtype=policy.vae_dtype_for("flux"))
            progress.begin("text_encoders")
            clip = part(CLIPTextModel, "text_encoder", dtype=policy.dtype_for("flux"))
            t5 = part(T5EncoderModel, "text_encoder_2", dtype=policy.dtype_for("flux"))
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointFormatError(f"{name}: could not load the diffusers folder ({exc})") from None
        variant = ("fill" if transformer.config.in_channels > 64 else
                   "dev" if transformer.config.guidance_embeds else "schnell")
        parts = FolderParts(transformer, vae, clip, t5, variant)
        tokenizers = (folder / "tokenizer_2",) if (folder / "tokenizer_2").is_dir() else ()
        return assemble_flux(parts, name, policy, cache_dir, separate, progress, tokenizers, started)


def module_choices(folders) -> list[str]:
    """The names "VAE / Text Encoder" offers: every .safetensors file in the folders, by path inside its folder."""
    names = []
    for folder in folders:
        for path in candidate_files([folder]):
            names.append(path.relative_to(folder).as_posix())
    return sorted(set(names), key=str.lower)


def resolve_module(name: str, folders) -> Path | None:
    """A "VAE / Text Encoder" entry (a name inside one of the folders, with or without `.safetensors`; Forge's
    stored absolute paths count by their file name) as a file inside its folder; None when there is none. The name
    is checked as text: `..` and absolute paths elsewhere resolve to nothing, while a link someone put inside the
    folder (a big file kept on another disk) is taken, as the checkpoint list takes linked files."""
    text = str(name or "").strip()
    if not text or "\0" in text:
        return None
    wanted = Path(text).name if Path(text).is_absolute() else text
    if ".." in Path(wanted).parts:
        return None
    for folder in folders:
        for candidate in (wanted, f"{wanted}.safetensors"):
            path = Path(folder) / candidate
            if path.suffix == ".safetensors" and path.is_file():
                return path
        for path in candidate_files([folder]):  # a bare file name of a file in a subfolder
            if path.name in (wanted, f"{wanted}.safetensors") or path.stem == wanted:
                return path
    return None


def separate_parts(paths, chosen, gpu_weights_mb: int = 0) -> SeparateParts:
    """The SeparateParts of the server's folders and the `forge_additional_modules` option's value."""
    folders = (paths.vae, paths.text_encoder)
    names = [str(name) for name in (chosen or [])]
    resolved = [resolve_module(name, folders) for name in names]
    return SeparateParts(tuple(path for path in resolved if path is not None), folders, paths.data_dir,
                         tuple(name for name, path in zip(names, resolved) if path is None), int(gpu_weights_mb))


def is_sd3_folder(folder: Path) -> bool:
    from .sd3 import sd3_folder_class
    return sd3_folder_class(folder) is not None


def load_sd3_folder(folder: Path, policy, cache_dir: Path, name: str, separate: SeparateParts, on_progress=None):
    """An SD3 / SD3.5 diffusers folder (transformer/, vae/, text_encoder/ CLIP-L, text_encoder_2/ CLIP-G,
    text_encoder_3/ T5, tokenizer_3/); parts left out come from `separate` as for single files."""
    from .load_progress import FOLDER_STAGES
    from .sd3 import read_sd3_folder

    started = time.perf_counter()
    with LoadProgress(name, FOLDER_STAGES, on_progress) as progress:
        progress.begin("unet")
        parts = read_sd3_folder(folder, policy.dtype_for("sd3"))
        tokenizers = (folder / "tokenizer_3",) if (folder / "tokenizer_3").is_dir() else ()
        return assemble_sd3(parts, name, policy, cache_dir, separate, progress, tokenizers, started)


def assemble_zimage(parts, name: str, policy, cache_dir: Path, separate: SeparateParts, progress: LoadProgress,
                    tokenizer_folders: tuple[Path, ...] = (), started: float | None = None):
    """A LoadedModel of the Z-Image `parts` (webui.models.zimage.ZImageParts), completed from `separate`."""
    if parts.variant != "z-image":
        raise CheckpointFormatError(f"{name} is a Z-Image {parts.variant} checkpoint: only Z-Image (Turbo and "
                                    "base) text-to-image checkpoints run so far")
    return assemble(_zimage_assembly(), "zimage", parts, name, policy, cache_dir, separate, progress,
                    tokenizer_folders, started)


def is_zimage_folder(folder: Path) -> bool:
    from .zimage import zimage_folder_class
    return zimage_folder_class(folder) is not None


def load_zimage_folder(folder: Path, policy, cache_dir: Path, name: str, separate: SeparateParts, on_progress=None):
    """A Z-Image diffusers folder (transformer/, vae/, text_encoder/, tokenizer/)."""
    from .load_progress import FOLDER_STAGES
    from .zimage import read_zimage_folder

    started = time.perf_counter()
    with LoadProgress(name, FOLDER_STAGES, on_progress) as progress:
        progress.begin("unet")
        parts = read_zimage_folder(folder, policy.dtype_for("zimage"))
        tokenizers = (folder / "tokenizer",) if (folder / "tokenizer").is_dir() else ()
        return assemble_zimage(parts, name, policy, cache_dir, separate, progress, tokenizers, started)
