"""Write LoRA files the way trainers write them, for tests and benchmarks: kohya LoRA (SD1 diffusers names, SDXL
LDM names, te / te1 / te2), LyCORIS LoCon (3x3 down + 1x1 up, or the CP `lora_mid` form), LoHa, LoKr, DoRA, and the
diffusers / PEFT layouts (PEFT `lora_A`/`lora_B`, the older `lora.down` and attention-processor `to_q_lora` names).

Each maker returns a `LoraFile`: the tensors exactly as saved, and for every module key the model module it is
meant for, so a test can compute the expected weight change on its own. Random values are scaled so that every
change is clearly visible in the weights and in the UNet's output.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from webui.models.ldm_export import unet_to_ldm

UNET_KINDS = ("attn", "ff", "proj")  # what kohya's default LoRA trains in the UNet
TEXT_KINDS = ("attn", "mlp")


@dataclass
class LoraFile:
    tensors: dict[str, torch.Tensor]
    targets: dict[str, tuple[str, str]] = field(default_factory=dict)  # module key -> (component, module name)
    metadata: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path) -> Path:
        """Write as .safetensors (with the metadata) or, for a .pt/.ckpt path, with torch.save."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.tensors.items()}
        if path.suffix == ".safetensors":
            save_file(tensors, str(path), metadata=self.metadata or None)
        else:
            torch.save(tensors, path)
        return path

    def of(self, key: str) -> dict[str, torch.Tensor]:
        """The tensors of one module key, by the ending after the key (e.g. "lora_down.weight"; "lora.down.weight"
        for attention-processor names such as `to_q_lora.down.weight`)."""
        return {k[len(key) + 1:]: v for k, v in self.tensors.items()
                if k.startswith(key + ".") or k.startswith(key + "_lora.")}


# --- which modules ------------------------------------------------------------------------------------------------

def unet_modules(unet, kinds=UNET_KINDS) -> list[tuple[str, torch.nn.Module]]:
    """(diffusers name, module) of the UNet modules of the given kinds: attn (to_q/k/v/out.0), ff, proj
    (proj_in/out), conv (resnet convolutions, shortcuts, down/upsamplers), time (time_emb_proj)."""
    found = []
    for name, module in unet.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        last = name.rsplit(".", 1)[-1]
        kind = None
        if ".attn1." in name or ".attn2." in name:
            kind = "attn"
        elif ".ff." in name:
            kind = "ff"
        elif last in ("proj_in", "proj_out"):
            kind = "proj"
        elif ".resnets." in name and last in ("conv1", "conv2", "conv_shortcut") or "samplers.0.conv" in name:
            kind = "conv"
        elif last == "time_emb_proj":
            kind = "time"
        if kind in kinds:
            found.append((name, module))
    return found


def text_modules(encoder, kinds=TEXT_KINDS) -> list[tuple[str, torch.nn.Module]]:
    """(module name as the encoder names it, module) of the CLIP attention projections and MLP layers."""
    wanted = {"attn": ("q_proj", "k_proj", "v_proj", "out_proj"), "mlp": ("fc1", "fc2")}
    lasts = {last for kind in kinds for last in wanted[kind]}
    return [(n, m) for n, m in encoder.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in lasts]


def clip_name(name: str) -> str:
    """The name checkpoints and LoRA trainers use (`text_model.encoder...`), whatever transformers calls it."""
    return name if name.startswith(("text_model.", "text_projection")) else f"text_model.{name}"


def ldm_module_names(unet) -> dict[str, str]:
    """diffusers module name -> LDM module name, matched through the tensors `unet_to_ldm` hands back."""
    by_pointer = {t.data_ptr(): k for k, t in unet_to_ldm(unet).items()}
    out = {}
    for key, tensor in unet.state_dict().items():
        if key.endswith(".weight"):
            ldm = by_pointer[tensor.data_ptr()]
            out[key[:-len(".weight")]] = ldm[len("model.diffusion_model."):-len(".weight")]
    return out


# --- random factors -----------------------------------------------------------------------------------------------

def _randn(generator, *shape, std=0.2, dtype=torch.float32):
    return (torch.randn(shape, generator=generator) * std).to(dtype)


def _components(unet, text_encoders, unet_kinds, te_kinds, te_prefixes):
    """[(component, file prefix, module name, module)] for the UNet and each text encoder."""
    items = [("unet", None, n, m) for n, m in unet_modules(unet, unet_kinds)] if unet is not None else []
    for i, encoder in enumerate(text_encoders or []):
        if te_kinds:
            items += [(f"te{i + 1}", te_prefixes[i], n, m) for n, m in text_modules(encoder, te_kinds)]
    return items


