"""Where things live: the data dir and the model folders, with A1111's folder names."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    checkpoints: Path
    lora: Path
    vae: Path
    embeddings: Path
    controlnet: Path
    annotators: Path
    outputs: Path
    extensions: Path

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.json"

    @property
    def hash_cache_file(self) -> Path:
        return self.data_dir / "cache.json"

    @property
    def styles_file(self) -> Path:
        return self.data_dir / "styles.csv"

    @property
    def lycoris(self) -> Path:
        """A1111's old separate LyCORIS folder, read as a second LoRA folder when it exists."""
        return self.lora.parent / "LyCORIS"

    @property
    def upscaler_dirs(self) -> dict[str, Path]:
        """Image upscaler model folders (A1111's names), by the kind of model A1111 keeps in each. Any file there
        is loaded through spandrel, which detects the architecture from the weights."""
        kinds = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT", "ScuNET")
        return {kind: self.data_dir / "models" / kind for kind in kinds}

    @property
    def face_restorer_root(self) -> Path:
        """The models folder holding A1111's face restoration folders: `GFPGAN` (with the face detector),
        `Codeformer` and `RestoreFormer`."""
        return self.data_dir / "models"

    @property
    def preview_decoder_dirs(self) -> list[Path]:
        """Small decoders for live previews (A1111's folders): `VAE-approx` (Approx NN's `model.pt`,
        `vaeapprox-sdxl.pt`; TAESD files are found there too) and `VAE-taesd` (`taesd_decoder.pth`, ...)."""
        return [self.data_dir / "models" / "VAE-approx", self.data_dir / "models" / "VAE-taesd"]

    @property
    def jobs_db(self) -> Path:
        """The job history (SQLite): every queued job's request, state, timings, output paths and error."""
        return self.data_dir / "jobs.sqlite3"

    @property
    def text_encoder(self) -> Path:
        """Separate text encoders (Forge's folder): FLUX.1's `clip_l` / `t5xxl` files and the T5 tokenizer."""
        return self.data_dir / "models" / "text_encoder"

    @property
    def cache_dir(self) -> Path:
        """Files we derive ourselves (for example the CLIP tokenizer vocabulary)."""
        return self.data_dir / "cache"

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> "Paths":
        data = Path(flags.data_dir).expanduser().resolve() if flags.data_dir else PROJECT_DIR

        def pick(value: str | None, default: Path) -> Path:
            return Path(value).expanduser().resolve() if value else default

        return cls(
            data_dir=data,
            checkpoints=pick(flags.ckpt_dir, data / "models" / "Stable-diffusion"),
            lora=pick(flags.lora_dir, data / "models" / "Lora"),
            vae=pick(flags.vae_dir, data / "models" / "VAE"),
            embeddings=pick(flags.embeddings_dir, data / "embeddings"),
            controlnet=pick(flags.controlnet_dir, data / "models" / "ControlNet"),
            annotators=pick(flags.controlnet_annotator_models_path, data / "models" / "annotators"),
            outputs=pick(getattr(flags, "outdir", None), data / "outputs"),
            extensions=pick(getattr(flags, "extensions_dir", None), data / "extensions"),
        )

    def ensure(self) -> None:
        """Create the folders a user is expected to drop files into."""
        for folder in (self.checkpoints, self.lora, self.vae, self.text_encoder, self.embeddings, self.controlnet,
                       self.annotators, self.outputs, self.extensions, self.upscaler_dirs["ESRGAN"],
                       self.upscaler_dirs["RealESRGAN"], self.face_restorer_root / "GFPGAN",
                       self.face_restorer_root / "Codeformer"):
            folder.mkdir(parents=True, exist_ok=True)
