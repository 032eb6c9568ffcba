"""What extensions add to the web server: HTTP routes (our API's `add_route`), their page assets (javascript/,
style.css) and the on_app_started callbacks (A1111's, with the Gradio Blocks and the FastAPI app; ours, with
the app). Routes added by those callbacks stay reachable: the UI's catch-all mount at "/" is moved last."""
from __future__ import annotations

import html

from starlette.routing import Mount


def install_extension_routes(app, host) -> None:
    if host is None:
        return
    for api in host.apis():
        for route in api.routes:
            try:
                app.add_api_route(route.path, route.endpoint, methods=list(route.methods), **route.kwargs)
            except Exception as exc:  # noqa: BLE001
                host.problems.report(api.name, f"adding route {route.path}", exc)


def start_extensions(app, blocks, host) -> None:
    """A1111's on_app_started(demo, app), then ours (app); then the UI mount goes after every route."""
    if host is None:
        return
    host.callbacks.call("app_started", blocks, app)
    for api in host.apis():
        for function in api.app_started:
            try:
                function(app)
            except Exception as exc:  # noqa: BLE001
                host.problems.report(api.name, f"on_app_started {getattr(function, '__name__', '')}", exc)
    routes = app.router.routes
    catch_all = [r for r in routes if isinstance(r, Mount) and r.path in ("", "/")]
    routes[:] = [r for r in routes if r not in catch_all] + catch_all


def extension_assets(host) -> tuple[str, str]:
    """(css, head html): every enabled extension's style.css appended to the page's CSS, its javascript/*.js as
    <script> (and *.mjs as module scripts) in <head>, in extension then file-name order, after A1111's page API
    (`ui.a1111_page_api`). A file that cannot be read is reported and left out."""
    if host is None:
        return "", ""
    from ..ui.a1111_page_api import SCRIPT
    css, head = [], [f"<script data-a1111-page-api>\n{_script_safe(SCRIPT)}\n</script>"]  # first: A1111's API
    for extension, path in host.stylesheets():
        try:
            css.append(f"\n/* {extension.name}/style.css */\n" + path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            host.problems.report(extension.name, "reading style.css", exc)
    for extension, path in host.javascript_files():
        try:
            code = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            host.problems.report(extension.name, f"reading javascript/{path.name}", exc)
            continue
        kind = ' type="module"' if path.suffix == ".mjs" else ""
        name = html.escape(f"{extension.name}/javascript/{path.name}", quote=True)
        head.append(f'<script{kind} data-extension-file="{name}">\n{_script_safe(code)}\n</script>')
    return "".join(css), "\n".join(head)


def _script_safe(code: str) -> str:
    """Inline JS must not close its own <script> element early."""
    return code.replace("</script", "<\\/script")