def _kohya_prefix(family: str, index: int) -> str:
    return "lora_te_" if family != "sdxl" else f"lora_te{index + 1}_"


def _kohya_key(component, te_prefix, name, ldm, naming) -> str:
    if component == "unet":
        return "lora_unet_" + (ldm[name] if naming == "ldm" else name).replace(".", "_")
    return te_prefix + clip_name(name).replace(".", "_")


def kohya_metadata(family: str, output_name: str, rank: int, alpha: float, module: str = "networks.lora") -> dict:
    version = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}[family]
    return {"ss_output_name": output_name, "ss_base_model_version": version, "ss_network_module": module,
            "ss_network_dim": str(rank), "ss_network_alpha": str(alpha), "ss_v2": str(family == "sd2")}


# --- kohya LoRA / LyCORIS LoCon -----------------------------------------------------------------------------------

def kohya_lora(unet, text_encoders, family: str, *, rank: int = 4, alpha: float | None = 2.0,
               unet_kinds=UNET_KINDS, te_kinds=TEXT_KINDS, naming: str = "diffusers", conv_mode: str = "full",
               dora: bool = False, seed: int = 0, dtype=torch.float16, output_name: str = "",
               std: float = 0.2) -> LoraFile:
    """kohya `lora_down` / `lora_up` / `alpha` (LoCon for convolutions). naming: "diffusers" or "ldm" UNet names;
    conv_mode: "full" (down carries the kernel: 3x3 down, 1x1 up) or "cp" (1x1 down, 3x3 `lora_mid`, 1x1 up).
    dora: add LyCORIS-style `dora_scale` magnitudes (1, in, ...). std: of the random factors (the default makes
    changes far larger than a trained LoRA's, to be plainly visible in tests)."""
    g = torch.Generator().manual_seed(seed)
    ldm = ldm_module_names(unet) if unet is not None and naming == "ldm" else {}
    prefixes = [_kohya_prefix(family, i) for i in range(len(text_encoders or []))]
    out = LoraFile({}, {}, kohya_metadata(family, output_name, rank, alpha or rank) if output_name else {})
    for component, te_prefix, name, module in _components(unet, text_encoders, unet_kinds, te_kinds, prefixes):
        key = _kohya_key(component, te_prefix, name, ldm, naming)
        weight = module.weight
        kernel = tuple(weight.shape[2:])
        if len(kernel) and kernel != (1, 1) and conv_mode == "cp":
            out.tensors[f"{key}.lora_down.weight"] = _randn(g, rank, weight.shape[1], 1, 1, std=std, dtype=dtype)
            out.tensors[f"{key}.lora_mid.weight"] = _randn(g, rank, rank, *kernel, std=std, dtype=dtype)
            out.tensors[f"{key}.lora_up.weight"] = _randn(g, weight.shape[0], rank, 1, 1, std=std, dtype=dtype)
        else:
            down_shape = (rank, weight.shape[1], *kernel)
            up_shape = (weight.shape[0], rank) + ((1, 1) if kernel else ())
            out.tensors[f"{key}.lora_down.weight"] = _randn(g, *down_shape, std=std, dtype=dtype)
            out.tensors[f"{key}.lora_up.weight"] = _randn(g, *up_shape, std=std, dtype=dtype)
        if alpha is not None:
            out.tensors[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
        if dora:
            norms = weight.detach().float().transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)
            magnitude = norms * (1 + 0.2 * torch.rand(norms.shape, generator=g))
            out.tensors[f"{key}.dora_scale"] = magnitude.reshape(1, -1, *([1] * len(kernel))).to(dtype)
        out.targets[key] = (component, name)
    return out


# --- LyCORIS LoHa / LoKr --------------------------------------------------------------------------------------------

