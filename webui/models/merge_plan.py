"""Everything a merge can be refused for, found before any tensor is computed: which checkpoints the method needs,
whether they are of one architecture (read from their headers: families, then every merged tensor's shape), the
VAE to bake in, and the output file (its name resolved inside the checkpoint folder, never replacing a file unless
`overwrite` is set)."""
from __future__ import annotations

import fnmatch
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConflictError, RequestError
from .architecture import UNET_PREFIX, CheckpointFormatError, detect_architecture
from .merge_io import TensorMeta, open_source
from .merge_request import ADD_DIFFERENCE, NO_VAE, WEIGHTED_SUM, MergeRequest
from .registry import CHECKPOINT_EXCLUDE, CheckpointInfo, CheckpointRegistry
from .vae import UnknownVaeError, VaeInfo, VaeRegistry

ROLES = (("primary_model_name", "Primary model (A)"), ("secondary_model_name", "Secondary model (B)"),
         ("tertiary_model_name", "Tertiary model (C)"))
CONV_IN = UNET_PREFIX + "input_blocks.0.0.weight"
# A's UNet input layer may take more channels than B's (A1111 merges B into A's first 4): 9 for inpainting models
# (latent, masked-image latent, mask), 8 for instruct-pix2pix (latent, image latent).
EXTRA_INPUTS = {9: "inpainting", 8: "instruct-pix2pix"}
# Not merged (A's value is kept), as in A1111: integer position ids that some SD1 checkpoints carry.
SKIP_ON_MERGE = frozenset({"cond_stage_model.transformer.text_model.embeddings.position_ids"})
FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}
MAX_NAME_BYTES = 255


@dataclass
class Source:
    """One checkpoint taking part: its registry entry, its open file and its role (`label`, `field`)."""

    info: CheckpointInfo
    file: object  # merge_io.SafetensorsSource | StateDictSource
    label: str
    field: str

    @property
    def metas(self) -> dict[str, TensorMeta]:
        return self.file.metas


@dataclass
class MergePlan:
    request: MergeRequest
    sources: list[Source]  # A, then B when the method uses it, then C
    vae: VaeInfo | None
    target: Path
    name: str  # the target's name relative to the checkpoint folder
    config: Path | None  # the .yaml to copy beside the result
    result_kind: str = ""  # "", "inpainting" or "instruct-pix2pix": A's extra input channels were kept
    merged_keys: set[str] = field(default_factory=set)

    @property
    def a(self) -> Source:
        return self.sources[0]

    @property
    def b(self) -> Source | None:
        return self.sources[1] if len(self.sources) > 1 else None

    @property
    def c(self) -> Source | None:
        return self.sources[2] if len(self.sources) > 2 else None

    def close(self) -> None:
        for source in self.sources:
            source.file.close()


def plan_merge(request: MergeRequest, registry: CheckpointRegistry, vaes: VaeRegistry | None) -> MergePlan:
    """Check `request` (validated) against the files; the returned plan holds the sources open (close() it)."""
    infos = _resolve(request, registry)
    sources: list[Source] = []
    try:
        for (field_name, label), info in zip(ROLES, infos):
            sources.append(Source(info, _open(info, label, field_name), label, field_name))
        _same_family(sources)
        merged, kind = _merged_keys(request, sources)
        vae = _vae(request.bake_in_vae, vaes)
        keys = _kept_keys(request, sources[0])
        if not keys:
            raise RequestError("discard_weights", f"Discard weights with matching name: {request.discard_weights!r} "
                                                  "matches every tensor of the primary model; nothing would be left")
        name = output_name(request, infos, kind)
        root = registry.roots[0]
        target = resolve_target(root, name, request.custom_name)
        config = config_to_copy(request.config_source, infos)
        _check_free(target, config, request.overwrite, root)
        return MergePlan(request, sources, vae, target, target.relative_to(root).as_posix(), config, kind, merged)
    except BaseException:
        for source in sources:
            source.file.close()
        raise


def _resolve(request: MergeRequest, registry: CheckpointRegistry) -> list[CheckpointInfo]:
    """A, B and C as the method needs them (A1111: "Merging requires a primary model." ...)."""
    needed = [True, request.uses_secondary, request.uses_tertiary]
    infos = []
    for (field_name, label), wanted in zip(ROLES, needed):
        if not wanted:
            break
        name = getattr(request, field_name)
        if not name:
            why = "Merging" if field_name != "tertiary_model_name" else \
                f"Interpolation method ({request.interp_method})"
            raise RequestError(field_name, f"{why} requires a {label.lower().split(' (')[0]}: choose {label}")
        infos.append(registry.resolve(name))
    return infos


