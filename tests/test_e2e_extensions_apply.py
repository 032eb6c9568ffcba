"""Through the real page: "Apply and restart UI" after installing an extension from another page (or before
reloading) keeps the new extension enabled, and disables exactly what the user unticked.

The page the server built at start listed no extension; the Extensions tab rebuilds its Installed list when it is
shown, so a new page lists (and ticks) what is installed now. The restart itself is replaced by a recorder here
(tests/test_e2e_extensions.py runs the real one): what matters is what Apply saved.
"""
from __future__ import annotations

import httpx
import pytest

from browser import browser, new_page, wait_for_ui, webui  # noqa: F401 - fixtures
from extension_repos import make_extension_repo

expect = pytest.importorskip("playwright.sync_api").expect

README = {"README.md": "An extension for the tests: nothing to load.\n"}


@pytest.fixture
def restarts(webui):
    """Apply's restarts, recorded instead of done; disabled_extensions back to none afterwards."""
    done: list[bool] = []
    webui.services.restarter = lambda services: done.append(True)
    yield done
    webui.services.restarter = None
    webui.services.options.update({"disabled_extensions": []})


def disabled_extensions(webui) -> list[str]:
    """What the server saved, as an API client reads it."""
    answer = httpx.get(webui.api("options"), timeout=30)
    assert answer.status_code == 200
    return answer.json()["disabled_extensions"]


def open_installed(page):
    page.locator("#tab_extensions-button").click()
    page.locator("#extensions_installed_tab-button").click()
    return page.locator("#extensions_enabled")


def test_an_extension_installed_from_url_stays_enabled_when_a_new_page_applies(webui, new_page, restarts,
                                                                                tmp_path):
    repo = make_extension_repo(tmp_path / "repos", "sd-webui-apply-new", README)
    installing = new_page(webui.url)  # opened while nothing is installed, as the server built the page
    wait_for_ui(installing)
    installing.locator("#tab_extensions-button").click()
    installing.locator("#extensions_install_tab-button").click()
    installing.locator("#install_url textarea, #install_url input").first.fill(str(repo))
    installing.locator("#install_button").click()
    expect(installing.locator(".toast-body", has_text="Installed sd-webui-apply-new")).to_be_visible()

    page = new_page(webui.url)  # coming back later: a new page
    wait_for_ui(page)
    enabled = open_installed(page)
    expect(page.locator("#extensions_installed_html")).to_contain_text("sd-webui-apply-new")
    expect(enabled.get_by_label("sd-webui-apply-new")).to_be_checked()

    page.locator("#extensions_apply").click()
    expect(page.locator(".toast-body", has_text="Restarting the UI")).to_contain_text("0 disabled extensions")
    assert restarts == [True]
    assert disabled_extensions(webui) == []


def test_apply_disables_exactly_the_unticked_extension(webui, new_page, restarts, tmp_path):
    for name in ("sd-webui-keep-me", "sd-webui-drop-me"):  # installed after the server built its page
        webui.services.extensions.install(str(make_extension_repo(tmp_path / "repos", name, README)))
    page = new_page(webui.url)
    wait_for_ui(page)
    enabled = open_installed(page)
    for name in ("sd-webui-keep-me", "sd-webui-drop-me"):
        expect(enabled.get_by_label(name)).to_be_checked()
    enabled.get_by_label("sd-webui-drop-me").uncheck()

    page.locator("#extensions_apply").click()
    expect(page.locator(".toast-body", has_text="Restarting the UI")).to_contain_text("(1 disabled extension)")
    assert disabled_extensions(webui) == ["sd-webui-drop-me"]
    rows = page.locator("#extensions_installed_html tr", has_text="sd-webui-drop-me")
    expect(rows).to_contain_text("disabled")


# --- the same rule through the handlers and the tab's wiring (no browser) ------------------------------------------
def test_apply_leaves_unlisted_extensions_as_they_were(tmp_path):
    import gradio as gr

    from test_extensions_tab import fake_services
    from webui.ui import extensions_tab as tab

    services = fake_services(tmp_path)
    for name in ("one", "two", "three"):
        services.extensions.install(str(make_extension_repo(tmp_path / "sources", name, README)))
    services.options.update({"disabled_extensions": ["three"]})

    # a page that listed only "one" (two and three came later, or three was not shown): nothing else changes
    tab.apply_and_restart(services, ["one"], ["one"])
    assert services.options.get("disabled_extensions") == ["three"]
    # listed and unticked: disabled; listed and ticked: enabled again
    tab.apply_and_restart(services, ["three"], ["one", "two", "three"])
    assert services.options.get("disabled_extensions") == ["one", "two"]

    # the tab's wiring: showing the tab (the page presses tab_shown_extensions) lists what is installed now, and
    # the names listed go with Apply
    with gr.Blocks() as blocks:
        from webui.ui import tab_events
        built = tab.build_extensions_tab(services)
        tab_events.render_buttons()
    shown = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "tab_shown_extensions")
    event = next(fn for fn in blocks.fns.values() if (shown._id, "click") in map(tuple, fn.targets))
    # the page listed "one" and the user ticked it (saved: disabled): the tick stays; the others as saved
    values = dict(zip(event.outputs, event.fn(["one"], ["one"])))
    assert [value for _, value in values[built.enabled].choices] == ["one", "three", "two"]
    assert values[built.enabled].value == ["one", "three"]
    listed = next(output for output in event.outputs if isinstance(output, gr.State))
    assert values[listed] == ["one", "three", "two"] and "wildcard file" in values[built.problems]
    apply = next(fn for fn in blocks.fns.values() if (built.apply._id, "click") in map(tuple, fn.targets))
    assert listed in apply.inputs