def loha(unet, text_encoders, family: str, *, rank: int = 4, alpha: float = 2.0, unet_kinds=("attn", "conv"),
         te_kinds=("attn",), tucker: bool = True, seed: int = 1, dtype=torch.float32) -> LoraFile:
    """LoHa: W += (w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank. With tucker, 3x3 convolutions get `hada_t1/t2`
    cores and their `_a` factors are stored (rank, out), as LyCORIS does."""
    g = torch.Generator().manual_seed(seed)
    prefixes = [_kohya_prefix(family, i) for i in range(len(text_encoders or []))]
    out = LoraFile({}, {})
    for component, te_prefix, name, module in _components(unet, text_encoders, unet_kinds, te_kinds, prefixes):
        key = _kohya_key(component, te_prefix, name, {}, "diffusers")
        shape = module.weight.shape
        kernel = tuple(shape[2:])
        for i in (1, 2):
            if tucker and kernel and kernel != (1, 1):
                out.tensors[f"{key}.hada_t{i}"] = _randn(g, rank, rank, *kernel, std=0.5, dtype=dtype)
                out.tensors[f"{key}.hada_w{i}_a"] = _randn(g, rank, shape[0], std=0.5, dtype=dtype)
                out.tensors[f"{key}.hada_w{i}_b"] = _randn(g, rank, shape[1], std=0.5, dtype=dtype)
            else:
                inner = shape[1:].numel()
                out.tensors[f"{key}.hada_w{i}_a"] = _randn(g, shape[0], rank, std=0.5, dtype=dtype)
                out.tensors[f"{key}.hada_w{i}_b"] = _randn(g, rank, inner, std=0.5, dtype=dtype)
        out.tensors[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
        out.targets[key] = (component, name)
    return out


def _factor(n: int) -> int:
    """A small factor of n (LoKr splits each dimension into two)."""
    for f in (4, 2, 3, 5):
        if n % f == 0 and n > f:
            return f
    return 1


def lokr(unet, text_encoders, family: str, *, rank: int = 4, alpha: float = 2.0, unet_kinds=("attn", "ff", "conv"),
         te_kinds=("mlp",), seed: int = 2, dtype=torch.float32) -> LoraFile:
    """LoKr: W += kron(w1, w2) * scale. Linear layers: full `lokr_w1`, low-rank `lokr_w2_a`/`_b`. 3x3 convolutions:
    low-rank `lokr_w1_a`/`_b` and a Tucker `lokr_t2` ((rank, out) `lokr_w2_a`). 1x1 convolutions: both full (no
    rank, so scale 1)."""
    g = torch.Generator().manual_seed(seed)
    prefixes = [_kohya_prefix(family, i) for i in range(len(text_encoders or []))]
    out = LoraFile({}, {})
    for component, te_prefix, name, module in _components(unet, text_encoders, unet_kinds, te_kinds, prefixes):
        key = _kohya_key(component, te_prefix, name, {}, "diffusers")
        shape = module.weight.shape
        kernel = tuple(shape[2:])
        a, b = _factor(shape[0]), _factor(shape[1])
        c, d = shape[0] // a, shape[1] // b
        if kernel and kernel != (1, 1):
            out.tensors[f"{key}.lokr_w1_a"] = _randn(g, a, rank, std=0.5, dtype=dtype)
            out.tensors[f"{key}.lokr_w1_b"] = _randn(g, rank, b, std=0.5, dtype=dtype)
            out.tensors[f"{key}.lokr_t2"] = _randn(g, rank, rank, *kernel, std=0.5, dtype=dtype)
            out.tensors[f"{key}.lokr_w2_a"] = _randn(g, rank, c, std=0.5, dtype=dtype)
            out.tensors[f"{key}.lokr_w2_b"] = _randn(g, rank, d, std=0.5, dtype=dtype)
        elif kernel:
            out.tensors[f"{key}.lokr_w1"] = _randn(g, a, b, std=0.5, dtype=dtype)
            out.tensors[f"{key}.lokr_w2"] = _randn(g, c, d, 1, 1, std=0.5, dtype=dtype)
        else:
            out.tensors[f"{key}.lokr_w1"] = _randn(g, a, b, std=0.5, dtype=dtype)
            out.tensors[f"{key}.lokr_w2_a"] = _randn(g, c, rank, std=0.5, dtype=dtype)
            out.tensors[f"{key}.lokr_w2_b"] = _randn(g, rank, d, std=0.5, dtype=dtype)
        out.tensors[f"{key}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
        out.targets[key] = (component, name)
    return out


# --- diffusers / PEFT ---------------------------------------------------------------------------------------------

_PEFT_COMPONENTS = ("text_encoder", "text_encoder_2")


def peft_lora(unet, text_encoders, *, rank: int = 4, alpha: float | None = 8.0, unet_kinds=("attn",),
              te_kinds=("attn",), seed: int = 3, dtype=torch.float32) -> LoraFile:
    """diffusers' PEFT layout: `unet.<module>.lora_A.weight` / `lora_B.weight`, `text_encoder.` /
    `text_encoder_2.` + `text_model.*` names, alpha in the `lora_adapter_metadata` header entry."""
    g = torch.Generator().manual_seed(seed)
    out = LoraFile({}, {}, {"format": "pt"})
    adapter_metadata = {}
    items = [("unet", "unet", n, m) for n, m in unet_modules(unet, unet_kinds)]
    for i, encoder in enumerate(text_encoders or []):
        items += [(f"te{i + 1}", _PEFT_COMPONENTS[i], clip_name(n), m) for n, m in text_modules(encoder, te_kinds)]
    for component, prefix, file_name, module in items:
        key = f"{prefix}.{file_name}"
        out.tensors[f"{key}.lora_A.weight"] = _randn(g, rank, module.weight.shape[1], dtype=dtype)
        out.tensors[f"{key}.lora_B.weight"] = _randn(g, module.weight.shape[0], rank, dtype=dtype)
        name = file_name if component == "unet" else _module_name(text_encoders[int(component[2]) - 1], file_name)
        out.targets[key] = (component, name)
        if alpha is not None:
            adapter_metadata[f"{prefix}.r"] = rank
            adapter_metadata[f"{prefix}.lora_alpha"] = alpha
    if adapter_metadata:
        out.metadata["lora_adapter_metadata"] = json.dumps(adapter_metadata, sort_keys=True)
    return out


def _module_name(encoder, canonical: str) -> str:
    names = {n for n, _ in encoder.named_modules()}
    return canonical if canonical in names else canonical.removeprefix("text_model.")


def diffusers_old_lora(unet, text_encoder, *, rank: int = 4, seed: int = 4, dtype=torch.float32) -> LoraFile:
    """The layouts diffusers wrote before PEFT: attention processors (`attn1.processor.to_q_lora.down.weight`,
    `to_out_lora` for to_out.0), `ff.net.2.lora.down.weight`, and for the text encoder `self_attn.to_q_lora` (q_proj)
    and `mlp.fc1.lora_linear_layer`; some modules carry an alpha (`<module>.alpha`, or `to_k_lora.down.weight.alpha`
    as diffusers' conversion of kohya files names it)."""
    g = torch.Generator().manual_seed(seed)
    out = LoraFile({}, {})
    processor = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "0": "to_out"}
    for name, module in unet_modules(unet, ("attn", "ff")):
        head, last = name.rsplit(".", 1)
        if ".attn" in name:
            attn = head.removesuffix(".to_out") if last == "0" else head
            key = f"unet.{attn}.processor.{processor[last]}"
            down, up = f"{key}_lora.down.weight", f"{key}_lora.up.weight"
            if last == "to_k":  # the alpha name diffusers' conversion of kohya files gives
                out.tensors[f"{down}.alpha"] = torch.tensor(float(rank) * 2)
        else:
            key = f"unet.{name}"
            down, up = f"{key}.lora.down.weight", f"{key}.lora.up.weight"
        out.tensors[down] = _randn(g, rank, module.weight.shape[1], dtype=dtype)
        out.tensors[up] = _randn(g, module.weight.shape[0], rank, dtype=dtype)
        out.targets[key] = ("unet", name)
    clip_processor = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "out_proj": "to_out"}
    for name, module in text_modules(text_encoder):
        head, last = clip_name(name).rsplit(".", 1)
        if last in clip_processor:
            key = f"text_encoder.{head}.{clip_processor[last]}"
            down, up = f"{key}_lora.down.weight", f"{key}_lora.up.weight"
        else:
            key = f"text_encoder.{head}.{last}"
            down, up = f"{key}.lora_linear_layer.down.weight", f"{key}.lora_linear_layer.up.weight"
            out.tensors[f"{key}.alpha"] = torch.tensor(float(rank) / 2)
        out.tensors[down] = _randn(g, rank, module.weight.shape[1], dtype=dtype)
        out.tensors[up] = _randn(g, module.weight.shape[0], rank, dtype=dtype)
        out.targets[key] = ("te1", name)
    return out


