"""The page's CSS and its on-load script (keyboard shortcuts, and the prompt tools' script)."""

from . import prompt_assets, size_notes
from . import input_accordion_assets
from . import network_assets
from . import run_assets
from . import prompt_tools_assets
from . import tab_events, hints
from . import gallery_assets

CSS = """
#setting_sd_model_checkpoint { max-width: 420px; }
#refresh_sd_model_checkpoint { max-width: 2.6em; min-width: 2.6em; align-self: end; margin-bottom: 4px; }
.prompt-row textarea { resize: vertical; }
.generate-box { min-width: 160px; }
.generate-box .generate-buttons button { font-size: 1.15em; }
#txt2img_generate, #img2img_generate { min-height: 5em; }
.tool-button { max-width: 2.6em; min-width: 2.6em !important; align-self: end; margin-bottom: 4px; }
.progressbar { position: relative; height: 1.6em; border-radius: 6px; overflow: hidden;
               background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.progressbar .progress { height: 100%; background: var(--button-primary-background-fill); transition: width .2s; }
.progressbar .progress-text { position: absolute; inset: 0; display: flex; align-items: center;
                              justify-content: center; font-size: .9em; }
.job-state { font-size: .9em; opacity: .85; margin: 2px 0 4px; }
.job-failed { color: var(--error-text-color, #d00); }
.infotext { font-size: .9em; word-break: break-word; }
.infotext .time { opacity: .7; margin-top: .4em; }
body:not([data-webui-loaded]) #tabs { pointer-events: none; cursor: progress; }
.pnginfo-params td { padding: 1px 8px 1px 0; vertical-align: top; }
.pnginfo-params td:first-child { font-weight: 600; white-space: nowrap; }
""" + prompt_assets.CSS + size_notes.CSS
CSS += input_accordion_assets.CSS  # input accordions, the restored values note
CSS += network_assets.CSS  # extra networks: folder buttons, sort, badges, metadata editor
CSS += run_assets.CSS  # a running job: Interrupt / Skip in Generate's place, progress over the gallery
CSS += prompt_tools_assets.CSS  # ⇅ beside width / height
CSS += hints.CSS  # icon buttons' tooltips / accessible names, the styles picker's placeholder
CSS += gallery_assets.CSS  # the buttons under the galleries, the no-checkpoint notice

# Run once on page load (Gradio calls the function). Ctrl+Enter in a prompt box presses that tab's Generate;
# Escape presses Interrupt when a tab shows it. Then the prompt tools' script (see `prompt_assets`).
JS = """
() => {
  const root = () => document.querySelector('gradio-app')?.shadowRoot || document;
  const shown = (el) => el !== null && el.offsetParent !== null;
  document.addEventListener('keydown', (event) => {
    const page = root();
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      for (const tab of ['txt2img', 'img2img']) {
        const boxes = [`#${tab}_prompt`, `#${tab}_neg_prompt`].map((id) => page.querySelector(id));
        if (boxes.some((box) => box !== null && box.contains(event.target))) {
          event.preventDefault();
          const button = page.querySelector(`#${tab}_generate`);
          if (shown(button)) button.click();
          return;
        }
      }
    } else if (event.key === 'Escape') {
      for (const tab of ['txt2img', 'img2img']) {
        const button = page.querySelector(`#${tab}_interrupt`);
        if (shown(button)) { event.preventDefault(); button.click(); return; }
      }
    }
  });
""" + prompt_assets.SCRIPT + size_notes.SCRIPT + input_accordion_assets.SCRIPT + """
""" + prompt_tools_assets.SCRIPT + network_assets.SCRIPT + """
""" + tab_events.SCRIPT + hints.SCRIPT + """
""" + run_assets.SCRIPT + """
}
"""
