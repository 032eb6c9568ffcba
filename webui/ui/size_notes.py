"""Telling the user when the page changes a number they typed into a slider's box, instead of doing it silently.

A slider's number box takes whatever is typed; Gradio clamps it into the slider's range afterwards without a word
(and sends the typed value first, which the server then refuses). The script here sees the typed value first (a
capture listener on `change`, which runs before Gradio's own): a value out of range becomes the nearest limit, an
image side that is not a multiple of 8 is rounded down as the engine would round it (A1111 rounds sizes down), and a
note under the slider (`.slider-note`, role="status") says what was changed, until the next value typed there. The
limits are the slider's, which for Width / Height are the API's (`core.sizes`): one limit for page and API.
"""
import json

CSS = """
.slider-note { font-size: .85em; margin-top: 2px; color: var(--body-text-color-subdued); }
.slider-note::before { content: "ⓘ "; }
"""

# The sliders whose values are image sides (rounded down to a multiple of their step by the engine).
SIDE_SLIDERS = ("txt2img_width", "txt2img_height", "img2img_width", "img2img_height")

SCRIPT = """
  (() => {
    const sides = new Set(SIDES);
    const label = (block) => (block.querySelector('[data-testid="block-info"], label span, label')
                              ?.textContent || 'Value').trim();
    const noteOf = (block) => block.querySelector(':scope > .slider-note');
    const say = (block, text) => {
      let note = noteOf(block);
      if (!note) {
        note = document.createElement('div');
        note.className = 'slider-note';
        note.setAttribute('role', 'status');
        block.appendChild(note);
      }
      note.textContent = text;
    };
    document.addEventListener('change', (event) => {
      const box = event.target;
      if (!(box instanceof HTMLInputElement) || box.type !== 'number') return;
      const block = box.closest('.block');
      if (!block || !block.querySelector('input[type=range]')) return;  // sliders only
      const typed = Number(box.value);
      const low = Number(box.min), high = Number(box.max), step = Number(box.step) || 1;
      if (box.value === '' || !Number.isFinite(typed)) return;
      const name = label(block);
      let value = typed, why = '';
      if (box.min !== '' && typed < low) { value = low; why = `is below the minimum: set to ${low}`; }
      else if (box.max !== '' && typed > high) { value = high; why = `is above the maximum: set to ${high}`; }
      else if (sides.has(block.id) && (typed - low) % step !== 0) {
        value = low + Math.floor((typed - low) / step) * step;
        why = `was rounded down to ${value} (image sides are multiples of ${step})`;
      }
      if (!why) { noteOf(block)?.remove(); return; }
      box.value = String(value);  // what Gradio reads next, in this same event
      say(block, `${name} ${typed} ${why}`);
    }, true);
  })();
""".replace("SIDES", json.dumps(SIDE_SLIDERS))
