"""The Extensions tab (as A1111's): Installed (git state, enable checkboxes, Apply and restart UI, check for
updates, update, uninstall, the problems extensions had in this run), Available (the extension index: search,
tags, sort, install) and Install from URL. Handlers are plain functions of `services`; everything from the
index or a repository is escaped before it becomes HTML. Installing, updating and checking for updates show what
they are doing as Gradio progress on their output ("Cloning URL …", "Running install.py of NAME …"); failures are
notices with the message."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ..extensions.index import (DEFAULT_HIDDEN_TAGS, DEFAULT_INDEX_URL, INSTALLED_TAG, SORT_ORDERS, ExtensionIndex,
                                ExtensionIndexError, filter_entries, load_index)
from ..extensions.manager import ExtensionError
from . import notices, tab_events

CSS = """
.extensions-table { width: 100%; border-collapse: collapse; font-size: .92em; }
.extensions-table th, .extensions-table td { text-align: left; padding: 3px 8px; vertical-align: top;
                                             border-bottom: 1px solid var(--border-color-primary); }
.extensions-table .disabled td { opacity: .55; }
.extensions-table .behind, .extensions-table .status-error { color: var(--error-text-color, #d00); }
.extensions-table .installed-marker { font-weight: 600; }
.extensions-table pre { white-space: pre-wrap; font-size: .85em; max-height: 24em; overflow: auto; }
.extensions-note { padding: 4px 8px; border-radius: 6px; background: var(--block-background-fill); }
"""

# After "Apply and restart UI": wait for the server to go away (at most 5 s), then for it to answer, then reload.
RELOAD_JS = """
(restarting) => {
  if (!restarting) return [];
  document.body.style.opacity = '0.4';
  const started = Date.now();
  let wentDown = false;
  const ping = () => fetch(location.href, {cache: 'no-store'}).then((r) => r.ok, () => false).then((up) => {
    if (!up) wentDown = true;
    if (up && (wentDown || Date.now() - started > 5000)) location.reload();
    else setTimeout(ping, 500);
  });
  setTimeout(ping, 500);
  return [];
}
"""

UNINSTALL_CONFIRM_JS = """
(name, _confirmed) => [name, !!name && confirm(`Uninstall ${name}? Its folder will be deleted.`)]
"""

NO_INDEX_HTML = '<p class="extensions-note">Press "Load from:" to read the extension index.</p>'
_STATUS_TEXT = {"latest": "latest", "behind": "behind HEAD (update available)", "unknown": "unknown"}


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _link(url: str, text: str | None = None) -> str:
    shown = _esc(text if text is not None else url)
    if url.lower().startswith(("https://", "http://")):
        return f'<a href="{_esc(url)}" target="_blank" rel="noopener noreferrer">{shown}</a>'
    return shown


ProgressSink = Callable[..., object]  # gr.Progress, or anything called as sink(fraction, desc=text)


def _steps(progress: ProgressSink | None):
    """The manager's `on_step(text, fraction)` shown through `progress` (default: Gradio's, on the outputs)."""
    sink = progress if progress is not None else gr.Progress()
    return lambda text, fraction: sink(fraction, desc=f"{text} …")


def _report(exc: BaseException) -> None:
    if isinstance(exc, (ExtensionError, ExtensionIndexError)):
        notices.warn(str(exc))
    else:
        notices.report(exc)


def _refused(services) -> str:
    """A1111's refusal message when extension access is off, else ""."""
    message = services.extensions.access_message()
    if message:
        notices.warn(message)
    return message


# --- Installed ----------------------------------------------------------------------------------------------------
def installed_html(services) -> str:
    extensions = services.extensions.list()
    notes = []
    if getattr(services.flags, "disable_all_extensions", False):
        notes.append("--disable-all-extensions: no extension is loaded in this run (they stay installed).")
    if not extensions:
        notes.append(f"No extensions installed in {services.extensions.extensions_dir}.")
    rows = []
    for ext in extensions:
        status = ext.version_status
        status_class = "behind" if status == "behind" else "status-error" if status.startswith("error") else ""
        rows.append(
            f'<tr class="{"" if ext.enabled else "disabled"}"><td>{_esc(ext.name)}</td>'
            f"<td>{_link(ext.remote) if ext.remote else ('' if ext.is_git else 'not a git repository')}</td>"
            f"<td>{_esc(ext.branch)}</td><td>{_esc(ext.commit)}</td><td>{_esc(ext.commit_date)}</td>"
            f'<td class="{status_class}">{_esc(_STATUS_TEXT.get(status, status))}</td>'
            f'<td>{"enabled" if ext.enabled else "disabled"}</td></tr>')
    table = ("" if not rows else '<table class="extensions-table"><thead><tr><th>Extension</th><th>URL</th>'
             "<th>Branch</th><th>Version</th><th>Date</th><th>Update</th><th>State</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    return "".join(f'<p class="extensions-note">{_esc(n)}</p>' for n in notes) + table


def problems_html(services) -> str:
    log = getattr(services, "extension_problems", None)
    problems = log.all() if log is not None else []
    if not problems:
        return '<p class="extensions-note">No extension reported a problem in this run.</p>'
    rows = []
    for p in reversed(problems):  # newest first
        trace = (f"<details><summary>traceback</summary><pre>{_esc(p.traceback)}</pre></details>"
                 if p.traceback else "")
        when = time.strftime("%H:%M:%S", time.localtime(p.when))
        rows.append(f"<tr><td>{when}</td><td>{_esc(p.extension or '?')}</td><td>{_esc(p.where)}</td>"
                    f"<td>{_esc(p.message)}{trace}</td></tr>")
    return ('<table class="extensions-table"><thead><tr><th>Time</th><th>Extension</th><th>Where</th>'
            f"<th>Problem</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def installed_outputs(services) -> tuple:
    """(table, enabled checkboxes, the update/uninstall picker) as they are now."""
    extensions = services.extensions.list()
    names = [e.name for e in extensions]
    return (installed_html(services),
            gr.CheckboxGroup(choices=names, value=[e.name for e in extensions if e.enabled]),
            gr.Dropdown(choices=names, value=None))


def with_listed(outputs: tuple, box_index: int) -> tuple:
    """`outputs` and, after them, the names the enabled checkboxes among them (at `box_index`) now list, for the
    page's `listed` state that Apply reads (skipped when the checkboxes are)."""
    box = outputs[box_index]
    if isinstance(box, gr.CheckboxGroup):
        return (*outputs, [value for _, value in box.choices])
    return (*outputs, gr.skip())


def disabled_after_apply(current: list[str], listed: list[str], enabled: list[str]) -> list[str]:
    """What "Apply" leaves disabled: of the extensions the page listed, those the user unticked; every other one
    keeps its state. An extension installed since the page's list was made (not listed) stays enabled, and one
    disabled but not listed stays disabled: Apply never disables what the user could not see."""
    shown, ticked = set(listed), set(enabled)
    return [n for n in current if n not in shown] + [n for n in listed if n not in ticked]


def apply_and_restart(services, enabled: list[str] | None, listed: list[str] | None = None) -> tuple:
    """Save the extensions the page listed (`listed`; None: every installed one) but the user unticked as
    `disabled_extensions` and restart the UI. Returns (table, restarting)."""
    if _refused(services):
        return gr.skip(), False
    manager = services.extensions
    try:
        listed = manager.names() if listed is None else list(listed)
        current = list(manager.options.get("disabled_extensions") or [])
        disabled = manager.set_disabled(disabled_after_apply(current, listed, list(enabled or [])))
        services.restart()
    except Exception as exc:  # noqa: BLE001 - the config cannot be written, or the restart failed to start
        _report(exc)
        return installed_html(services), False
    notices.info(f"Restarting the UI ({len(disabled)} disabled extension{'s' if len(disabled) != 1 else ''})")
    return installed_html(services), True


def check_for_updates(services, progress: ProgressSink | None = None) -> str:
    if _refused(services):
        return gr.skip()
    try:
        results = services.extensions.check_updates(on_step=_steps(progress))
    except Exception as exc:  # noqa: BLE001 - git missing
        _report(exc)
        return installed_html(services)
    behind = sorted(name for name, status in results.items() if status == "behind")
    failed = sorted(name for name, status in results.items() if status.startswith("error"))
    message = f"Updates available: {', '.join(behind)}" if behind else "All extensions are up to date"
    notices.info(message + (f"; could not check {', '.join(failed)}" if failed else ""))
    return installed_html(services)


def update_extension(services, name: str | None, progress: ProgressSink | None = None) -> str:
    if _refused(services):
        return gr.skip()
    try:
        notices.info(services.extensions.update(name or "", on_step=_steps(progress)))
    except Exception as exc:  # noqa: BLE001 - not installed, not git, cannot fast-forward, offline
        _report(exc)
    return installed_html(services)


def uninstall_extension(services, name: str | None, confirmed: bool = False) -> tuple:
    """Remove an extension's folder once the page's confirm() said yes. Returns installed_outputs()."""
    if _refused(services):
        return gr.skip(), gr.skip(), gr.skip()
    if not name:
        notices.warn("Choose an installed extension")
        return gr.skip(), gr.skip(), gr.skip()
    if not confirmed:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        services.extensions.uninstall(name)
    except Exception as exc:  # noqa: BLE001 - no longer installed, or the folder cannot be removed
        _report(exc)
        return installed_outputs(services)
    notices.info(f"Uninstalled {name}. Press \"Apply and restart UI\" to unload it.")
    return installed_outputs(services)


def refresh_listing(services, enabled: list[str] | None = None, listed: list[str] | None = None) -> tuple:
    """The tab shown, or 🔄: (table, checkboxes, picker, the names listed, problems), re-read. A tick the user
    changed on an extension the page already listed (`listed`, ticked now: `enabled`) is kept; the others show
    their saved state (a newly installed extension: ticked)."""
    extensions = services.extensions.list()
    names = [e.name for e in extensions]
    shown, ticked = set(listed or []), set(enabled or [])
    value = [e.name for e in extensions if (e.name in ticked if e.name in shown else e.enabled)]
    return (installed_html(services), gr.CheckboxGroup(choices=names, value=value),
            gr.Dropdown(choices=names, value=None), names, problems_html(services))


# --- Install (from the index or a URL) ----------------------------------------------------------------------------
def _install(services, url: str, branch: str = "", dirname: str = "", progress: ProgressSink | None = None) -> str:
    """The text for the output box: install.py's output and what happened (errors are also a notice)."""
    refused = _refused(services)
    if refused:
        return refused
    try:
        report = services.extensions.install(url or "", branch or "", dirname or "", on_step=_steps(progress))
    except Exception as exc:  # noqa: BLE001 - bad name, clone failed, install.py failed
        _report(exc)
        problems = getattr(services, "extension_problems", None)
        if getattr(exc, "extension", None) and problems is not None:  # the install guard refused it: listed too
            problems.report(exc.extension, "install.py", exc)
        return str(exc)
    done = f"Installed into {report.path}. Press \"Apply and restart UI\" (Installed tab) to load it."
    notices.info(f"Installed {report.name}")
    for notice in report.notices:  # the install guard left an optional extra out
        notices.warn(notice)
    done = "\n".join([*report.notices, done])
    return f"{report.output.rstrip()}\n\n{done}" if report.output.strip() else done


def install_from_url(services, url: str, branch: str, dirname: str, progress: ProgressSink | None = None) -> tuple:
    """Install from URL: (output box, *installed_outputs())."""
    return (_install(services, url, branch, dirname, progress), *installed_outputs(services))


def _installed_remotes(services) -> set[str]:
    try:
        return set(services.extensions.remotes().values())
    except ExtensionError:  # git missing: nothing can be marked
        return set()


def available_html(services, index: ExtensionIndex | None, query: str, hide_tags, sort: str) -> tuple:
    """(results table, the install picker) for the loaded index."""
    if index is None:
        return NO_INDEX_HTML, gr.Dropdown(choices=[], value=None)
    entries = filter_entries(index, query or "", hide_tags or [], _installed_remotes(services), sort)
    rows = []
    for e in entries:
        marker = ' <span class="installed-marker">(installed)</span>' if e.installed else ""
        rows.append(f"<tr><td>{_link(e.url, e.name)}{marker}</td><td>{_esc(e.description)}</td>"
                    f"<td>{_esc(', '.join(e.tags))}</td><td>{_esc(e.added)}</td><td>{e.stars}</td></tr>")
    summary = f'<p class="extensions-note">{len(entries)} of {len(index.entries)} extensions shown.</p>'
    table = ('<table class="extensions-table"><thead><tr><th>Extension</th><th>Description</th><th>Tags</th>'
             f"<th>Added</th><th>Stars</th></tr></thead><tbody>{''.join(rows)}</tbody></table>") if rows else ""
    choices = [(e.name, e.url) for e in entries if not e.installed]
    return summary + table, gr.Dropdown(choices=choices, value=None)


def _hides_dirs(services) -> bool:
    return bool(getattr(getattr(services, "flags", None), "hide_ui_dir_config", False))


def load_available(services, url: str, query: str, hide_tags, sort: str) -> tuple:
    """"Load from:": (index state, hide-tags choices, results table, install picker); offline is a notice. Under
    --hide-ui-dir-config only the server's own index address is read (the field also takes a local path or a
    file:// URL, which would read the server's files)."""
    url = (url or "").strip() or DEFAULT_INDEX_URL
    if _hides_dirs(services) and url != DEFAULT_INDEX_URL:
        message = (f"The extension index address cannot be changed: this server runs with --hide-ui-dir-config "
                   f"(it reads only {DEFAULT_INDEX_URL})")
        notices.warn(message)
        return None, gr.skip(), f'<p class="extensions-note">{_esc(message)}</p>', gr.Dropdown(choices=[], value=None)
    try:
        index = load_index(url)
    except ExtensionIndexError as exc:
        notices.warn(str(exc))
        return None, gr.skip(), f'<p class="extensions-note">{_esc(exc)}</p>', gr.Dropdown(choices=[], value=None)
    tags = sorted(set(index.tags) | {t for e in index.entries for t in e.tags} | {INSTALLED_TAG})
    table, picker = available_html(services, index, query, hide_tags, sort)
    return index, gr.CheckboxGroup(choices=tags, value=[t for t in hide_tags or [] if t in tags]), table, picker


def install_from_index(services, index: ExtensionIndex | None, url: str | None, query: str, hide_tags,
                       sort: str, progress: ProgressSink | None = None) -> tuple:
    """Install the chosen index entry: (output box, results table, install picker, *installed_outputs())."""
    if not url:
        notices.warn("Choose an extension from the list to install")
        return (gr.skip(),) * 6
    known = index is not None and any(e.url == url for e in index.entries)
    output = _install(services, url, progress=progress) if known else "Choose an extension from the loaded index"
    return (output, *available_html(services, index, query, hide_tags, sort), *installed_outputs(services))


# --- layout -------------------------------------------------------------------------------------------------------
@dataclass
class ExtensionsTab:
    installed_html: gr.HTML
    enabled: gr.CheckboxGroup
    apply: gr.Button
    check: gr.Button
    refresh: gr.Button
    chosen: gr.Dropdown
    update: gr.Button
    uninstall: gr.Button
    problems: gr.HTML
    index_url: gr.Textbox
    load_index: gr.Button
    search: gr.Textbox
    hide_tags: gr.CheckboxGroup
    sort: gr.Radio
    available_html: gr.HTML
    available_choice: gr.Dropdown
    available_install: gr.Button
    available_result: gr.Textbox
    install_url: gr.Textbox
    install_branch: gr.Textbox
    install_dirname: gr.Textbox
    install_button: gr.Button
    install_result: gr.Textbox


def build_extensions_tab(services) -> ExtensionsTab:
    """The tab's content; call inside `with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions")`."""
    refused = services.extensions.access_message()
    allowed = not refused
    if refused:
        gr.HTML(f'<p class="extensions-note">{_esc(refused)}</p>', elem_id="extensions_access_note")
    extensions = services.extensions.list()  # (no installed_outputs() here: updates made in a Blocks render)
    names = [e.name for e in extensions]
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="extensions_installed_tab", elem_id="extensions_installed_tab"):
            with gr.Row():
                apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply",
                                  interactive=allowed)
                check = gr.Button("Check for updates", elem_id="extensions_check", interactive=allowed)
                refresh = gr.Button("🔄", elem_id="extensions_refresh", elem_classes="tool-button", scale=0,
                                    min_width=40)
            installed = gr.HTML(installed_html(services), elem_id="extensions_installed_html")
            enabled = gr.CheckboxGroup(choices=names, value=[e.name for e in extensions if e.enabled],
                                       label="Enabled extensions (applied by \"Apply and restart UI\")",
                                       elem_id="extensions_enabled")
            with gr.Row():
                chosen = gr.Dropdown(choices=names, value=None, label="Extension",
                                     elem_id="extensions_chosen", scale=3)
                update = gr.Button("Update", elem_id="extensions_update", interactive=allowed, scale=1)
                uninstall = gr.Button("Uninstall", variant="stop", elem_id="extensions_uninstall",
                                      interactive=allowed, scale=1)
            problems = gr.HTML(problems_html(services), label="Problems", elem_id="extensions_problems")
            restarting = gr.Checkbox(False, visible="hidden", elem_id="extensions_restarting")
            listed = gr.State(names)  # what the checkboxes list on this page: Apply disables only those unticked
            confirmed = gr.Checkbox(False, visible="hidden", elem_id="extensions_uninstall_confirmed")
        with gr.Tab("Available", id="extensions_available_tab", elem_id="extensions_available_tab"):
            with gr.Row():
                load = gr.Button("Load from:", variant="primary", elem_id="extensions_load_index", scale=0,
                                 min_width=120)
                index_url = gr.Textbox(DEFAULT_INDEX_URL, show_label=False, container=False,
                                       elem_id="extensions_index_url", scale=5, interactive=not _hides_dirs(services))
            with gr.Row():
                hide_tags = gr.CheckboxGroup(choices=list(DEFAULT_HIDDEN_TAGS), value=list(DEFAULT_HIDDEN_TAGS),
                                             label="Hide extensions with tags", elem_id="extensions_hide_tags")
                sort = gr.Radio(list(SORT_ORDERS), value=SORT_ORDERS[0], label="Order",
                                elem_id="extensions_sort")
            search = gr.Textbox(label="Search", elem_id="extensions_search")
            with gr.Row():
                available_choice = gr.Dropdown(choices=[], value=None, label="Extension to install",
                                               elem_id="extensions_available_choice", scale=3)
                available_install = gr.Button("Install", variant="primary", elem_id="extensions_available_install",
                                              interactive=allowed, scale=1)
            available_result = gr.Textbox(label="Result", lines=3, interactive=False,
                                          elem_id="extensions_available_result")
            available = gr.HTML(NO_INDEX_HTML,
                                elem_id="extensions_available_html")
            index_state = gr.State(None)
        with gr.Tab("Install from URL", id="extensions_install_tab", elem_id="extensions_install_tab"):
            url = gr.Textbox(label="URL for extension's git repository", elem_id="install_url")
            branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for default main branch",
                                elem_id="install_branch")
            dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                                 elem_id="install_dirname")
            install = gr.Button("Install", variant="primary", elem_id="install_button", interactive=allowed)
            result = gr.Textbox(label="Result", lines=6, interactive=False, elem_id="install_result")

    tab = ExtensionsTab(installed, enabled, apply, check, refresh, chosen, update, uninstall, problems, index_url,
                        load, search, hide_tags, sort, available, available_choice, available_install,
                        available_result, url, branch, dirname, install, result)
    _wire(tab, services, restarting, confirmed, index_state, listed)
    return tab


