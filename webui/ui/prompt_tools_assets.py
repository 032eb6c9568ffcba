"""CSS and page script of the prompt box's tools (`prompt_tools`): emphasis editing with Ctrl+Up / Ctrl+Down,
moving a comma-separated item with Alt+Left / Alt+Right, a picture dropped on a prompt box, 🗑️'s confirmation,
and the tools' tooltips.

Emphasis editing, as A1111's (its `keyedit_*` settings, read from the hidden `#keyedit_options` box the load event
fills): with a selection, or else the word at the caret (words end at `keyedit_delimiters` and the chosen
`keyedit_delimiters_whitespace`), `castle` becomes `(castle:1.1)`, then `(castle:1.2)`; down to `(castle:0.9)`;
at 1.0 the parentheses go. The caret inside a `(text:1.3)` group changes that group's weight; inside an
`<lora:name:0.8>` tag the tag's weight, by `keyedit_precision_extra`. The change goes through the browser's
editing (Ctrl+Z undoes it) and an input event, so Gradio takes the new value.
"""

CSS = """
#txt2img_tools, #img2img_tools { flex-wrap: wrap !important; }  /* the style picker goes below when there is no room */
.dimensions-tools { align-self: center; justify-content: center; min-width: 44px !important; flex-grow: 0 !important; }
.dimensions-tools .tool-button { align-self: center; margin: 0; }
"""

