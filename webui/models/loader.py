"""Load checkpoints (A1111/LDM single files and diffusers folders) into diffusers/transformers modules, offline.

Modules are built empty (on the meta device) and the checkpoint's own tensors are assigned into them, so loading
costs about what reading the file costs, in time and memory.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from diffusers.models.modeling_utils import no_init_weights as diffusers_no_init_weights
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.initialization import no_init_weights as transformers_no_init_weights

from .architecture import (UNET_PREFIX, VAE_PREFIX, Architecture, CheckpointFormatError, TextEncoderSpec,
                           detect_architecture, scheduler_config, unet_config, vae_config, with_prediction)
from .devices import DevicePolicy
from .load_progress import FOLDER_STAGES, SINGLE_FILE_STAGES, LoadProgress, Listener
from .tokenizer import clip_tokenizer

if TYPE_CHECKING:
    from .flux_assembly import SeparateParts  # (flux_assembly builds on this module)

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A checkpoint's modules, ready to sample with. txt2img, img2img and inpainting all use these same weights."""

    name: str
    family: str
    inpainting: bool
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[torch.nn.Module]
    tokenizers: list[CLIPTokenizer]
    scheduler_config: dict
    label: str
    load_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    vae_file: Path | None = None  # the VAE file whose weights model.vae holds (None: the checkpoint's own)
    networks: object | None = None  # LoRA patch state (`networks.patcher.NetworkPatchState`), set on first use
    sdxl_refiner: bool = False  # SDXL's refiner: OpenCLIP G alone, an aesthetic score among the UNet's inputs
    t5_max_length: int = 0  # FLUX.1 / SD3: T5's token sequence length (512 FLUX dev, 256 schnell and SD3)
    text_max_length: int = 0  # Z-Image: Qwen3's token sequence length (512)
    joint_attention_dim: int = 0  # SD3: the text sequence's width (the zero T5 part when there is no T5)
    part_names: tuple[str, ...] = ()  # separate files used (Forge's "Module N" infotext keys), VAE first
    parts_key: tuple[str, ...] = ()  # the "VAE / Text Encoder" choice it was loaded with (a change reloads it)
    placement: object = None  # transformer families on a GPU: streaming.Placement (what is streamed from RAM)
    compute_dtype: torch.dtype | None = None  # transformer families: the network's compute dtype (fp8 storage)
    quantized: bool = False  # GGUF weights: dequantised per layer (LoRAs are added at run time: runtime_patches)

    @property
    def network_dtype(self) -> torch.dtype:
        """The dtype the UNet / transformer computes in: its parameters' (walking them; read it once per run),
        except for weights stored in float8, which are cast up layer by layer to the compute dtype."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        return self.unet.dtype

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config["prediction_type"]

    @functools.cached_property
    def size_bytes(self) -> int:
        """Memory the weights take (measured once: walking every parameter is not free)."""
        return sum(p.numel() * p.element_size() for m in self.modules() for p in m.parameters())

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.unet, self.vae, *self.text_encoders) if m is not None]  # SD3 may lack its T5


# --- reading files ---------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
                       "F8_E5M2": torch.float8_e5m2}


TensorsRead = Callable[[int, int], None]  # (tensors read so far, tensors in the file)


def _read_safetensors(path: Path, size: int, on_read: TensorsRead | None = None) -> dict[str, torch.Tensor]:
    """Read a .safetensors file tensor by tensor into private memory (several reads at once: copying from the page
    cache is bound by memory bandwidth, and `os.preadv` releases the GIL).

    safetensors' own `load_file` maps the file; tensors would then stay tied to it, and overwriting or truncating
    the checkpoint while it is loaded (copying a new version over it) would change the model or crash the process.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.pread(fd, 8, 0)
        if len(head) < 8:
            raise ValueError("file too small for a header")
        header_size = int.from_bytes(head, "little")
        if header_size <= 0 or 8 + header_size > size:
            raise ValueError(f"header length {header_size} does not fit in a {size}-byte file")
        header = json.loads(os.pread(fd, header_size, 8))
        base = 8 + header_size

        def read(item: tuple[str, dict]) -> tuple[str, torch.Tensor]:
            key, entry = item
            begin, end = entry["data_offsets"]
            if not 0 <= begin <= end or base + end > size:
                raise ValueError(f"tensor {key} lies beyond the end of the file")
            raw = torch.empty(end - begin, dtype=torch.uint8)
            view, done = memoryview(raw.numpy()), 0
            while done < end - begin:
                got = os.preadv(fd, [view[done:]], base + begin + done)
                if got <= 0:
                    raise ValueError(f"tensor {key} is cut short")
                done += got
            return key, raw.view(_SAFETENSORS_DTYPES[entry["dtype"]]).reshape(list(entry["shape"]))

        entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
        tensors: dict[str, torch.Tensor] = {}
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for key, tensor in pool.map(read, entries):
                tensors[key] = tensor
                if on_read is not None:
                    on_read(len(tensors), len(entries))
        return tensors
    finally:
        os.close(fd)


