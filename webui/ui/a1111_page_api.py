"""A1111's page JavaScript API, for extensions' page scripts (their `javascript/*.js`), as A1111 1.10's `script.js`,
`ui.js`, `hints.js` and `localization.js` define it: `gradioApp()`, `onUiLoaded`, `onUiUpdate`, `onAfterUiUpdate`,
`onUiTabChange`, `onOptionsChanged`, `onOptionsAvailable`, `executeCallbacks`, `get_uiCurrentTab(Content)`,
`get_tab_index`, `uiElementIsVisible`, `uiElementInSight`, `updateInput`, `opts`, `titles`, `localization` /
`getTranslation`, `args_to_array`, `switch_to_*`, `selected_gallery_index`.

`SCRIPT` goes first in the page's <head> (`extensions.routes.extension_assets`), before the extensions' scripts.
Gradio 6 puts <head> scripts into the page after the document has loaded, so the `DOMContentLoaded` and `load`
listeners an extension's script adds while it runs are called once all scripts have run (DOMContentLoaded before
the UI is drawn, `load` after), as they would be in A1111.

Gradio 6 has no shadow root: `gradioApp()` is the `<gradio-app>` element (A1111 1.10 does the same when there is
none), a real node extensions can observe. Its `getElementById` / `querySelector(All)` search the whole document,
and a selector written for Gradio 3's markup that finds nothing is tried once more rewritten for Gradio 6's
(`#id > label > textarea`: Gradio 6 puts the textarea one level deeper; `.tab-nav`: the tab bar).

`opts` is A1111's: every option's value, from the hidden `settings_json` textbox (`build`), which the page's load
event fills (`wire`), as do Settings' Apply and every quicksetting once saved; `onOptionsChanged` callbacks run
then. `onUiLoaded` callbacks run once the UI is drawn (`#txt2img_prompt` exists) and `opts` is filled;
`onUiUpdate(mutations)` on every change of the UI's DOM, `onAfterUiUpdate` 200 ms after the last one,
`onUiTabChange` when the main tab changes (and once on load). A callback that throws is logged to the console
and the others still run.

With extensions' scripts in the page, two differences of Gradio 6 are smoothed over: it draws a tab when first
shown (A1111's page has them all), so img2img and Settings are shown once before the onUiLoaded callbacks run
(their scripts look for `#img2img_prompt`, `#settings_submit`, ...); and it pads buttons' labels with a space,
which is emptied so that `button.textContent` is the label.
"""
from __future__ import annotations

import json

import gradio as gr

SETTINGS_JSON_ID = "settings_json"


def options_json(services) -> str:
    """A1111's `opts.dumpjson()`: every option's current value (its default when unset). A folder option that
    `--hide-ui-dir-config` locks is left out, as the Settings tab hides it."""
    options = services.options
    values = options.as_dict()
    data = {key: values.get(key, spec.default) for key, spec in options.specs.items() if not options.locked(key)}
    for key, value in values.items():
        if key not in data and not options.locked(key):
            data[key] = value
    return json.dumps(data, default=str)


A1111_API_VERSION = "v1.10.1"  # the A1111 release whose extension API the `modules` shim and this script follow


def build() -> gr.Textbox:
    """The hidden `settings_json` textbox (in the Blocks, outside the tabs: rendered from the start). Empty until
    the load event fills it, so `opts` never holds a value older than the page."""
    textbox = gr.Textbox("", visible="hidden", elem_id=SETTINGS_JSON_ID, interactive=False, show_label=False,
                         container=False)
    # A1111's footer names its version; extensions read it there to pick the API they call (Civitai Helper). It
    # names the A1111 version whose extension API this web UI follows, and is not shown.
    gr.HTML(f'<div class="versions">version: <a>{A1111_API_VERSION}</a></div>', elem_id="footer",
            visible="hidden")
    return textbox


def wire(settings_json: gr.Textbox, services, blocks: gr.Blocks, after: list) -> None:
    """Fill `settings_json` on page load and after each event in `after` (Settings' Apply, quicksettings' saves)."""
    def current() -> str:
        return options_json(services)

    blocks.load(current, outputs=[settings_json], show_progress="hidden", queue=False,
                api_visibility="undocumented")
    for event in after:
        event.then(current, outputs=[settings_json], show_progress="hidden", queue=False,
                   api_visibility="undocumented")