def _wire(tab: ExtensionsTab, services, restarting: gr.Checkbox, confirmed: gr.Checkbox,
          index_state: gr.State, listed: gr.State) -> None:
    listing = [tab.installed_html, tab.enabled, tab.chosen, listed]  # installed_outputs() + with_listed
    quiet = {"api_visibility": "undocumented"}
    # The list is rebuilt whenever the tab is shown (the page presses `tab_shown_extensions` after the switch):
    # a page opened before an install, or kept open across one, lists what is installed now.
    tab_events.on_shown("extensions").click(lambda enabled, names: refresh_listing(services, enabled, names),
                                            inputs=[tab.enabled, listed], outputs=[*listing, tab.problems],
                                            show_progress="hidden",
                                            concurrency_limit=None, **quiet)
    tab.apply.click(lambda enabled, names: apply_and_restart(services, enabled, names), inputs=[tab.enabled, listed],
                    outputs=[tab.installed_html, restarting], **quiet).then(
        None, inputs=[restarting], js=RELOAD_JS, **quiet)
    tab.check.click(lambda: check_for_updates(services), outputs=[tab.installed_html], show_progress="full",
                    **quiet)
    tab.refresh.click(lambda: refresh_listing(services), outputs=[*listing, tab.problems],
                      show_progress="hidden", **quiet)
    tab.update.click(lambda name: update_extension(services, name), inputs=[tab.chosen],
                     outputs=[tab.installed_html], show_progress="full", **quiet)
    tab.uninstall.click(lambda name, yes: with_listed(uninstall_extension(services, name, yes), 1),
                        inputs=[tab.chosen, confirmed], outputs=listing, js=UNINSTALL_CONFIRM_JS, **quiet)

    filters = [index_state, tab.search, tab.hide_tags, tab.sort]
    tab.load_index.click(lambda url, query, hidden, order: load_available(services, url, query, hidden, order),
                         inputs=[tab.index_url, tab.search, tab.hide_tags, tab.sort],
                         outputs=[index_state, tab.hide_tags, tab.available_html, tab.available_choice],
                         show_progress="full", **quiet)
    for trigger in (tab.search.input, tab.hide_tags.input, tab.sort.input):
        trigger(lambda index, query, hidden, order: available_html(services, index, query, hidden, order),
                inputs=filters, outputs=[tab.available_html, tab.available_choice], show_progress="hidden",
                trigger_mode="always_last", **quiet)
    tab.available_install.click(
        lambda index, url, query, hidden, order: with_listed(
            install_from_index(services, index, url, query, hidden, order), -2),
        inputs=[index_state, tab.available_choice, tab.search, tab.hide_tags, tab.sort],
        outputs=[tab.available_result, tab.available_html, tab.available_choice, *listing], show_progress="full",
        **quiet)
    tab.install_button.click(lambda url, branch, dirname: with_listed(install_from_url(services, url, branch, dirname),
                                                                      -2),
                             inputs=[tab.install_url, tab.install_branch, tab.install_dirname],
                             outputs=[tab.install_result, *listing], show_progress="full", **quiet)
