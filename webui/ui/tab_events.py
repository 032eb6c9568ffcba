"""Server work a top tab needs when it is shown or left, started by the page only after the switch has painted.

Why not `gr.Tab.select` / `gr.Tabs.select`: in the installed Gradio every server event costs the page's main thread
a few hundred milliseconds on a page this size, and a select listener runs that inside the tab click, before the
new tab is drawn (History took up to 2 s to appear, every other tab ~0.2 s because of a listener on the whole
tab bar). Here the page script watches which top tab is selected (clicks and programmatic switches alike) and,
one frame after the tab is drawn, presses hidden buttons: `tab_shown_<id>` for the tab now shown, `tab_left_<id>`
for the one left. Only tabs that asked for one have such a button, so switching between the others sends nothing.

    shown = tab_events.on_shown("history")   # a hidden button; wire `shown.click(...)` like any button
    ...
    tab_events.render_buttons()              # once, in the Blocks, outside the Tabs (blocks.py does)

The buttons live outside the tabs because Gradio mounts a tab's components only when it is first shown.
"""
from __future__ import annotations

import gradio as gr
from gradio.context import Context

_PENDING: dict[int, list[gr.Button]] = {}  # id(Blocks being built) -> its hidden buttons, rendered by render_buttons


def _button(elem_id: str) -> gr.Button:
    button = gr.Button(visible="hidden", elem_id=elem_id, render=False)
    _PENDING.setdefault(id(Context.root_block), []).append(button)
    return button


def on_shown(tab_id: str) -> gr.Button:
    """A hidden button the page presses after the top tab `tab_id` is shown (also on page load when it is)."""
    return _button(f"tab_shown_{tab_id}")


def on_left(tab_id: str) -> gr.Button:
    """A hidden button the page presses after another top tab replaced `tab_id`."""
    return _button(f"tab_left_{tab_id}")


def render_buttons() -> None:
    """Render the hidden buttons made while this Blocks was built (call inside it, outside every Tabs)."""
    for button in _PENDING.pop(id(Context.root_block), []):
        button.render()


CSS = ""

# Page script (runs once on load, inside assets.JS's function): watch the top tab bar's `aria-selected`.
SCRIPT = """
  (() => {
    let current = null;
    const press = (id) => document.getElementById(id)?.click();
    const selectedTab = () =>
      document.querySelector('#tabs > .tab-wrapper button[role=tab][aria-selected=true]')?.dataset.tabId ?? null;
    const check = () => {
      const now = selectedTab();
      if (now === null || now === current) return;
      const left = current;
      current = now;
      // after the new tab has been drawn: the server round trip never delays the switch
      requestAnimationFrame(() => setTimeout(() => {
        if (left !== null) press(`tab_left_${left}`);
        press(`tab_shown_${now}`);
      }, 0));
    };
    const watch = () => {
      const bar = document.querySelector('#tabs > .tab-wrapper');
      if (bar === null) return setTimeout(watch, 200);
      new MutationObserver(check).observe(bar, {subtree: true, childList: true, attributes: true,
                                                attributeFilter: ['aria-selected']});
      check();
    };
    watch();
  })();
"""