def _open(info: CheckpointInfo, label: str, field_name: str):
    if info.kind == "diffusers":
        raise RequestError(field_name, f"{label}: {info.name} is a diffusers folder; the merger reads single-file "
                                       "checkpoints (.safetensors, .ckpt)")
    try:
        return open_source(info.path)
    except CheckpointFormatError as exc:
        raise RequestError(field_name, f"{label}: {exc}") from None


def _family(source: Source) -> tuple[str, int]:
    """(family, UNet input channels) from the header alone; instruct-pix2pix's 8 channels are told apart here,
    as the loader (which does not run such models) refuses them."""
    metas = dict(source.metas)
    conv = metas.get(CONV_IN)
    channels = conv.shape[1] if conv is not None and len(conv.shape) == 4 else 0
    if channels == 8:
        metas[CONV_IN] = TensorMeta((conv.shape[0], 4, *conv.shape[2:]), conv.dtype)
    try:
        return detect_architecture(metas, source.info.name).family, channels
    except CheckpointFormatError as exc:
        raise RequestError(source.field, f"{source.label}: {exc}") from None


def _same_family(sources: list[Source]) -> None:
    first, (family, channels) = sources[0], _family(sources[0])
    for other in sources[1:]:
        other_family, other_channels = _family(other)
        if other_family != family:
            raise RequestError(other.field, f"{first.label} {first.info.name} is {FAMILY_NAMES[family]} and "
                                            f"{other.label} {other.info.name} is {FAMILY_NAMES[other_family]}: "
                                            "checkpoints of different architectures cannot be merged")
        if channels == 4 and other_channels in EXTRA_INPUTS:
            kind = EXTRA_INPUTS[other_channels]
            raise RequestError(other.field, f"When merging an {kind} model with a normal one, A must be the {kind} "
                                            f"model ({other.label} {other.info.name} is one, "
                                            f"{first.label} {first.info.name} is not)")


def _merged_keys(request: MergeRequest, sources: list[Source]) -> tuple[set[str], str]:
    """The tensors merged (A1111: in A and B, 'model' in the name, floating point) after checking that each fits:
    equal shapes, or A's UNet input taking extra channels (the result is then an inpainting or instruct-pix2pix
    model). Anything else means other sizes of the same family: refused, naming the tensor."""
    if len(sources) < 2:
        return set(), ""
    a, b = sources[0], sources[1]
    c = sources[2] if len(sources) > 2 else None
    merged, kind = set(), ""
    for key, meta in a.metas.items():
        other = b.metas.get(key)
        if "model" not in key or other is None or key in SKIP_ON_MERGE:
            continue
        if not (meta.is_floating_point and other.is_floating_point):
            continue  # integer bookkeeping (step counters, ids): A's value is kept
        third = c.metas.get(key) if c is not None else None
        if third is not None and third.shape != other.shape:
            raise RequestError(c.field, f"{b.label} and {c.label} do not fit together: tensor {key} is "
                                        f"{list(other.shape)} in B and {list(third.shape)} in C")
        if meta.shape != other.shape:
            extra = EXTRA_INPUTS.get(meta.shape[1]) if len(meta.shape) == 4 and len(other.shape) == 4 else None
            if extra is None or other.shape[1] != 4 or meta.shape[:1] + meta.shape[2:] != other.shape[:1] \
                    + other.shape[2:]:
                raise RequestError(b.field, f"{a.label} and {b.label} do not fit together: tensor {key} is "
                                            f"{list(meta.shape)} in A and {list(other.shape)} in B (other sizes of "
                                            "the same architecture cannot be merged)")
            kind = extra
        merged.add(key)
    return merged, kind


def _kept_keys(request: MergeRequest, a: Source) -> list[str]:
    pattern = request.discard_pattern()
    return [key for key in a.metas if pattern is None or not pattern.search(key)]


def _vae(name: str, vaes: VaeRegistry | None) -> VaeInfo | None:
    if name == NO_VAE:
        return None
    if vaes is None:
        raise UnknownVaeError(name, [NO_VAE])
    vaes.refresh()
    found = vaes.find(name)
    if found is None:
        raise UnknownVaeError(name, [NO_VAE, *vaes.names()])
    return found


