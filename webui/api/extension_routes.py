"""A1111's routes about scripts and extensions: `/sdapi/v1/scripts`, `/sdapi/v1/script-info`,
`/sdapi/v1/extensions`."""
from __future__ import annotations

from ..engine import scripts as builtin_scripts
from .scripts import SCRIPTS


def install_extension_api_routes(router, services) -> None:
    host = services.extension_host

    @router.get("/scripts")
    def scripts():
        """Titles of the selectable scripts of each tab (ours and the extensions')."""
        return {mode: builtin_scripts.titles(mode) + [s.title for s in SCRIPTS[mode].values()] +
                host.selectable_titles(mode) for mode in ("txt2img", "img2img")}

    @router.get("/script-info")
    def script_info():
        """Every extension script and section: always-on or not, its tab, its args' defaults."""
        infos = [{"name": title.lower(), "is_alwayson": False, "is_img2img": mode == "img2img",
                  "args": [{"label": name, "value": value} for name, value in zip(script.arg_names, script.defaults)]}
                 for mode in ("txt2img", "img2img") for title in builtin_scripts.titles(mode)
                 for script in [builtin_scripts.find(mode, title)]]
        for mode, runner in host.runners.items():
            for script in runner.scripts:
                defaults = runner.defaults.get(id(script), [])
                infos.append({"name": script.title().lower(), "is_alwayson": bool(script.alwayson),
                              "is_img2img": mode == "img2img", "args": [{"label": None, "value": v}
                                                                        for v in defaults]})
        for api in host.apis():
            for section in api.sections:
                for mode in section.modes:
                    infos.append({"name": section.key, "is_alwayson": True, "is_img2img": mode == "img2img",
                                  "args": [{"label": None, "value": v} for v in host.section_defaults(section, mode)]})
        return infos

    @router.get("/extensions")
    def extensions():
        return [{"name": e.name, "remote": e.remote, "branch": e.branch, "commit_hash": e.commit,
                 "commit_date": e.commit_date, "version": e.commit[:8] if e.commit else "", "enabled": e.enabled}
                for e in services.extensions.list()]
