"""RetinaFace, the face detector behind A1111's face restoration (it runs facexlib's), written here in torch in the
two layouts facexlib publishes: ResNet-50 (`detection_Resnet50_Final.pth`, what A1111 uses) and MobileNet-0.25
(`detection_mobilenet0.25_Final.pth`, 1.7 MB, faster on a CPU). The layout is read from the weights' names.

A detection returns each face's box, score and five landmarks (eyes, nose tip, mouth corners) in the image's
pixels, found as A1111 finds them: the picture scaled so its short side is 640 px, faces kept above a score of
0.97 after non-maximum suppression at IoU 0.4, and faces whose eyes are under 5 px apart dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

RESNET50, MOBILENET = "resnet50", "mobilenet0.25"
DETECTOR_FILES = {RESNET50: "detection_Resnet50_Final.pth", MOBILENET: "detection_mobilenet0.25_Final.pth"}

# The trained networks' fixed settings (RetinaFace's): anchor sizes per pyramid level, their strides, box variances.
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
STRIDES = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)  # subtracted from the BGR pixels (0-255) the network was trained on
SHORT_SIDE = 640  # A1111 detects on the picture scaled to this short side
SCORE_THRESHOLD = 0.97
NMS_IOU = 0.4
MIN_EYE_DISTANCE = 5.0  # px: side views and tiny faces are left alone


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixels
    score: float
    landmarks: np.ndarray  # (5, 2) float32: left eye, right eye, nose, left mouth corner, right mouth corner


# --- the network ------------------------------------------------------------------------------------------------
def _conv(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1,
          slope: float | None = 0.0) -> nn.Sequential:
    """Convolution (no bias), batch norm, then a leaky ReLU of that slope unless `slope` is None; the indices
    0/1/2 are the names the published weights use."""
    layers = [nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(out)]
    if slope is not None:
        layers.append(nn.LeakyReLU(slope, inplace=True))
    return nn.Sequential(*layers)


def _depthwise(inp: int, out: int, stride: int) -> nn.Sequential:
    """MobileNet's separable block: a 3x3 per-channel convolution, then a 1x1 one, each with BN and leaky ReLU."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp), nn.LeakyReLU(0.1, True),
        nn.Conv2d(inp, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.1, True))


class _MobileNetBody(nn.Module):
    """MobileNet-0.25's three stages (strides 8, 16, 32; 64, 128 and 256 channels)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(_conv(3, 8, stride=2, slope=0.1), _depthwise(8, 16, 1), _depthwise(16, 32, 2),
                                    _depthwise(32, 32, 1), _depthwise(32, 64, 2), _depthwise(64, 64, 1))
        self.stage2 = nn.Sequential(_depthwise(64, 128, 2), *(_depthwise(128, 128, 1) for _ in range(5)))
        self.stage3 = nn.Sequential(_depthwise(128, 256, 2), _depthwise(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        first = self.stage1(x)
        second = self.stage2(first)
        return [first, second, self.stage3(second)]


class _ResNetBody(nn.Module):
    """torchvision's ResNet-50 without its classifier; the outputs of layer2, layer3 and layer4."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50
        net = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        second = self.layer2(x)
        third = self.layer3(second)
        return [second, third, self.layer4(third)]


class _Pyramid(nn.Module):
    """The feature pyramid: each level projected to `width` channels, the coarser ones added in from above."""

    def __init__(self, channels: tuple[int, int, int], width: int, slope: float):
        super().__init__()
        self.output1, self.output2, self.output3 = (_conv(c, width, kernel=1, slope=slope) for c in channels)
        self.merge1, self.merge2 = _conv(width, width, slope=slope), _conv(width, width, slope=slope)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        fine, middle, coarse = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        middle = self.merge2(middle + F.interpolate(coarse, size=middle.shape[-2:], mode="nearest"))
        fine = self.merge1(fine + F.interpolate(middle, size=fine.shape[-2:], mode="nearest"))
        return [fine, middle, coarse]


class _ContextModule(nn.Module):
    """SSH context module: 3x3, 5x5 and 7x7 receptive fields (stacked 3x3s) side by side, concatenated."""

    def __init__(self, width: int, slope: float):
        super().__init__()
        quarter = width // 4
        self.conv3X3 = _conv(width, width // 2, slope=None)
        self.conv5X5_1 = _conv(width, quarter, slope=slope)
        self.conv5X5_2 = _conv(quarter, quarter, slope=None)
        self.conv7X7_2 = _conv(quarter, quarter, slope=slope)
        self.conv7x7_3 = _conv(quarter, quarter, slope=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = self.conv5X5_1(x)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(wide), self.conv7x7_3(self.conv7X7_2(wide))], 1))


