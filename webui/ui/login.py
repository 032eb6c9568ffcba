"""The web UI's login (`--gradio-auth`): one login for the page, Gradio's routes and every route the page uses.

`UiLogin` keeps the sessions: `POST /login` (form fields `username`, `password`, as Gradio's login and
`gradio_client` send them) answers `{"success": true}` with a session cookie, or 400; `GET /logout` ends the
session. Gradio asks it who is logged in (`auth_dependency` of `gr.mount_gradio_app`), so `gr.Request.username`
is the login. HTTP Basic with a `--gradio-auth` login works too (scripts, `curl`).

`UiLoginGate` (an ASGI middleware) lets a request without a login through only to the routes it is told are open
(the API's, when `--api-auth` guards them), the login routes and the login page: `GET /` answers `LOGIN_PAGE`, a form and nothing else (no
Gradio config, no API description, no checkpoint names); anything else answers 401 before any route runs, so
`/sd_extra_networks/thumb`, extensions' routes and Gradio's own routes tell nothing, not even whether a file exists.
"""
from __future__ import annotations

import base64
import binascii
import html
import secrets

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.requests import HTTPConnection
from starlette.routing import Match
from starlette.websockets import WebSocketClose

from ..api.errors import app_path


class UiLogin:
    def __init__(self, logins: list[tuple[str, str]]):
        self.logins = list(logins)
        self.sessions: dict[str, str] = {}  # token -> user name; in memory: a restart asks for a login again
        self.cookie = f"webui-login-{secrets.token_hex(4)}"  # cookies ignore ports: another server keeps its own

    def check(self, username: str, password: str) -> str | None:
        """The user name when this login is one of ours (compared in constant time)."""
        found = None
        for user, secret in self.logins:
            if secrets.compare_digest(username.encode(), user.encode()) & \
                    secrets.compare_digest(password.encode(), secret.encode()):
                found = user
        return found

    def user(self, connection: HTTPConnection) -> str | None:
        """Who sent this request: the session cookie's user, else a valid HTTP Basic login, else None."""
        token = connection.cookies.get(self.cookie)
        if token and token in self.sessions:
            return self.sessions[token]
        scheme, _, value = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic" and value:
            try:
                username, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return self.check(username, password)
        return None

    def install_routes(self, app: FastAPI) -> list:
        """`POST /login` and `GET /logout` on the app (before the UI mount, which would take the paths); the
        routes, for the gate to let through."""
        before = len(app.router.routes)

        @app.post("/login", include_in_schema=False)
        @app.post("/login/", include_in_schema=False)
        def login(username: str = Form(""), password: str = Form("")):
            user = self.check(username.strip(), password)
            if user is None:
                return JSONResponse({"detail": "Incorrect credentials."}, status_code=400)
            token = secrets.token_urlsafe(32)
            self.sessions[token] = user
            response = JSONResponse({"success": True})
            response.set_cookie(self.cookie, token, httponly=True, samesite="lax", path="/")
            return response

        @app.get("/logout", include_in_schema=False)
        def logout(request: Request):
            self.sessions.pop(request.cookies.get(self.cookie, ""), None)
            response = RedirectResponse("./", status_code=302)
            response.delete_cookie(self.cookie, path="/")
            return response

        return app.router.routes[before:]


class UiLoginGate:
    """ASGI middleware: requests without a login reach only `open_routes` (matched as the router would) and the
    login page; see the module's docstring."""

    def __init__(self, app, login: UiLogin, open_routes: list, title: str = "Stable Diffusion web UI"):
        self.app = app
        self.login = login
        self.open_routes = open_routes
        self.page = LOGIN_PAGE.replace("{title}", html.escape(title))

    def _open(self, scope) -> bool:
        return any(route.matches(dict(scope))[0] == Match.FULL for route in self.open_routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.login.user(HTTPConnection(scope)) is not None \
                or self._open(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await WebSocketClose(code=1008)(scope, receive, send)
            return
        if app_path(scope) in ("", "/") and scope["method"] in ("GET", "HEAD"):
            response = HTMLResponse(self.page, headers={"Cache-Control": "no-store"})
        else:
            response = JSONResponse({"detail": "Not authenticated"}, status_code=401)
        await response(scope, receive, send)


LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - login</title>
<style>
  body { font-family: system-ui, sans-serif; background: #0b0f19; color: #f3f4f6; display: flex;
         align-items: center; justify-content: center; min-height: 100vh; margin: 0; }
  form { background: #1f2937; padding: 2em; border-radius: 10px; width: 320px; display: flex;
         flex-direction: column; gap: .8em; }
  h1 { font-size: 1.2em; margin: 0 0 .4em; }
  input, button { font-size: 1em; padding: .55em .7em; border-radius: 6px; border: 1px solid #374151; }
  input { background: #111827; color: inherit; }
  button { background: #ea580c; color: white; border: none; cursor: pointer; }
  #login_error { color: #f87171; min-height: 1.2em; margin: 0; }
</style>
</head>
<body>
<form id="login_form" method="post" action="login">
  <h1>{title}</h1>
  <label for="login_username">Username</label>
  <input id="login_username" name="username" autocomplete="username" required autofocus>
  <label for="login_password">Password</label>
  <input id="login_password" name="password" type="password" autocomplete="current-password">
  <button id="login_submit" type="submit">Login</button>
  <p id="login_error" role="alert"></p>
  <noscript>This page needs JavaScript.</noscript>
</form>
<script>
  document.getElementById('login_form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const error = document.getElementById('login_error');
    error.textContent = '';
    try {
      const answer = await fetch('login', { method: 'POST', body: new URLSearchParams(new FormData(event.target)) });
      if (answer.ok) { window.location.reload(); return; }
      error.textContent = 'Incorrect username or password';
    } catch (problem) {
      error.textContent = 'The server did not answer: ' + problem;
    }
  });
</script>
</body>
</html>
"""
