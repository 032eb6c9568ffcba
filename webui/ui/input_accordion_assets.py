"""CSS and page script of the input accordions (`input_accordion.py`: the enable checkbox in the header) and of the
"Restored last used values" note (`last_used_note.py`).

The script moves each `.input-accordion-checkbox` element (the real Gradio checkbox, so its value and events stay
Gradio's) from its holder row into the header button of the accordion its `input-accordion-for-<id>` class names,
before the title, hides the emptied holder, and keeps clicks on the checkbox from toggling the accordion. Gradio
renders a tab's content when it is first shown, so a MutationObserver places the checkboxes that appear later (at
most once per animation frame).
"""

CSS = """
.input-accordion > button.label-wrap { justify-content: flex-start; gap: .5em; }
.input-accordion > button.label-wrap > span:not(.icon) { flex: 1 1 auto; text-align: left; }
button.label-wrap .input-accordion-checkbox { flex: 0 0 auto; width: auto !important; min-width: 0 !important;
    padding: 0 !important; margin: 0 !important; border: none !important; background: none !important;
    box-shadow: none !important; }
button.label-wrap .input-accordion-checkbox label { padding: 0; margin: 0; gap: 0; }
button.label-wrap .input-accordion-checkbox label > span, button.label-wrap .input-accordion-checkbox .info {
    position: absolute !important; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
    white-space: nowrap; }
.input-accordion-holder-empty { display: none !important; }
.restored-note { align-items: center; gap: .5em; padding: 4px 8px; margin-bottom: 6px; border-radius: 6px;
    border: 1px solid var(--border-color-accent, var(--border-color-primary));
    background: var(--background-fill-secondary); font-size: .9em; }
.restored-note { flex-wrap: nowrap !important; }
.restored-note .restored-note-text { flex: 1 1 auto !important; min-width: 0 !important; }
.restored-note button { flex: 0 0 auto !important; min-width: 0 !important; width: auto !important; }
"""

SCRIPT = """
  {
    const placeAccordionCheckboxes = () => {
      for (const box of root().querySelectorAll('.input-accordion-checkbox')) {
        if (box.closest('.label-wrap')) continue;
        const link = [...box.classList].find((name) => name.startsWith('input-accordion-for-'));
        const accordion = link && root().querySelector(`#${CSS.escape(link.slice('input-accordion-for-'.length))}`);
        const header = accordion && [...accordion.querySelectorAll('button.label-wrap')]
          .find((button) => button.closest('.input-accordion') === accordion);
        if (!header) continue;
        const holder = box.closest('.input-accordion-holder');
        const title = header.querySelector(':scope > span:not(.icon)');
        header.insertBefore(box, header.firstChild);
        if (holder) holder.classList.add('input-accordion-holder-empty');
        // a click on the checkbox ticks it; it does not open or close the accordion
        box.addEventListener('click', (event) => event.stopPropagation());
        const input = box.querySelector('input[type=checkbox]');
        if (input && title && !input.title) input.title = `Enable ${title.textContent.trim()}`;
      }
    };
    const labelNoteButtons = () => {
      for (const [suffix, text] of [['_restored_dismiss', 'Hide this note (keep the restored values)'],
                                    ['_restored_undo', "Put the restored values back to this tab's defaults"]]) {
        for (const button of root().querySelectorAll(`[id$="${suffix}"]`)) {
          if (!button.title) { button.title = text; button.setAttribute('aria-label', text); }
        }
      }
    };
    let placing = false;
    new MutationObserver(() => {
      if (placing) return;
      placing = true;
      requestAnimationFrame(() => { placing = false; placeAccordionCheckboxes(); labelNoteButtons(); });
    }).observe(document.body, { childList: true, subtree: true });
    placeAccordionCheckboxes();
  }
"""