def _number(value: float) -> str:
    """A1111 writes `round(M, 2)` with Python's str(): 0.3, 0.7, 1.0."""
    return str(round(value, 2))


def output_name(request: MergeRequest, infos: list[CheckpointInfo], kind: str) -> str:
    """The file name: the Custom Name, else A1111's ("0.7(a) + 0.3(b)", "a + 0.3(b - c)", "a"), then
    ".inpainting" / ".instruct-pix2pix" when A's extra inputs were kept, then the format's extension."""
    m = request.multiplier
    if request.custom_name:
        base = request.custom_name.replace("\\", "/")
        suffix = "." + request.checkpoint_format
        if base.lower().endswith(suffix):  # "x.safetensors" means x, not x.safetensors.safetensors
            base = base[:-len(suffix)]
    elif request.interp_method == WEIGHTED_SUM:
        base = f"{_number(1 - m)}({infos[0].model_name}) + {_number(m)}({infos[1].model_name})"
    elif request.interp_method == ADD_DIFFERENCE:
        base = f"{infos[0].model_name} + {_number(m)}({infos[1].model_name} - {infos[2].model_name})"
    else:
        base = infos[0].model_name
    if kind:
        base += f".{kind}"
    return f"{base}.{request.checkpoint_format}"


def resolve_target(root: Path, name: str, custom_name: str = "") -> Path:
    """`name` as a file inside `root` (subfolders allowed, created when missing); a name that would leave the
    folder (`../x`, an absolute path, a link pointing elsewhere) or be hidden is refused, quoting `custom_name`
    (what the user typed) when there is one."""
    field_name = "custom_name" if custom_name else "primary_model_name"
    shown = custom_name or name
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    label = "Custom Name" if custom_name else "The output name (set a Custom Name)"
    parts = name.split("/")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise RequestError(field_name, f"{label}: {shown!r} contains control characters")
    for part in parts:
        if part in ("", ".", ".."):
            raise RequestError(field_name, f"{label}: {shown!r} must be a file name inside the checkpoint folder "
                                           f"{root} (no absolute paths, no '..', no empty folder names)")
        if part.startswith("."):
            raise RequestError(field_name, f"{label}: {shown!r}: names starting with '.' are hidden and would "
                                           "not be listed")
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise RequestError(field_name, f"{label}: {shown!r} is too long for a file name "
                                           f"({len(part.encode('utf-8'))} bytes; at most {MAX_NAME_BYTES})")
    if any(fnmatch.fnmatchcase(parts[-1].lower(), pattern) for pattern in CHECKPOINT_EXCLUDE):
        raise RequestError(field_name, f"{label}: {shown!r} would be taken for a VAE file (`name.vae.*`) and not "
                                       "listed as a checkpoint")
    root_real = Path(root).resolve()
    target = Path(root) / Path(*parts)
    if not target.resolve().is_relative_to(root_real):
        raise RequestError(field_name, f"{label}: {shown!r} leads outside the checkpoint folder {root}")
    return target


def config_to_copy(config_source: int, infos: list[CheckpointInfo]) -> Path | None:
    """The `.yaml` beside A, B or C (A1111's "Copy config from": 0 the first of A, B, C having one; 1 B; 2 C;
    3 none)."""
    def config(index: int) -> Path | None:
        info = infos[index] if index < len(infos) else None
        return info.config if info is not None and info.config is not None and info.config.is_file() else None

    if config_source == 0:
        return config(0) or config(1) or config(2)
    if config_source in (1, 2):
        return config(config_source)
    return None


def _check_free(target: Path, config: Path | None, overwrite: bool, root: Path) -> None:
    if target.is_dir():
        raise ConflictError(f"{target.relative_to(root).as_posix()} is a folder in {root}; choose another name")
    if overwrite:
        return
    taken = [path for path in (target, target.with_suffix(".yaml") if config is not None else None)
             if path is not None and path.exists()]
    if taken:
        names = " and ".join(path.relative_to(root).as_posix() for path in taken)
        raise ConflictError(f"{names} already exist{'s' if len(taken) == 1 else ''} in {root}: choose another "
                            "Custom Name, or tick Overwrite (API: \"overwrite\": true) to replace "
                            f"{'it' if len(taken) == 1 else 'them'}", kind="FileExists")
