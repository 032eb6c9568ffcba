"""The SD VAE picker in the top row (A1111's `sd_vae` quick setting): Automatic, None, or a file in models/VAE.
Changing it saves the option; the next generation uses it."""
from __future__ import annotations

import gradio as gr

from . import notices

SPECIAL = ("Automatic", "None")


def vae_choices(services) -> list[str]:
    return [*SPECIAL, *services.models.vaes.names()]


def current_vae(services) -> str:
    return services.options.get("sd_vae") or "Automatic"


def _dropdown(services, value: str) -> gr.Dropdown:
    return gr.Dropdown(choices=vae_choices(services), value=value)


def show_current(services) -> gr.Dropdown:
    """On page load: the saved choice (another browser may have changed it)."""
    return _dropdown(services, current_vae(services))


def refresh_vaes(services) -> gr.Dropdown:
    try:
        services.models.vaes.refresh()
    except Exception as exc:  # noqa: BLE001
        notices.report(exc)
    return _dropdown(services, current_vae(services))


def change_vae(services, value: str | None) -> gr.Dropdown:
    """Save `value` as the `sd_vae` option; an unknown name is refused and the picker goes back."""
    previous = current_vae(services)
    if not value or value == previous:
        return _dropdown(services, previous)
    if value not in vae_choices(services):
        notices.warn(f"Unknown VAE {value!r}: choose Automatic, None or a file in {services.paths.vae}")
        return _dropdown(services, previous)
    try:  # queued: a running generation keeps the VAE it started with
        job = services.set_options({"sd_vae": value}, source="ui")
    except Exception as exc:  # noqa: BLE001 - an option that cannot be saved is a notice
        notices.report(exc)
        return _dropdown(services, previous)
    job.wait()
    if not job.finished_ok:
        notices.warn(job.error or f"Changing the VAE ended {job.state}")
        return _dropdown(services, previous)
    return _dropdown(services, value)
