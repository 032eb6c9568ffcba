"""Start the web UI and the HTTP API: parse flags, build the services once, mount UI + API, serve."""
from __future__ import annotations

import logging
import sys

from fastapi import FastAPI

from webui import __version__
from webui.settings.flags import parse_flags, parse_logins

log = logging.getLogger("webui")


def create_app(flags, services=None) -> tuple[FastAPI, object]:
    """The FastAPI app with the API routes and (unless --nowebui) the Gradio UI mounted at /."""
    from webui.api.routes import install_api
    from webui.services import build_services

    services = services or build_services(flags)
    app = FastAPI(title="Stable Diffusion web UI", version=__version__, docs_url="/docs", redoc_url=None)
    install_api(app, services, logins=parse_logins(flags.api_auth))
    if not flags.nowebui:
        import gradio as gr

        from webui.ui.blocks import build_ui
        from webui.ui.thumbs import install_thumb_route
        install_thumb_route(app, services)  # before the UI takes "/"
        blocks = build_ui(services)
        app = gr.mount_gradio_app(app, blocks, path="/", auth=parse_logins(flags.gradio_auth) or None,
                                  footer_links=["api", "settings"], **blocks_assets())
    app.router.on_shutdown.append(services.stop)
    return app, services


def blocks_assets() -> dict:
    from webui.ui.blocks import CSS, JS
    return {"css": CSS, "js": JS}


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = parse_flags(argv)
    try:
        parse_logins(flags.api_auth)
        parse_logins(flags.gradio_auth)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    app, _ = create_app(flags)
    host = "0.0.0.0" if flags.listen else "127.0.0.1"
    import uvicorn
    log.info("Running on http://%s:%d", host, flags.port)
    uvicorn.run(app, host=host, port=flags.port, log_level="warning")


if __name__ == "__main__":
    main()
