"""CSS and page script of the prompt tools: token counters, the extra networks cards, the style row.

The script (a function body, run once on page load by `assets.JS`) defines the page functions the Blocks' event
listeners call through their `js=`: `webuiCountTokens(buttonId)` (press a tab's hidden recount button 500 ms
after the last change) and `webuiTakeCheckpoint(current)` (the checkpoint a card asked for). Typing in a tab's
search box hides the cards whose name (and search terms) lack a typed word. A click on a LoRA or embedding card
inserts its `data-prompt` at the caret of the prompt box of that tab that last had focus (the prompt when none
had); a LoRA already in that box is taken out instead, as A1111 toggles.
"""

CSS = """
.prompt-container { position: relative; gap: 0 !important; flex: none !important; }
.token-counter { position: absolute !important; top: 6px; right: 10px; z-index: 5; width: auto !important;
                 min-width: 0 !important; pointer-events: none; }
.token-counter [data-testid="status-tracker"] { display: none !important; }
.token-count { font-size: .8em; padding: 1px 6px; border-radius: 4px; opacity: .8;
               background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.prompt-tools { gap: 6px !important; align-items: center; flex-wrap: nowrap !important; }
.prompt-tools .tool-button { align-self: center; margin-bottom: 0; height: 2.6em; min-height: 0 !important; }
.extra-networks { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
.extra-networks-controls { align-items: center; }
.extra-network-cards { display: flex; flex-wrap: wrap; gap: 10px; max-height: 32em; overflow-y: auto;
                       padding: 4px; }
.extra-network-cards .card { position: relative; width: 11em; height: 15em; border-radius: 8px; overflow: hidden;
                             cursor: pointer; background: var(--neutral-700, #444); flex: none;
                             box-shadow: 0 1px 3px rgba(0, 0, 0, .35); }
.extra-network-cards .card:hover, .extra-network-cards .card:focus { outline: 2px solid var(--color-accent); }
.extra-network-cards .card.hidden { display: none !important; }
.extra-network-cards .card.disabled { filter: grayscale(1); opacity: .55; cursor: help; }
.extra-network-cards .preview { width: 100%; height: 100%; object-fit: cover; display: block; }
.extra-network-cards .no-preview { background: linear-gradient(160deg, var(--neutral-600, #666),
                                   var(--neutral-800, #222)); }
.extra-network-cards .actions { position: absolute; left: 0; right: 0; bottom: 0; padding: 2.5em .6em .5em;
                                background: linear-gradient(transparent, rgba(0, 0, 0, .85)); }
.extra-network-cards .actions span { color: #fff !important; }
.extra-network-cards .name { display: block; font-weight: 600; word-break: break-word;
                             text-shadow: 0 1px 2px #000; }
.extra-network-cards .description { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical;
                                    overflow: hidden; font-size: .8em; opacity: .9; margin-top: .2em; }
.extra-network-cards .nocards { padding: 1em; opacity: .8; }
"""

SCRIPT = """
  const tabs = ['txt2img', 'img2img'];
  const recountTimers = {};
  window.webuiCountTokens = (buttonId) => {
    clearTimeout(recountTimers[buttonId]);
    recountTimers[buttonId] = setTimeout(() => root().querySelector(`#${buttonId}`)?.click(), 500);
  };

  const filterCards = (tab, text) => {
    const words = (text || '').toLowerCase().split(/\\s+/).filter(Boolean);
    for (const card of root().querySelectorAll(`#${tab}_extra_tabs .extra-network-cards .card`)) {
      const terms = card.dataset.search || '';
      card.classList.toggle('hidden', !words.every((word) => terms.includes(word)));
    }
  };
  document.addEventListener('input', (event) => {
    for (const tab of tabs) {
      if (root().querySelector(`#${tab}_extra_search`)?.contains(event.target)) filterCards(tab, event.target.value);
    }
  });

  let chosenCheckpoint = null;
  window.webuiTakeCheckpoint = (current) => {
    const chosen = chosenCheckpoint ?? current;
    chosenCheckpoint = null;
    return chosen;
  };

  const lastPrompt = {};  // tab -> elem_id of the prompt box that last had focus
  document.addEventListener('focusin', (event) => {
    if (event.target.tagName !== 'TEXTAREA') return;
    for (const tab of tabs) {
      for (const id of [`${tab}_prompt`, `${tab}_neg_prompt`]) {
        if (root().querySelector(`#${id}`)?.contains(event.target)) lastPrompt[tab] = id;
      }
    }
  });

  const setText = (box, text, caret) => {
    box.value = text;
    box.dispatchEvent(new Event('input', { bubbles: true }));  // Gradio takes the new value from this event
    box.setSelectionRange(caret, caret);
  };
  const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\\]\\\\]/g, '\\\\$&');

  // Take `<lora:NAME...>` (and the activation text the card added after it) out of the box; false if absent.
  const removeLora = (box, name, addition) => {
    const text = box.value;
    const found = new RegExp(`<lora:${escapeRegExp(name)}(:[^>]*)?>`).exec(text);
    if (!found) return false;
    let end = found.index + found[0].length;
    const activation = addition.slice(addition.indexOf('>') + 1).trim();
    const rest = text.slice(end);
    if (activation && rest.trimStart().startsWith(activation)) {
      end += rest.length - rest.trimStart().length + activation.length;
    }
    const before = text.slice(0, found.index).replace(/[ \\t]+$/, '');
    const after = text.slice(end).replace(/^[ \\t]+/, '');
    const spaced = before && after && !/\\s$/.test(before) && !/^\\s/.test(after);
    const joined = spaced ? `${before} ${after}` : before + after;
    setText(box, joined, before.length);
    return true;
  };

  const insertAtCaret = (box, addition, atCaret) => {
    const text = box.value;
    const start = atCaret ? box.selectionStart : text.length;
    const end = atCaret ? box.selectionEnd : text.length;
    const before = text.slice(0, start);
    const after = text.slice(end);
    const lead = before && !/\\s$/.test(before) ? ' ' : '';
    const trail = after && !/^\\s/.test(after) ? ' ' : '';
    setText(box, before + lead + addition + trail + after, (before + lead + addition).length);
  };

  const cardClicked = (card) => {
    const cards = card.closest('.extra-network-cards');
    const tab = cards?.dataset.tab;
    if (!tab) return;
    if (card.classList.contains('error')) {  // a file that cannot be read: say why, insert nothing
      window.webuiNetworkNotice?.(card);
      return;
    }
    if (card.dataset.checkpoint) {
      chosenCheckpoint = card.dataset.checkpoint;
      root().querySelector('#change_checkpoint')?.click();
      return;
    }
    const addition = card.dataset.prompt;
    const box = root().querySelector(`#${lastPrompt[tab] || tab + '_prompt'} textarea`);
    if (!addition || !box) return;
    if (card.dataset.kind === 'lora' && removeLora(box, card.dataset.name, addition)) return;
    insertAtCaret(box, addition, Boolean(lastPrompt[tab]));
  };
  document.addEventListener('click', (event) => {
    const card = event.target.closest?.('.extra-network-cards .card');
    if (card && !event.target.closest('.card-button')) cardClicked(card);  // 🔧 opens the editor instead
  });
  document.addEventListener('keydown', (event) => {
    const card = event.target.closest?.('.extra-network-cards .card');
    if (card && !event.target.closest('.card-button') && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      cardClicked(card);
    }
  });
"""