# A classic script (its functions and `var`s are the page's globals, as in A1111).
SCRIPT = r"""
var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var uiLoadedCallbacks = [];
var uiTabChangeCallbacks = [];
var optionsChangedCallbacks = [];
var optionsAvailableCallbacks = [];
var uiAfterUpdateTimeout = null;
var uiCurrentTab = null;
var executedOnLoaded = false;
var opts = {};
var titles = {};
var localization = {};

// Gradio 3 markup (A1111 1.10's Gradio) -> Gradio 6's, for selectors that find nothing as written.
var a1111SelectorRewrites = [
  [/>\s*label\s*>\s*(textarea|input|select)\b/g, '> label $1'],
  [/>\s*\.tab-nav\b/g, '> .tab-wrapper > [role=tablist]'],
  [/\.tab-nav\b/g, '[role=tablist]'],
];

function a1111Selector(selector) {
  let rewritten = String(selector);
  for (const [pattern, replacement] of a1111SelectorRewrites) rewritten = rewritten.replace(pattern, replacement);
  return rewritten;
}

function gradioApp() {
  const app = document.getElementsByTagName('gradio-app')[0];
  if (!app) return document;
  if (app.shadowRoot) return app.shadowRoot;
  if (!app.a1111PageApi) {
    app.a1111PageApi = true;
    app.getElementById = (id) => document.getElementById(id);
    app.querySelector = (selector) => {
      const found = document.querySelector(selector);
      if (found !== null) return found;
      const rewritten = a1111Selector(selector);
      return rewritten === selector ? null : document.querySelector(rewritten);
    };
    app.querySelectorAll = (selector) => {
      const found = document.querySelectorAll(selector);
      if (found.length) return found;
      const rewritten = a1111Selector(selector);
      return rewritten === selector ? found : document.querySelectorAll(rewritten);
    };
  }
  return app;
}

function get_uiCurrentTab() {
  return document.querySelector('#tabs > .tab-wrapper [role=tablist] > button[aria-selected=true]')
    || document.querySelector('#tabs button.selected');
}

function get_uiCurrentTabContent() {
  const button = get_uiCurrentTab();
  const id = button && button.getAttribute('aria-controls');
  return (id && document.getElementById(id))
    || document.querySelector('#tabs > .tabitem[id^=tab_]:not([style*="display: none"])');
}

function get_tab_index(tabId) {
  const tabs = document.getElementById(tabId);
  if (!tabs) return 0;
  const buttons = [...tabs.querySelectorAll(':scope > .tab-wrapper [role=tablist] > button')];
  const index = buttons.findIndex((button) => button.getAttribute('aria-selected') === 'true');
  return index < 0 ? 0 : index;
}

function onUiUpdate(callback) { uiUpdateCallbacks.push(callback); }
function onAfterUiUpdate(callback) { uiAfterUpdateCallbacks.push(callback); }
function onUiTabChange(callback) { uiTabChangeCallbacks.push(callback); }
function onOptionsChanged(callback) { optionsChangedCallbacks.push(callback); }

function onUiLoaded(callback) {
  uiLoadedCallbacks.push(callback);
  if (executedOnLoaded) setTimeout(() => executeCallbacks([callback]), 0);  // a script that came late
}

function onOptionsAvailable(callback) {
  if (Object.keys(opts).length !== 0) { callback(); return; }
  optionsAvailableCallbacks.push(callback);
}

function executeCallbacks(queue, arg) {
  for (const callback of queue) {
    try {
      callback(arg);
    } catch (error) {
      console.error('error running callback', callback, ':', error);
    }
  }
}

function uiElementIsVisible(el) {
  if (el === document || !el) return true;
  if (el.nodeType === Node.ELEMENT_NODE && getComputedStyle(el).display === 'none') return false;
  return uiElementIsVisible(el.parentNode);
}

function uiElementInSight(el) {
  const rect = el.getBoundingClientRect();
  return rect.bottom > 0 && rect.top < window.innerHeight;
}

// A value set from JS reaches Gradio as if typed: Gradio's inputs listen to `input` (checkboxes to `change`).
function updateInput(target) {
  const input = new Event('input', {bubbles: true});
  Object.defineProperty(input, 'target', {value: target});
  target.dispatchEvent(input);
  const change = new Event('change', {bubbles: true});
  Object.defineProperty(change, 'target', {value: target});
  target.dispatchEvent(change);
}

function args_to_array(args) { return Array.from(args); }

function getTranslation(text) {
  if (!text) return undefined;
  return localization[text];
}

function selected_gallery_index() {
  const gallery = get_uiCurrentTabContent()?.querySelector('.gradio-gallery, [id$=_gallery]');
  const buttons = gallery ? [...gallery.querySelectorAll('.thumbnails > button, .thumbnail-item')] : [];
  return buttons.findIndex((button) => button.classList.contains('selected'));
}

function a1111ClickTopTab(id) {
  document.querySelector(`#tabs > .tab-wrapper [role=tablist] > button[data-tab-id="${id}"]`)?.click();
}

function switch_to_txt2img() { a1111ClickTopTab('txt2img'); return Array.from(arguments); }
function switch_to_extras() { a1111ClickTopTab('extras'); return Array.from(arguments); }
function switch_to_img2img_tab(number) {
  a1111ClickTopTab('img2img');
  document.querySelectorAll('#mode_img2img > .tab-wrapper [role=tablist] > button')[number]?.click();
}
function switch_to_img2img() { switch_to_img2img_tab(0); return Array.from(arguments); }
function switch_to_sketch() { switch_to_img2img_tab(1); return Array.from(arguments); }
function switch_to_inpaint() { switch_to_img2img_tab(2); return Array.from(arguments); }
function switch_to_inpaint_sketch() { switch_to_img2img_tab(3); return Array.from(arguments); }

// --- the page's life: options, load, updates, tab changes ---------------------------------------------------------
(() => {
  let settingsText = null;

  let pendingOptions = null;  // the options that came before the tabs were drawn (published once they are)

  const readOptions = (text) => {
    if (!text || text === settingsText) return false;
    if (!drawn) {  // scripts that wait for `opts` find every drawn tab's elements by then (aspect-ratio-helper)
      pendingOptions = text;
      return true;
    }
    let parsed;
    try { parsed = JSON.parse(text); } catch (error) { return false; }
    const first = Object.keys(opts).length === 0;
    settingsText = text;
    opts = parsed;
    if (first) executeCallbacks(optionsAvailableCallbacks);
    executeCallbacks(optionsChangedCallbacks);
    return true;
  };

  const watchSettings = () => {  // the textbox's value, whenever Gradio sets it (as A1111's ui.js watches it)
    const area = document.querySelector('#settings_json textarea');
    if (!area) return;
    if (!area.a1111Watched) {
      area.a1111Watched = true;
      const property = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value');
      Object.defineProperty(area, 'value', {
        configurable: true,
        get() { return property.get.call(area); },
        set(value) {
          property.set.call(area, value);
          if (readOptions(property.get.call(area))) checkLoaded();
        },
      });
    }
    readOptions(area.value);
  };

  // Gradio 6 draws a tab's content when it is first shown; A1111's page has every tab from the start, and scripts
  // look for img2img's and Settings' elements once the UI is loaded. With extensions' scripts in the page, those
  // two tabs and the extensions' own tabs (images-browser sets its tab up in onUiLoaded) are shown once (one after
  // the other, then the first tab again) before the onUiLoaded callbacks run.
  const OWN_TABS = ['txt2img', 'img2img', 'extras', 'pnginfo', 'modelmerger', 'history', 'settings', 'extensions'];
  const eagerTabs = () => ['img2img', 'settings', ...[...document.querySelectorAll(
    '#tabs > .tab-wrapper [role=tablist] > button[data-tab-id]')].map((b) => b.dataset.tabId)
    .filter((id) => !OWN_TABS.includes(id))];
  let drawing = false;
  let drawn = false;
  const tabButton = (id) => document.querySelector(`#tabs > .tab-wrapper [role=tablist] > button[data-tab-id="${id}"]`);
  // an extension's tab may hold tabs of its own (images-browser: one per folder), set up by its script at load
  const drawInnerTabs = async (panel) => {
    const lists = panel ? [...panel.querySelectorAll('[role=tablist]')] : [];
    for (const list of lists) {
      const buttons = [...list.querySelectorAll(':scope > button')];
      for (const button of [...buttons.slice(1), buttons[0]]) {
        if (!button || button.getAttribute('aria-selected') === 'true') continue;
        button.click();
        for (let wait = 0; wait < 100 && button.getAttribute('aria-selected') !== 'true'; wait++) {
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 20)));
      }
    }
  };
  const drawTabs = async () => {
    drawing = true;
    const first = get_uiCurrentTab()?.dataset.tabId;
    for (const id of eagerTabs()) {
      if (document.getElementById(`tab_${id}`) || !tabButton(id)) continue;
      tabButton(id).click();
      for (let wait = 0; wait < 500 && !document.getElementById(`tab_${id}`); wait++) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      if (!OWN_TABS.includes(id)) await drawInnerTabs(document.getElementById(`tab_${id}`));
      // img2img's own sub-tabs (Sketch, Inpaint, ...): scripts look for their image inputs (aspect-ratio-helper)
      if (id === 'img2img') await drawInnerTabs(document.querySelector('#mode_img2img'));
    }
    if (first) tabButton(first)?.click();
    await new Promise((resolve) => setTimeout(resolve, 0));
    drawn = true;
    drawing = false;
    checkLoaded();
  };

  const checkLoaded = () => {
    if (executedOnLoaded || !document.getElementById('txt2img_prompt')) return;
    if (!drawn) {
      if (!document.querySelector('script[data-extension-file]')) drawn = true;
      else if (!drawing) drawTabs();
      if (!drawn) return;
    }
    if (pendingOptions !== null) {
      const text = pendingOptions;
      pendingOptions = null;
      readOptions(text);
      executeCallbacks(uiUpdateCallbacks, []);  // scripts that start from onUiUpdate once `opts` is there
    }
    if (Object.keys(opts).length === 0) return;
    executedOnLoaded = true;
    executeCallbacks(uiLoadedCallbacks);
  };

  const checkTab = () => {
    if (drawing) return;
    const tab = get_uiCurrentTab();
    if (!tab || (uiCurrentTab && tab.dataset.tabId === uiCurrentTab.dataset.tabId)) return;
    uiCurrentTab = tab;
    executeCallbacks(uiTabChangeCallbacks);
  };

  const afterUpdate = () => {
    clearTimeout(uiAfterUpdateTimeout);
    uiAfterUpdateTimeout = setTimeout(() => executeCallbacks(uiAfterUpdateCallbacks), 200);
  };

  const addTitles = (mutations) => {  // A1111's hints.js: `titles[text]` as the tooltip of what shows that text
    if (Object.keys(titles).length === 0) return;
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        for (const el of [node, ...node.querySelectorAll('span, button, select, p')]) {
          if (!el.matches('span, button, select, p') || el.title) continue;
          const tip = titles[el.textContent.trim()] || (el.value && titles[el.value]);
          if (tip) el.title = tip;
        }
      }
    }
  };

  // Gradio 6 pads a button's label with a space ("<!----> <!---->Calc"); scripts match `button.textContent` against
  // labels, as Gradio 3 rendered them. The padding (a text node of its own) is emptied: nothing shows differently.
  const trimButtons = (mutations) => {
    if (!document.querySelector('script[data-extension-file]')) return;
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType !== Node.ELEMENT_NODE) continue;
        for (const button of [node, ...node.querySelectorAll('button')]) {
          if (button.tagName !== 'BUTTON') continue;
          for (const child of button.childNodes) {
            if (child.nodeType === Node.TEXT_NODE && child.nodeValue && !child.nodeValue.trim()) child.nodeValue = '';
          }
        }
      }
    }
  };

  const start = () => {
    const app = gradioApp();
    new MutationObserver((mutations) => {
      // without extensions' scripts nobody listens: the page's own script pays nothing per change (live previews)
      if (!document.querySelector('script[data-extension-file]')) return;
      trimButtons(mutations);
      watchSettings();
      checkLoaded();
      executeCallbacks(uiUpdateCallbacks, mutations);
      addTitles(mutations);
      afterUpdate();
      checkTab();
    }).observe(app, {childList: true, subtree: true});
    // a tab switch back to a drawn tab changes attributes only
    new MutationObserver(checkTab).observe(app, {subtree: true, attributes: true, attributeFilter: ['aria-selected']});
  };

  // Gradio inserts <head> scripts after the document loaded: the DOMContentLoaded / load listeners an extension's
  // script adds while it runs would never be called. Call them once the scripts have run.
  const fromExtension = () => Boolean(document.currentScript?.hasAttribute('data-extension-file'));
  const missed = (target, type) => (type === 'DOMContentLoaded' && (target === document || target === window)
                                    && document.readyState !== 'loading')
                                   || (type === 'load' && target === window && document.readyState === 'complete');
  for (const target of [window, document]) {
    const add = target.addEventListener;
    target.addEventListener = function (type, listener, options) {
      add.call(this, type, listener, options);
      if (!listener || !fromExtension() || !missed(this, type)) return;
      const call = () => {
        try {
          const event = new Event(type);
          if (typeof listener === 'function') listener.call(target, event); else listener.handleEvent(event);
        } catch (error) {
          console.error(`error in a ${type} listener:`, error);
        }
      };
      if (type === 'load') setTimeout(call, 0); else queueMicrotask(call);
    };
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
"""
