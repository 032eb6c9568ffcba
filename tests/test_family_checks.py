"""Which checkpoints may hand latents to each other (refiner, latent hires fix): the latent spaces of the SD
families and of the transformer families' autoencoders (FLUX.1 and Z-Image share FLUX's AE; SD3's differs)."""
from __future__ import annotations

from types import SimpleNamespace

from webui.engine.refiner import latent_space
from webui.models.tiny_flux import tiny_vae
from webui.models.tiny_sd3 import tiny_sd3_modules


def _model(family: str, vae):
    return SimpleNamespace(family=family, vae=vae, vae_scale_factor=8)


def test_latent_spaces_follow_the_autoencoder_not_the_family_name():
    flux_ae = tiny_vae()
    flux_ae.register_to_config(scaling_factor=0.3611, shift_factor=0.1159)
    sd3_vae = tiny_sd3_modules(0)["vae"]
    flux, zimage, sd3 = _model("flux", flux_ae), _model("zimage", flux_ae), _model("sd3", sd3_vae)
    assert latent_space(flux) == latent_space(zimage)  # one AE: latents can pass between them
    assert latent_space(sd3) != latent_space(zimage) and latent_space(sd3) != latent_space(flux)
    sd1 = SimpleNamespace(family="sd1", vae=SimpleNamespace(config=SimpleNamespace(latent_channels=4)),
                          vae_scale_factor=8)
    assert latent_space(sd1) == ("sd", 4, 8)