def read_state_dict(path: Path, private: bool = True, on_read: TensorsRead | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .ckpt file; `.ckpt` only through torch's safe (weights-only) unpickler.

    `private`: copy into process memory. Otherwise the tensors map the file (fast), which is only safe when they
    are copied elsewhere (to the GPU) right after loading: a mapped file overwritten in place changes or crashes
    the model. `on_read(done, total)` follows a private safetensors read tensor by tensor."""
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointFormatError(f"{name}: cannot read the file ({exc.strerror})") from None
    if size == 0:
        raise CheckpointFormatError(f"{name}: the file is empty")
    if path.suffix.lower() == ".gguf":  # quantised blocks, not plain tensors: only load_checkpoint reads them
        raise CheckpointFormatError(f"{name}: a GGUF-quantised model; it loads as a checkpoint, but its tensors "
                                    "cannot be read as plain weights here (merging, VAE / LoRA files)")
    if path.suffix.lower() == ".safetensors":
        try:
            return _read_safetensors(path, size, on_read) if private else load_file(str(path))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            raise CheckpointFormatError(f"{name}: corrupt or truncated safetensors file ({exc})") from None
    try:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=not private)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            data = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (pre-zip) format
    except pickle.UnpicklingError as exc:
        raise CheckpointFormatError(
            f"{name}: this .ckpt contains Python objects besides tensors, and unpickling them could run "
            f"arbitrary code, so it was refused. Convert it to .safetensors. (Detail: {str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointFormatError(f"{name}: corrupt or truncated .ckpt file ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointFormatError(f"{name}: the .ckpt holds no state dict")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


# --- text encoders -----------------------------------------------------------------------------------------------

def _count_layers(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _hf_clip_weights(state: dict, prefix: str) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if not rest.startswith("text_model."):  # very old checkpoints lack the text_model level
                rest = "text_model." + rest
            if rest.endswith("position_ids"):
                continue
            out[rest] = value
    return out


def _open_clip_weights(state: dict, spec: TextEncoderSpec) -> dict:
    p = spec.prefix
    out = {
        "text_model.embeddings.token_embedding.weight": state[p + "token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state[p + "positional_embedding"],
        "text_model.final_layer_norm.weight": state[p + "ln_final.weight"],
        "text_model.final_layer_norm.bias": state[p + "ln_final.bias"],
    }
    layers = _count_layers(state, re.escape(p) + r"transformer\.resblocks\.(\d+)\.")
    if spec.drop_last_layer:
        layers -= 1
    names = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(layers):
        src, dst = f"{p}transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = state[f"{src}attn.in_proj_{kind}"].chunk(3, dim=0)
            out[f"{dst}self_attn.q_proj.{kind}"] = q
            out[f"{dst}self_attn.k_proj.{kind}"] = k
            out[f"{dst}self_attn.v_proj.{kind}"] = v
            for old, new in names.items():
                out[f"{dst}{new}.{kind}"] = state[f"{src}{old}.{kind}"]
    if spec.with_projection:
        out["text_projection.weight"] = state[p + "text_projection"].T.contiguous()
    return out


def _clip_config(weights: dict, act: str, projection: torch.Tensor | None) -> CLIPTextConfig:
    vocab, width = weights["text_model.embeddings.token_embedding.weight"].shape
    config = CLIPTextConfig(
        vocab_size=int(vocab), hidden_size=int(width),
        intermediate_size=int(weights["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=_count_layers(weights, r"text_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=max(1, int(width) // 64),
        max_position_embeddings=int(weights["text_model.embeddings.position_embedding.weight"].shape[0]),
        hidden_act=act, layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
        projection_dim=int(projection.shape[0]) if projection is not None else int(width),
    )
    return config


def _fit_text_model_prefix(module: torch.nn.Module, weights: dict) -> dict:
    """Checkpoints name CLIP tensors `text_model.*`; some transformers versions' modules drop that level."""
    if any(k.startswith("text_model.") for k in module.state_dict()):
        return weights
    return {k.removeprefix("text_model."): v for k, v in weights.items()}


def _empty_module(cls, config):
    """The module with parameters on the meta device and no weight initialisation: every tensor is replaced by the
    file's anyway. diffusers models are built wholly on the meta device; transformers' CLIP keeps its buffers
    (position ids) real, since no file holds them."""
    if hasattr(cls, "from_config"):
        with torch.device("meta"), diffusers_no_init_weights():
            return cls.from_config(config)
    with init_empty_weights(), transformers_no_init_weights():
        return cls(config)


def _build(cls, config, weights: dict, what: str, name: str):
    module = _empty_module(cls, config)
    if what == "text encoder":
        weights = _fit_text_model_prefix(module, weights)
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches
        detail = str(exc).split("\n", 2)[1:2]
        raise CheckpointFormatError(
            f"{name}: the {what} tensors do not fit the expected layout: {detail[0].strip() if detail else exc}. "
            "If this checkpoint has a non-standard architecture, put its LDM .yaml config beside it") from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        sample = ", ".join((missing or unexpected)[:3])
        raise CheckpointFormatError(
            f"{name}: the {what} is incomplete or of another layout ({len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, e.g. {sample})")
    for buffer_name, buffer in list(module.named_buffers()):
        if buffer.is_meta:
            raise CheckpointFormatError(f"{name}: the {what} has no value for {buffer_name}")
    return module.eval().requires_grad_(False)


def _text_encoder(state: dict, spec: TextEncoderSpec, name: str) -> torch.nn.Module:
    if spec.layout == "hf-clip":
        weights = _hf_clip_weights(state, spec.prefix)
        if not weights:
            raise CheckpointFormatError(f"{name}: text encoder tensors missing under {spec.prefix}")
        return _build(CLIPTextModel, _clip_config(weights, "quick_gelu", None), weights, "text encoder", name)
    try:
        weights = _open_clip_weights(state, spec)
    except KeyError as exc:
        raise CheckpointFormatError(f"{name}: OpenCLIP text encoder tensor {exc} is missing") from None
    projection = weights.get("text_projection.weight")
    cls = CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel
    return _build(cls, _clip_config(weights, "gelu", projection), weights, "text encoder", name)


# --- v-prediction test (A1111's, for SD2 checkpoints without a config) -------------------------------------------

@torch.no_grad()
def _guess_v_prediction(unet: UNet2DConditionModel) -> bool:
    """Feed a flat latent at the noisiest timestep: an eps model returns about the input, a v model far below it."""
    param = next(unet.parameters())
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=param.dtype, device=param.device)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=param.dtype, device=param.device)
    out = unet(x, torch.tensor([999], device=param.device), encoder_hidden_states=context).sample
    return (out - x[:, :4]).mean().item() < -1


