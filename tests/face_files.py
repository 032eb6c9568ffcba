"""Face restoration model files for tests, in the layouts the published ones have.

- Restorers: spandrel's own architecture classes (GFPGANv1Clean, RestoreFormer, and spandrel_extra_arches'
  CodeFormer), randomly initialised with a fixed seed, saved as their state dicts under the folder and file names
  A1111 uses. GFPGAN and CodeFormer cannot be made smaller than the real networks (spandrel reads their fixed
  sizes), so they are saved in float16 to halve the file; RestoreFormer is built small (spandrel reads its sizes
  from the weights).
- The detector: RetinaFace's MobileNet-0.25 layout (facexlib's `detection_mobilenet0.25_Final.pth` names and
  shapes), with weights set by hand so the network reports exactly one face, whose five landmarks are the ones the
  test asks for (see `write_detector`): a real forward pass of the real layout, made deterministic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# The FFHQ 512x512 five-point template (eyes, nose tip, mouth corners), as published with facexlib.
FFHQ_LANDMARKS = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                           [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)
BN_EPS = 1e-5


def landmarks_for_square(left: float, top: float, side: float) -> np.ndarray:
    """Landmarks of a face whose aligned 512x512 crop is exactly the square (left, top, side) of the picture."""
    return FFHQ_LANDMARKS * (side / 512.0) + np.array([left, top], dtype=np.float32)


def write_detector(path: Path, landmarks: np.ndarray | None) -> Path:
    """A RetinaFace MobileNet-0.25 file whose network finds one face with these landmarks (pixels of the picture
    the detector sees: short side scaled to 640), or none when `landmarks` is None.

    How: the stem's batch norm emits a constant 1 (its convolution is zero), which every later block passes on in
    channel 0; the coarsest level's context convolution sums a 2x2 up-left window, so with zero padding it reads 1
    at the top-left position and 2 or 4 elsewhere; the class head there scores "face" only for a 1, for the first
    (256 px) anchor; its landmark head's biases put the five points where asked. Every other score is background."""
    from webui.models.retinaface import MOBILENET, RetinaFaceNet

    net = RetinaFaceNet(MOBILENET)  # only for the names and shapes of facexlib's layout
    state = {key: torch.zeros_like(value) for key, value in net.state_dict().items()}
    for key in state:
        if key.endswith("running_var"):
            state[key].fill_(1.0 - BN_EPS)  # batch norms are the identity
        elif key.endswith(".weight") and state[key].dim() == 1:
            state[key].fill_(1.0)
    state["body.stage1.0.1.bias"][0] = 1.0  # the constant
    for stage, blocks in (("stage1", range(1, 6)), ("stage2", range(6)), ("stage3", range(2))):
        for block in blocks:
            state[f"body.{stage}.{block}.0.weight"][0, 0, 1, 1] = 1.0  # depthwise: centre tap of channel 0
            state[f"body.{stage}.{block}.3.weight"][0, 0, 0, 0] = 1.0  # pointwise: channel 0 to channel 0
    state["fpn.output3.0.weight"][0, 0, 0, 0] = 1.0
    state["ssh3.conv3X3.0.weight"][0, 0, 0:2, 0:2] = 1.0
    for level in range(3):
        state[f"ClassHead.{level}.conv1x1.bias"][1::2] = -20.0  # face logits: background everywhere
    if landmarks is not None:
        state["ClassHead.2.conv1x1.weight"][1, 0, 0, 0] = -10.0  # anchor 0's face logit: 15 - 10 x window sum
        state["ClassHead.2.conv1x1.bias"][1] = 15.0
        centre, size = 16.0, 256.0  # the top-left anchor of the stride-32 level, its first size
        offsets = (np.asarray(landmarks, dtype=np.float32).reshape(5, 2) - centre) / (0.1 * size)
        state["LandmarkHead.2.conv1x1.bias"][0:10] = torch.from_numpy(offsets.reshape(10))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"module.{key}": value for key, value in state.items()}, path)  # prefixed, as the file is
    return path


def write_restoreformer(path: Path, seed: int = 0) -> Path:
    """A small RestoreFormer with a one-entry codebook: no quantisation jumps, so a crop one level different gives a
    face only a little different (tests compare its pixels with a reference run)."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(seed)
    net = RestoreFormer(n_embed=1, embed_dim=32, ch=32, out_ch=3, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1,
                        attn_resolutions=(16,), dropout=0.0, in_channels=3, resolution=512, z_channels=32,
                        double_z=False, enable_mid=True, head_size=8)
    return _save(net.state_dict(), path)


def write_gfpgan(path: Path, seed: int = 0) -> Path:
    """GFPGAN v1.4's layout ("clean" architecture; spandrel builds it at its fixed size), as GFPGANv1.4.pth holds
    it: under `params_ema`."""
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                 num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    return _save({"params_ema": _half(net.state_dict())}, path)


def write_codeformer(path: Path, seed: int = 0) -> Path:
    """CodeFormer's layout under `params_ema` (as codeformer.pth), with one transformer layer and a small
    codebook (the autoencoder around them has the real, fixed size)."""
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    net = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=16, latent_size=256,
                     connect_list=["32", "64", "128", "256"])
    return _save({"params_ema": _half(net.state_dict())}, path)


def _half(state: dict) -> dict:
    return {key: value.half() if value.is_floating_point() else value for key, value in state.items()}


def _save(state: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