class _Head(nn.Module):
    """A 1x1 convolution giving `values` numbers per anchor (2 anchors per position)."""

    def __init__(self, width: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(width, 2 * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)  # anchors ordered row, column, anchor size
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFaceNet(nn.Module):
    """The whole network; parameter names as in the published files (facexlib's), so they load as they are."""

    def __init__(self, layout: str):
        super().__init__()
        if layout not in DETECTOR_FILES:
            raise ValueError(f"unknown RetinaFace layout {layout!r}")
        self.layout = layout
        if layout == RESNET50:
            self.body, channels, width = _ResNetBody(), (512, 1024, 2048), 256
        else:
            self.body, channels, width = _MobileNetBody(), (64, 128, 256), 64
        slope = 0.1 if width <= 64 else 0.0
        self.fpn = _Pyramid(channels, width, slope)
        self.ssh1, self.ssh2, self.ssh3 = (_ContextModule(width, slope) for _ in range(3))
        self.ClassHead = nn.ModuleList(_Head(width, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(width, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(width, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(box offsets, face probability, landmark offsets) for every anchor, level by level."""
        levels = self.fpn(self.body(x))
        features = [module(level) for module, level in zip((self.ssh1, self.ssh2, self.ssh3), levels)]
        boxes = torch.cat([head(f) for head, f in zip(self.BboxHead, features)], 1)
        scores = torch.cat([head(f) for head, f in zip(self.ClassHead, features)], 1).softmax(-1)[..., 1]
        landmarks = torch.cat([head(f) for head, f in zip(self.LandmarkHead, features)], 1)
        return boxes, scores, landmarks


def layout_of(state: dict) -> str | None:
    """Which layout a state dict holds (after `module.` prefixes are removed), or None."""
    if "body.layer1.0.conv1.weight" in state:
        return RESNET50
    if "body.stage1.0.0.weight" in state:
        return MOBILENET
    return None


def anchors(height: int, width: int) -> torch.Tensor:
    """Every anchor of an input of that size as (centre x, centre y, width, height), relative to the image, in the
    order the heads emit them."""
    levels = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        rows, columns = -(-height // stride), -(-width // stride)
        i, j, size = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(columns, dtype=torch.float64),
                                    torch.tensor(sizes, dtype=torch.float64), indexing="ij")
        levels.append(torch.stack([(j + 0.5) * stride / width, (i + 0.5) * stride / height, size / width,
                                   size / height], -1).reshape(-1, 4))
    return torch.cat(levels).float()


class RetinaFace:
    """A loaded detector: `detect(bgr)` finds the faces in an 8-bit BGR picture (H, W, 3)."""

    def __init__(self, net: RetinaFaceNet, path: Path, device: torch.device):
        self.net, self.path, self.device = net.to(device).eval(), Path(path), device

    @property
    def layout(self) -> str:
        return self.net.layout

    def to(self, device) -> "RetinaFace":
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    def detect(self, bgr: np.ndarray) -> list[DetectedFace]:
        height, width = bgr.shape[:2]
        scale = min(height, width) / SHORT_SIDE
        small = bgr
        if scale != 1:
            size = (max(1, int(width / scale)), max(1, int(height / scale)))
            small = cv2.resize(bgr, size, interpolation=cv2.INTER_LANCZOS4)
        h, w = small.shape[:2]
        pixels = torch.from_numpy(np.ascontiguousarray(small, dtype=np.float32)).permute(2, 0, 1)[None]
        pixels = pixels - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)
        with torch.inference_mode():
            offsets, scores, marks = (t[0].float().cpu() for t in self.net(pixels.to(self.device)))
        priors = anchors(h, w)
        centres, sizes = priors[:, :2], priors[:, 2:]
        box_centres = centres + offsets[:, :2] * VARIANCES[0] * sizes
        box_sizes = sizes * torch.exp(offsets[:, 2:] * VARIANCES[1])
        boxes = torch.cat([box_centres - box_sizes / 2, box_centres + box_sizes / 2], 1) * torch.tensor([w, h, w, h])
        points = (centres[:, None] + marks.view(-1, 5, 2) * VARIANCES[0] * sizes[:, None]) * torch.tensor([w, h])
        keep = scores > SCORE_THRESHOLD
        boxes, scores, points = boxes[keep], scores[keep], points[keep]
        order = torch.argsort(scores, descending=True, stable=True)
        boxes, scores, points = boxes[order], scores[order], points[order]
        from torchvision.ops import nms
        chosen = nms(boxes, scores, NMS_IOU)
        faces = []
        for index in chosen.tolist():
            landmarks = (points[index] * scale).numpy().astype(np.float32)
            if float(np.linalg.norm(landmarks[0] - landmarks[1])) < MIN_EYE_DISTANCE:
                continue
            box = tuple(float(v) * scale for v in boxes[index].tolist())
            faces.append(DetectedFace(box, float(scores[index]), landmarks))
        return faces
