"""Start the web UI and the HTTP API: parse flags, build the services once, mount UI + API, serve."""
from __future__ import annotations

import logging
import sys

from fastapi import FastAPI

from webui import __version__
from webui.settings.flags import parse_logins

log = logging.getLogger("webui")


def create_app(flags, services=None) -> tuple[FastAPI, object]:
    """The FastAPI app with the API routes and (unless --nowebui) the Gradio UI mounted at /. Extensions' routes
    come after ours, their on_app_started callbacks last. With --gradio-auth every route needs the UI's login, but
    the API's when --api-auth guards them."""
    from webui.api.routes import install_api
    from webui.extensions.routes import install_extension_routes, start_extensions
    from webui.services import build_services

    services = services or build_services(flags)
    app = FastAPI(title="Stable Diffusion web UI", version=__version__, docs_url=None, redoc_url=None)
    install_docs(app)
    blocks = None
    if not flags.nowebui:  # added first, so it runs inside the body limit (and the login gate) that come later
        from webui.ui.gradio_guard import GradioGuard
        app.add_middleware(GradioGuard, blocks=lambda: blocks)  # the page built below
    api_logins = parse_logins(flags.api_auth)
    install_api(app, services, logins=api_logins)
    api_routes = list(app.router.routes)  # all later routes are the UI's
    install_extension_routes(app, services.extension_host)
    if not flags.nowebui:
        import gradio as gr

        from webui.ui.blocks import build_ui
        from webui.ui.file_access import count_as_launched, mount_arguments
        from webui.ui.login import UiLogin, UiLoginGate
        from webui.ui.thumbs import install_thumb_route
        logins = parse_logins(flags.gradio_auth)
        login = UiLogin(logins) if logins else None
        if login is not None:  # the whole page behind one login: Gradio's routes, thumbs, extensions' routes
            # The API keeps its own --api-auth. Without one, it takes the UI's login too: it is always on, and a
            # --gradio-auth that left generation, settings and the history open would open more than it says.
            open_routes = (api_routes if api_logins else []) + login.install_routes(app)
            app.add_middleware(UiLoginGate, login=login, open_routes=open_routes)
        install_thumb_route(app, services)  # before the UI takes "/"
        from webui.extensions.file_route import install_file_route
        install_file_route(app, services)  # A1111's /file= for extensions' page scripts (behind the login too)
        blocks = build_ui(services)
        # footer_links=[]: no Gradio footer ("Use via API", its Settings, "Built with Gradio"); /docs is the API's
        app = gr.mount_gradio_app(app, blocks, path="/", auth_dependency=login.user if login else None,
                                  footer_links=[], **mount_arguments(services, logins),
                                  **blocks_assets(services.extension_host))
        count_as_launched(blocks)  # Gradio checks which files events may read and serve only once "launched"
    elif services.extension_host is not None:  # A1111's API-only start runs the before_ui callbacks too (extensions
        services.extension_host.callbacks.call("before_ui")  # register their network types there)
    start_extensions(app, blocks, services.extension_host)
    app.router.on_shutdown.append(services.stop)
    return app, services


def install_docs(app: FastAPI) -> None:
    """The OpenAPI page at /docs, with Swagger UI's files served from the swagger-ui-bundle package (it works
    offline, unlike FastAPI's default page, which loads them from a CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def blocks_assets(host=None) -> dict:
    """The page's CSS and on-load script, with enabled extensions' style.css and javascript/ files."""
    from webui.extensions.routes import extension_assets
    from webui.ui.blocks import CSS, JS
    css, head = extension_assets(host)
    return {"css": CSS + css, "js": JS, "head": head}


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from webui.extensions.host import parse_flags_with_extensions
    flags, host = parse_flags_with_extensions(argv)
    try:
        parse_logins(flags.api_auth)
        parse_logins(flags.gradio_auth)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    from webui.services import build_services
    try:
        services = build_services(flags, host)
    except RuntimeError as exc:
        if type(exc).__name__ != "PoolStartError":  # Ray missing or unreachable (--workers / --ray-address)
            raise
        sys.exit(f"error: {exc}")
    app, _ = create_app(flags, services)
    host = "0.0.0.0" if flags.listen else "127.0.0.1"
    import uvicorn
    log.info("Running on http://%s:%d", host, flags.port)
    uvicorn.run(app, host=host, port=flags.port, log_level="warning")


if __name__ == "__main__":
    main()