def peft_adapted_copies(unet, text_encoder, directory: Path, *, rank: int = 4, alpha: float = 8.0,
                        dora: bool = False):
    """Copies of the UNet and text encoder with a real PEFT LoRA adapter (random A and B; DoRA magnitudes scaled
    off their initial norms when `dora`), saved with diffusers' own `StableDiffusionPipeline.save_lora_weights`.
    Returns (file path, adapted unet, adapted text encoder): the adapted modules' outputs are what a model patched
    with that file must produce."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet, text_encoder = copy.deepcopy(unet), copy.deepcopy(text_encoder)
    torch.manual_seed(5)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False, use_dora=dora,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "ff.net.2"]))
    text_encoder.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False, use_dora=dora,
                                        target_modules=["q_proj", "v_proj", "fc1"]))
    if dora:
        g = torch.Generator().manual_seed(6)
        with torch.no_grad():
            for name, param in [*unet.named_parameters(), *text_encoder.named_parameters()]:
                if "lora_magnitude_vector" in name:
                    param.mul_(1 + 0.3 * torch.rand(param.shape, generator=g))
    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=get_peft_model_state_dict(text_encoder),
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
        text_encoder_lora_adapter_metadata=text_encoder.peft_config["default"].to_dict())
    return Path(directory) / "pytorch_lora_weights.safetensors", unet, text_encoder