# --- public entry points -------------------------------------------------------------------------------------------

def _cast(state: dict, dtype: torch.dtype) -> None:
    for key, value in state.items():
        if value.is_floating_point() and value.dtype != dtype:
            state[key] = value.to(dtype)


def load_single_file(path: Path, policy: DevicePolicy, cache_dir: Path, config_path: Path | None = None,
                     name: str | None = None, private: bool | None = None,
                     on_progress: Listener | None = None, parts: SeparateParts | None = None) -> LoadedModel:
    """`private` (default: decided by the policy) says whether weights are copied out of the file, see
    `read_state_dict`. On the GPU without offload they are copied to VRAM right away, so mapping is safe there.
    `on_progress(LoadStatus)` follows the load stage by stage (a console bar shows it too)."""
    name = name or path.name
    started = time.perf_counter()
    if private is None:
        private = policy.device.type == "cpu" or policy.offload != "none"
    with LoadProgress(name, SINGLE_FILE_STAGES, on_progress) as progress:
        progress.begin("read")
        state = read_state_dict(path, private, progress.within)
        from .flux import flux_layout, other_family, read_flux_file  # (they build on this module)
        from .flux_assembly import SeparateParts, assemble_flux, assemble_sd3, assemble_zimage
        from .sd3 import read_sd3_file, sd3_layout
        from .zimage import read_zimage_file, zimage_layout
        if zimage_layout(state) is not None:
            progress.begin("convert")
            zimage_parts = read_zimage_file(state, name, policy.dtype_for("zimage"))
            del state
            return assemble_zimage(zimage_parts, name, policy, cache_dir, parts or SeparateParts(), progress,
                                   started=started)
        if sd3_layout(state) is not None:
            progress.begin("convert")
            sd3_parts = read_sd3_file(state, name, policy.dtype_for("sd3"))
            del state
            return assemble_sd3(sd3_parts, name, policy, cache_dir, parts or SeparateParts(), progress,
                                started=started)
        if flux_layout(state) is not None:  # a transformer family: its own assembly
            progress.begin("convert")
            flux_parts = read_flux_file(state, name, policy.dtype_for("flux"))
            del state
            return assemble_flux(flux_parts, name, policy, cache_dir, parts or SeparateParts(), progress,
                                 started=started)
        other = other_family(state)
        if other is not None:
            raise CheckpointFormatError(f"{name} is a {other} checkpoint: this model family is not supported yet")
        arch = detect_architecture(state, name, config_path)

        progress.begin("convert")
        unet_cfg = unet_config(arch)
        unet_weights = convert_ldm_unet_checkpoint(state, unet_cfg)
        vae_cfg = vae_config(arch)
        vae_weights = convert_ldm_vae_checkpoint(state, vae_cfg)
        _cast(unet_weights, policy.dtype)
        _cast(vae_weights, policy.vae_dtype_for(arch.family))
        progress.begin("unet")
        unet = _build(UNet2DConditionModel, unet_cfg, unet_weights, "UNet", name)
        progress.begin("vae")
        vae = _build(AutoencoderKL, vae_cfg, vae_weights, "VAE", name)
        del unet_weights, vae_weights
        progress.begin("text_encoders")
        encoders = []
        for spec in arch.text_encoders:
            encoder = _text_encoder(state, spec, name)
            encoders.append(encoder.to(policy.dtype))
            progress.within(len(encoders), len(arch.text_encoders))
        del state

        if not arch.prediction_known:
            progress.begin("prediction")
            arch = with_prediction(arch, "v_prediction" if _guess_v_prediction(unet) else "epsilon")
        progress.begin("tokenizers")
        tokenizers = [clip_tokenizer(cache_dir, spec.pad_token) for spec in arch.text_encoders]
        model = LoadedModel(name, arch.family, arch.inpainting, unet, vae, encoders, tokenizers,
                            scheduler_config(arch), arch.label + f" [{arch.config_source} config]",
                            sdxl_refiner=arch.refiner)
        progress.begin("place")
        _place(model, policy)
        progress.done()
    model.load_seconds = time.perf_counter() - started
    return model


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointFormatError(f"{path.parent.name}/{path.name}: cannot read ({exc})") from None


