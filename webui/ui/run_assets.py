"""CSS and page script of a running job in the txt2img / img2img tabs: nothing moves while a job runs, and the picture
with its infotext fits the window.

Interrupt and Skip take Generate's place side by side (`{tab}_generate_box`, as A1111's), at Generate's height; the
progress panel and the live preview lie over the gallery (`{tab}_gallery_container`) and take no room, so the
gallery, its send buttons and the infotext stay where they were. The script sizes each gallery to the window
(`--webui-gallery-height` on its container, which the gallery's height reads) so that the send buttons and a few
lines of infotext stay in view under it, between GALLERY_MIN and GALLERY_MAX pixels; it depends only on where the
gallery starts, so a run never changes it. A picture in the gallery's grid is never taller than the gallery, so a
single result shows whole whatever the gallery's height.
"""

GALLERY_HEIGHT = "var(--webui-gallery-height, 560px)"  # the galleries' height (gr.Gallery(height=...))
GALLERY_MIN, GALLERY_MAX = 128, 768
INFOTEXT_ROOM = 130  # pixels kept under the send buttons for the infotext (five lines, with the gap above)

CSS = """
.generate-buttons { flex-wrap: nowrap !important; gap: 6px !important; }
.generate-buttons > button { flex: 1 1 0 !important; min-width: 0 !important; }
#txt2img_interrupt, #txt2img_skip, #img2img_interrupt, #img2img_skip { min-height: 5em; }
.run-gallery { position: relative; }
.run-gallery .grid-wrap .thumbnail-lg { max-height: calc(var(--webui-gallery-height, 560px) - 40px); }
.run-gallery > .live-preview, .run-gallery > .progress-overlay {
  position: absolute !important; left: 0; right: 0; margin: 0 !important; pointer-events: none; }
.run-gallery > .live-preview { top: 0; bottom: 0; z-index: 20; }
.run-gallery > .live-preview:has(img) { background: var(--block-background-fill);
  border-radius: var(--block-radius); }
.run-gallery > .live-preview img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain;
  margin: 0; }
.run-gallery > .progress-overlay { top: 0; z-index: 30; padding: 6px 8px !important; }
.progress-overlay .job-state { display: inline-block; margin: 0 0 4px; padding: 1px 8px; border-radius: 6px;
  background: var(--block-background-fill); opacity: .95; }
.progress-overlay:has(.job-done, .job-cancelled, .job-failed) { animation: webui-fade-out .4s ease 2s forwards; }
@keyframes webui-fade-out { to { opacity: 0; visibility: hidden; } }
.job-log .job-warnings { font-size: .9em; margin-top: .2em; }
.job-log .job-warning { color: var(--color-accent, #c70); margin: 2px 0; }
.job-log .job-error { color: var(--error-text-color, #d00); margin: 2px 0; }
"""

SCRIPT = """
  (() => {  // run_assets.py: the generation tabs' galleries fit the window
    const page = () => document.querySelector('gradio-app')?.shadowRoot || document;
    const tabs = ['txt2img', 'img2img'];
    const sized = new Set();
    const fit = (tab) => {  // the gallery's height: the send buttons and the infotext in view under it
      const box = page().querySelector(`#${tab}_gallery_container`);
      if (box === null) return;
      if (!sized.has(box)) { sized.add(box); resized.observe(box); }
      if (box.offsetParent === null) return;  // its tab is not shown: nothing to measure
      const buttons = page().querySelector(`#${tab}_send_buttons`);
      const rect = box.getBoundingClientRect();
      const under = buttons === null ? 0 : Math.max(0, buttons.getBoundingClientRect().bottom - rect.bottom);
      const room = window.innerHeight - (rect.top + window.scrollY) - under - %(room)d;
      const height = `${Math.round(Math.max(%(low)d, Math.min(%(high)d, room)))}px`;
      if (box.style.getPropertyValue('--webui-gallery-height') !== height) {
        box.style.setProperty('--webui-gallery-height', height);
      }
    };
    const update = () => tabs.forEach(fit);
    const resized = new ResizeObserver(() => requestAnimationFrame(update));
    resized.observe(document.body);  // also when a tab's content is built or shown
    window.addEventListener('resize', update);
    update();
  })();
""" % {"room": INFOTEXT_ROOM, "low": GALLERY_MIN, "high": GALLERY_MAX}