SCRIPT = """
  // --- the prompt box's tools (prompt_tools_assets.py) ---
  (() => {
    const whitespaceNames = { 'Tab': '\\t', 'Carriage Return': '\\r', 'Line Feed': '\\n' };
    const settings = () => {
      let stored = {};
      const holder = root().querySelector('#keyedit_options textarea, #keyedit_options input');
      try { stored = JSON.parse(holder?.value || '{}') || {}; } catch (error) { stored = {}; }
      const number = (value, fallback) => (Number.isFinite(Number(value)) && Number(value) > 0 ? Number(value)
                                                                                              : fallback);
      const whitespace = Array.isArray(stored.keyedit_delimiters_whitespace)
        ? stored.keyedit_delimiters_whitespace : ['Tab', 'Carriage Return', 'Line Feed'];
      return {
        attention: number(stored.keyedit_precision_attention, 0.1),
        extra: number(stored.keyedit_precision_extra, 0.05),
        delimiters: (typeof stored.keyedit_delimiters === 'string' ? stored.keyedit_delimiters
                                                                      : '.,\\\\/!?%^*;:{}=`~() ')
                    + whitespace.map((name) => whitespaceNames[name] || '').join(''),
        move: stored.keyedit_move !== false,
      };
    };

    // The prompt boxes the keys act in: both tabs' prompts and negative prompts, and Hires. fix's.
    const promptBox = (target) => {
      if (target?.tagName !== 'TEXTAREA') return null;
      const box = target.closest('[id$="prompt"]');
      return box && /^(txt2img|img2img|hires)_(neg_)?prompt$/.test(box.id) ? target : null;
    };

    const formatWeight = (weight) => {
      const rounded = Math.round(weight * 10000) / 10000;
      return Number.isInteger(rounded) ? rounded.toFixed(1) : String(rounded);
    };

    // Replace text[start, end) with `insert` through the browser's editing (undoable), select [from, to).
    const replaceRange = (area, start, end, insert, from, to) => {
      const wanted = area.value.slice(0, start) + insert + area.value.slice(end);
      area.focus();
      area.setSelectionRange(start, end);
      let edited = false;
      try { edited = document.execCommand('insertText', false, insert); } catch (error) { edited = false; }
      if (!edited || area.value !== wanted) {
        area.value = wanted;
      }
      area.setSelectionRange(from, to);
      area.dispatchEvent(new Event('input', { bubbles: true }));  // Gradio takes the new value from this event
    };

    // The innermost pair open...close around `position` (open before it, close at or after it), or null.
    const enclosing = (text, position, open, close) => {
      let depth = 0;
      let start = -1;
      for (let i = position - 1; i >= 0; i--) {
        if (text[i] === close) depth++;
        else if (text[i] === open) {
          if (depth === 0) { start = i; break; }
          depth--;
        }
      }
      if (start < 0) return null;
      depth = 0;
      for (let i = position; i < text.length; i++) {
        if (text[i] === open) depth++;
        else if (text[i] === close) {
          if (depth === 0) return { start, end: i };
          depth--;
        }
      }
      return null;
    };

    const WEIGHTED = /^([\\s\\S]*):\\s*(-?\\d+(?:\\.\\d+)?|-?\\.\\d+)\\s*$/;

    // `<name:args:weight>` around the caret: its weight changed by `extra` (1.0 when it has none).
    const editTag = (area, tag, up, step) => {
      const text = area.value;
      const inner = text.slice(tag.start + 1, tag.end);
      const parts = inner.split(':');
      if (parts.length < 2) return false;
      let head = inner;
      let weight = 1;
      const found = WEIGHTED.exec(inner);
      if (found && parts.length >= 3) { head = found[1]; weight = parseFloat(found[2]); }
      const replaced = `${head}:${formatWeight(weight + (up ? step : -step))}`;
      const caret = Math.min(area.selectionStart, tag.start + 1 + replaced.length);
      replaceRange(area, tag.start + 1, tag.end, replaced, caret, caret);
      return true;
    };

    // `(content:weight)` spanning open..close: a new weight, or at 1.0 the bare content.
    const editGroup = (area, open, close, content, weight, up, step) => {
      const next = Math.round((weight + (up ? step : -step)) * 10000) / 10000;
      if (next === 1) {
        replaceRange(area, open, close + 1, content, open, open + content.length);
      } else {
        const replaced = `(${content}:${formatWeight(next)})`;
        replaceRange(area, open, close + 1, replaced, open + 1, open + 1 + content.length);
      }
    };

    const editAttention = (event, area) => {
      const options = settings();
      const up = event.key === 'ArrowUp';
      const text = area.value;
      let start = area.selectionStart;
      let end = area.selectionEnd;
      if (start === end) {
        const tag = enclosing(text, start, '<', '>');
        if (tag && editTag(area, tag, up, options.extra)) return true;
        const group = enclosing(text, start, '(', ')');
        const found = group && WEIGHTED.exec(text.slice(group.start + 1, group.end));
        if (found) {
          editGroup(area, group.start, group.end, found[1], parseFloat(found[2]), up, options.attention);
          return true;
        }
        while (start > 0 && !options.delimiters.includes(text[start - 1])) start--;
        while (end < text.length && !options.delimiters.includes(text[end])) end++;
      } else {
        const tag = enclosing(text, start, '<', '>');
        if (tag && end <= tag.end && editTag(area, tag, up, options.extra)) return true;
      }
      while (start < end && /\\s/.test(text[start])) start++;
      while (end > start && /\\s/.test(text[end - 1])) end--;
      if (start === end) return false;
      const content = text.slice(start, end);
      const weighted = /^:\\s*(-?\\d+(?:\\.\\d+)?|-?\\.\\d+)\\s*\\)/.exec(text.slice(end));
      if (text[start - 1] === '(' && weighted) {  // already `(content:weight)`
        editGroup(area, start - 1, end + weighted[0].length - 1, content, parseFloat(weighted[1]), up,
                  options.attention);
        return true;
      }
      editGroup(area, start, end - 1, content, 1, up, options.attention);
      return true;
    };

    // Alt+Left / Alt+Right: the comma-separated item at the caret swaps places with its neighbour.
    const moveItem = (area, left) => {
      const parts = area.value.split(',');
      let index = 0;
      let offset = area.selectionStart;
      while (index < parts.length - 1 && offset > parts[index].length) {
        offset -= parts[index].length + 1;
        index++;
      }
      const other = left ? index - 1 : index + 1;
      if (other < 0 || other >= parts.length) return;
      const split = (part) => {
        const lead = part.match(/^\\s*/)[0];
        const core = part.trim();
        return { lead, core, trail: part.slice(lead.length + core.length) };
      };
      const mine = split(parts[index]);
      const theirs = split(parts[other]);
      if (!mine.core || !theirs.core) return;
      const within = Math.max(0, Math.min(offset - mine.lead.length, mine.core.length));
      parts[index] = mine.lead + theirs.core + mine.trail;
      parts[other] = theirs.lead + mine.core + theirs.trail;
      const text = parts.join(',');
      const before = parts.slice(0, other).reduce((sum, part) => sum + part.length + 1, 0);
      const caret = before + theirs.lead.length + within;
      replaceRange(area, 0, area.value.length, text, caret, caret);
    };

    document.addEventListener('keydown', (event) => {
      const area = promptBox(event.target);
      if (!area) return;
      const vertical = event.key === 'ArrowUp' || event.key === 'ArrowDown';
      const horizontal = event.key === 'ArrowLeft' || event.key === 'ArrowRight';
      if ((event.ctrlKey || event.metaKey) && !event.altKey && vertical) {
        if (editAttention(event, area)) event.preventDefault();
      } else if (event.altKey && !event.ctrlKey && !event.metaKey && horizontal) {
        if (!settings().move) return;
        event.preventDefault();
        moveItem(area, event.key === 'ArrowLeft');
      }
    });

    // A picture dropped on a tab's prompt box: into the tab's hidden upload, whose handler reads its parameters.
    const dropTab = (target) => ['txt2img', 'img2img'].find((tab) => root().querySelector(`#${tab}_prompt`)
                                                                       ?.contains(target));
    const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes('Files');
    document.addEventListener('dragover', (event) => {
      if (dropTab(event.target) && carriesFiles(event)) {
        event.preventDefault();
        event.dataTransfer.dropEffect = 'copy';
      }
    }, true);
    document.addEventListener('drop', (event) => {
      const tab = dropTab(event.target);
      const files = event.dataTransfer?.files;
      if (!tab || !files || files.length === 0) return;  // text dropped on the box is inserted as usual
      event.preventDefault();
      event.stopPropagation();
      const input = root().querySelector(`#${tab}_prompt_image input[type=file]`);
      if (!input) return;
      const chosen = new DataTransfer();
      chosen.items.add(files[0]);
      input.files = chosen.files;
      input.dispatchEvent(new Event('change', { bubbles: true }));
    }, true);

    window.webuiConfirmClearPrompt = (prompt, negative) => (
      window.confirm('Clear the prompt and the negative prompt?') ? ['', ''] : [prompt, negative]);

  })();
"""