def load_diffusers_folder(folder: Path, policy: DevicePolicy, cache_dir: Path, name: str | None = None,
                          on_progress: Listener | None = None) -> LoadedModel:
    name = name or folder.name
    with LoadProgress(name, FOLDER_STAGES, on_progress) as progress:
        return _load_diffusers_folder(folder, policy, cache_dir, name, progress)


def _load_diffusers_folder(folder: Path, policy: DevicePolicy, cache_dir: Path, name: str,
                           progress: LoadProgress) -> LoadedModel:
    started = time.perf_counter()
    index = _read_json(folder / "model_index.json")
    for part in ("unet", "vae", "text_encoder"):
        if part not in index or not (folder / part).is_dir():
            raise CheckpointFormatError(f"{name}: diffusers folder has no '{part}' component")
    is_xl = "text_encoder_2" in index
    try:
        progress.begin("unet")
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True, torch_dtype=policy.dtype)
        family = "sdxl" if is_xl else ("sd2" if unet.config.cross_attention_dim == 1024 else "sd1")
        progress.begin("vae")
        vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True,
                                            torch_dtype=policy.vae_dtype_for(family))
        progress.begin("text_encoders")
        encoders: list[torch.nn.Module] = [CLIPTextModel.from_pretrained(
            folder / "text_encoder", local_files_only=True, dtype=policy.dtype)]
        if is_xl:
            progress.within(1, 2)
            encoders.append(CLIPTextModelWithProjection.from_pretrained(
                folder / "text_encoder_2", local_files_only=True, dtype=policy.dtype))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointFormatError(f"{name}: could not load the diffusers folder ({exc})") from None
    progress.begin("tokenizers")
    if family == "sd2" and encoders[0].config.hidden_act != "gelu":
        family = "sd1"
    pads = ["<|endoftext|>", "!"] if is_xl else (["!"] if family == "sd2" else ["<|endoftext|>"])
    tokenizers = []
    for i, pad in enumerate(pads):
        sub = folder / ("tokenizer" if i == 0 else "tokenizer_2")
        if (sub / "vocab.json").exists():
            tokenizers.append(CLIPTokenizer.from_pretrained(sub, local_files_only=True))
        else:
            tokenizers.append(clip_tokenizer(cache_dir, pad))
    sched_file = folder / "scheduler" / "scheduler_config.json"
    sched = _read_json(sched_file) if sched_file.exists() else {}
    scheduler = {
        "num_train_timesteps": sched.get("num_train_timesteps", 1000),
        "beta_start": sched.get("beta_start", 0.00085), "beta_end": sched.get("beta_end", 0.012),
        "beta_schedule": sched.get("beta_schedule", "scaled_linear"),
        "prediction_type": sched.get("prediction_type", "epsilon"),
        "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    }
    for module in [unet, vae, *encoders]:
        module.eval().requires_grad_(False)
    inpainting = unet.config.in_channels == 9
    label = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL"}[family] + (" inpainting" if inpainting else "")
    if scheduler["prediction_type"] == "v_prediction":
        label += " (v-prediction)"
    model = LoadedModel(name, family, inpainting, unet, vae, encoders, tokenizers, scheduler,
                        label + " [diffusers folder]")
    progress.begin("place")
    _place(model, policy)
    progress.done()
    model.load_seconds = time.perf_counter() - started
    return model


def _place(model: LoadedModel, policy: DevicePolicy) -> None:
    """Put the modules where the policy says: on the device, or offloaded to the CPU (--medvram / --lowvram)."""
    if policy.attention == "xformers":
        try:
            model.unet.enable_xformers_memory_efficient_attention()
            model.vae.enable_xformers_memory_efficient_attention()
        except Exception as exc:  # xformers present but unusable on this GPU
            model.warnings.append(f"xformers attention unavailable ({exc}); using PyTorch SDPA")
    if policy.device.type == "cpu":
        return
    if policy.offload == "model":  # each whole model moves to the GPU when called, and back when the next runs
        from accelerate import cpu_offload_with_hook
        hook = None
        for module in [*(e for e in model.text_encoders if e is not None), model.unet, model.vae]:
            _, hook = cpu_offload_with_hook(module, policy.device, prev_module_hook=hook)
    elif policy.offload == "sequential":  # layer by layer: least memory, slowest
        from accelerate import cpu_offload
        for module in model.modules():
            cpu_offload(module, execution_device=policy.device)
    else:
        for module in model.modules():
            module.to(policy.device)


def load_checkpoint(path: Path, policy: DevicePolicy, cache_dir: Path, config_path: Path | None = None,
                    name: str | None = None, private: bool | None = None,
                    on_progress: Listener | None = None, parts: SeparateParts | None = None) -> LoadedModel:
    """A single file or a diffusers folder; `on_progress(LoadStatus)` follows the load (see `load_progress`);
    `parts`: where a FLUX.1 checkpoint's missing VAE / text encoders come from (flux_assembly.py)."""
    from .flux_assembly import (SeparateParts, is_flux_folder, is_sd3_folder, is_zimage_folder, load_flux_folder,
                                load_sd3_folder, load_zimage_folder)
    if path.is_dir():
        if is_zimage_folder(path):
            return load_zimage_folder(path, policy, cache_dir, name or path.name, parts or SeparateParts(),
                                      on_progress)
        if is_sd3_folder(path):
            return load_sd3_folder(path, policy, cache_dir, name or path.name, parts or SeparateParts(),
                                   on_progress)
        if is_flux_folder(path):
            return load_flux_folder(path, policy, cache_dir, name or path.name, parts or SeparateParts(),
                                    on_progress)
        return load_diffusers_folder(path, policy, cache_dir, name, on_progress)
    if path.suffix.lower() == ".gguf":  # quantised FLUX.1 / SD3 transformers (gguf_files.py)
        from .gguf_files import load_gguf
        return load_gguf(path, policy, cache_dir, name or path.name, parts or SeparateParts(), on_progress)
    return load_single_file(path, policy, cache_dir, config_path, name, private, on_progress, parts)

