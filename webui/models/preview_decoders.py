"""Small decoders for live previews, found in `models/VAE-approx` and `models/VAE-taesd` (A1111's folders).

- "Approx NN": A1111's VAE approximation, eight plain convolutions from the latents to RGB at twice the latent
  size. Files: `model.pt` (SD1/SD2 latents), `vaeapprox-sdxl.pt` (SDXL).
- "TAESD": the tiny autoencoder's decoder, at full image size. Files: `taesd_decoder.pth` / `.safetensors`
  (SD1/SD2), `taesdxl_decoder.pth` / `.safetensors` (SDXL), `taef1_decoder` (FLUX.1's 16-channel latents, and
  Z-Image's, which are FLUX.1's AE's), `taesd3_decoder` (SD3 / SD3.5), in the original layout (a flat sequence whose
  first
  entry is the input clamp); diffusers' `DecoderTiny` holds the same layers one index lower.

Both take the sampler's latents as they are (no VAE scaling factor) and give RGB in [-1, 1].
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch
from torch import nn

APPROX_NN, TAESD = "Approx NN", "TAESD"
FILES = {  # method -> family group -> file stems tried in order
    APPROX_NN: {"sd": ("model",), "sdxl": ("vaeapprox-sdxl",)},
    TAESD: {"sd": ("taesd_decoder",), "sdxl": ("taesdxl_decoder",), "flux": ("taef1_decoder",),
            "sd3": ("taesd3_decoder",)},
}
# the decoder group of the other transformer families (FLUX.1's variants: "flux"); Z-Image samples in FLUX.1's AE
# latents (its ae.safetensors is FLUX.1's), so TAEF1 decodes them
_GROUPS = {"zimage": "flux", "sd3": "sd3"}
SUFFIXES = (".safetensors", ".pth", ".pt")


class PreviewDecoderError(RuntimeError):
    """A preview decoder file that cannot be read as what its name says."""


class ApproxDecoder(nn.Module):
    """Latents -> RGB: nearest 2x upscale, an 11-pixel zero border, then eight unpadded convolutions, each
    followed by a leaky ReLU (slope 0.1); the border is what the convolutions eat, so the output is 2x the input."""
    KERNELS = (7, 5, 3, 3, 3, 3, 3, 3)
    WIDTHS = (8, 16, 32, 64, 32, 16, 8, 3)
    BORDER = 11

    def __init__(self, latent_channels: int = 4):
        super().__init__()
        widths = (latent_channels, *self.WIDTHS)
        for number, kernel in enumerate(self.KERNELS, start=1):
            setattr(self, f"conv{number}", nn.Conv2d(widths[number - 1], widths[number], kernel))

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        height, width = latents.shape[-2:]
        x = nn.functional.interpolate(latents, size=(height * 2, width * 2), mode="nearest")
        x = nn.functional.pad(x, (self.BORDER,) * 4)
        for number in range(1, len(self.KERNELS) + 1):
            x = nn.functional.leaky_relu(getattr(self, f"conv{number}")(x), 0.1)
        return x


def taesd_decoder(latent_channels: int = 4) -> nn.Module:
    """diffusers' tiny decoder in TAESD's shape (64 channels, 3-3-3-1 blocks, nearest 2x upsampling)."""
    from diffusers.models.autoencoders.vae import DecoderTiny
    return DecoderTiny(in_channels=latent_channels, out_channels=3, num_blocks=(3, 3, 3, 1), block_out_channels=(64,) * 4,
                       upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")


def taesd_to_diffusers(state: dict) -> dict:
    """TAESD's keys ("1.weight", "3.conv.0.weight", ...) as DecoderTiny's ("layers.0.weight", ...)."""
    renamed = {}
    for key, value in state.items():
        index, _, rest = key.partition(".")
        if not index.isdigit() or not rest:
            raise PreviewDecoderError(f"unexpected key {key!r} for a TAESD decoder")
        renamed[f"layers.{int(index) - 1}.{rest}"] = value
    return renamed


def read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PreviewDecoderError("not a state dict")
    return state


def load_decoder(method: str, path: Path) -> nn.Module:
    """The decoder for `method` with the weights in `path` (float32, on the CPU, eval mode; moved by the caller)."""
    try:
        state = read_state_dict(path)
        if method == APPROX_NN:
            module = ApproxDecoder(latent_channels=state["conv1.weight"].shape[1])
        else:
            state = taesd_to_diffusers(state)
            module = taesd_decoder(state["layers.0.weight"].shape[1])
        module.load_state_dict(state, strict=True)
    except PreviewDecoderError as exc:
        raise PreviewDecoderError(f"{path.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is an error message, not a crash
        first_line = (str(exc).splitlines() or [""])[0]
        raise PreviewDecoderError(f"{path.name} is not a usable {method} decoder: {type(exc).__name__}: "
                                  f"{first_line}") from None
    return module.float().eval().requires_grad_(False)


def family_group(family: str) -> str:
    if family.startswith("flux"):
        return "flux"
    if family in _GROUPS:
        return _GROUPS[family]
    return "sdxl" if family == "sdxl" else "sd"


class PreviewDecoders:
    """The preview decoders in the folders, looked up each time (a file dropped in is found without a restart),
    loaded once per file and kept on the policy's device."""

    def __init__(self, folders: list[Path], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.folders = [Path(folder) for folder in folders]
        self.device = torch.device(device)
        self.dtype = dtype  # the policy's VAE dtype: half precision on a GPU unless --no-half-vae
        self._loaded: dict[tuple[Path, int], nn.Module] = {}
        self._failed: dict[tuple[Path, int], str] = {}
        self._lock = threading.Lock()  # one load and one render at a time (renders come from several threads)

    def find(self, method: str, family: str) -> Path | None:
        for stem in FILES.get(method, {}).get(family_group(family), ()):
            for folder in self.folders:
                for suffix in SUFFIXES:
                    path = folder / f"{stem}{suffix}"
                    if path.is_file():
                        return path
        return None

    def methods(self) -> list[str]:
        """The file-based methods with a decoder for some family."""
        return [method for method in FILES
                if any(self.find(method, family) for family in ("sd1", "sdxl", "flux", "sd3"))]

    def decode(self, method: str, family: str, latents: torch.Tensor) -> torch.Tensor:
        """RGB in [-1, 1] (batch, 3, H, W) for `latents`; PreviewDecoderError when there is no usable file."""
        path = self.find(method, family)
        if path is None:
            raise PreviewDecoderError(f"no {method} decoder for {family} in "
                                      f"{' or '.join(str(folder) for folder in self.folders)}")
        with self._lock:
            module = self._module(method, path)
            with torch.no_grad():
                return module(latents.detach().to(self.device, self.dtype)).float()

    def _module(self, method: str, path: Path) -> nn.Module:
        stamp = path.stat().st_mtime_ns
        key = (path, stamp)
        if key in self._failed:
            raise PreviewDecoderError(self._failed[key])
        module = self._loaded.get(key)
        if module is None:
            try:
                module = load_decoder(method, path).to(self.device, self.dtype)
            except PreviewDecoderError as exc:
                self._failed[key] = str(exc)  # not read again until the file changes
                raise
            self._loaded = {k: v for k, v in self._loaded.items() if k[0] != path}  # a replaced file's old weights
            self._loaded[key] = module
        return module
