"""CSS and page script of the extra networks panel's tools (see `extra_networks`): the subfolder buttons, the sort
order, the card badges, the 🔧 metadata editor's opening, unreadable cards, and the card tab last opened. The CSS
also floats the 🖌️ styles dialog (`style_editor`) over the page, as A1111's popup.

The script (part of `assets.JS`'s on-load function, so `root()` is defined) keeps per tab and kind the chosen
folder and order, applies them to the cards the server renders (again after every re-render, seen by a
MutationObserver), and defines `webuiTakeEditTarget(tab, current)` (the card whose 🔧 was clicked, read by the
editor's hidden button) and `webuiRestoreExtraTab(tab)` (run after 🎴 opens the panel: select the card tab last
used, which is remembered in the browser's localStorage).
"""

CSS = """
.extra-network-view { display: flex; flex-direction: column; gap: 6px; }
.extra-network-toolbar { display: flex; flex-wrap: wrap; gap: 6px; align-items: center;
                         justify-content: space-between; }
.extra-network-dirs { display: flex; flex-wrap: wrap; gap: 4px; }
.extra-network-dirs button, .extra-network-sort button, .extra-network-sort select {
  padding: 2px 10px; border-radius: 6px; border: 1px solid var(--border-color-primary); font-size: .85em;
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); cursor: pointer; }
.extra-network-dirs button.selected { background: var(--button-primary-background-fill);
                                      color: var(--button-primary-text-color); }
.extra-network-sort { display: flex; gap: 4px; align-items: center; }
.extra-network-notice { font-size: .9em; padding: 4px 8px; border-radius: 6px;
                        border: 1px solid var(--error-border-color, #d33); color: var(--error-text-color, #d33); }
.extra-network-notice[hidden] { display: none; }
.extra-network-hidden-note { font-size: .8em; opacity: .75; }
.extra-network-cards .card.dir-hidden { display: none !important; }
.extra-network-cards .card.error { outline: 2px dashed var(--error-border-color, #d33); cursor: not-allowed; }
.extra-network-cards .card-badges { position: absolute; top: 6px; left: 6px; display: flex; gap: 4px; z-index: 2; }
.extra-network-cards .card-badge { font-size: .7em; font-weight: 700; padding: 1px 6px; border-radius: 4px;
                                   background: rgba(0, 0, 0, .7); color: #fff; }
.extra-network-cards .card-badge.error-badge { background: #b22; }
.extra-network-cards .card-button { position: absolute; top: 4px; right: 4px; z-index: 3; border: none;
                                    border-radius: 4px; background: rgba(0, 0, 0, .55); color: #fff;
                                    padding: 2px 5px; cursor: pointer; opacity: 0; }
.extra-network-cards .card:hover .card-button, .extra-network-cards .card:focus-within .card-button,
.extra-network-cards .card-button:focus { opacity: 1; }
.extra-network-editor { padding: 8px; margin-top: 8px; }
.styles-dialog { position: fixed !important; top: 12vh; left: 50%; transform: translateX(-50%); z-index: 1000;
                 width: min(640px, 94vw) !important; max-height: 80vh; overflow-y: auto;
                 box-shadow: 0 8px 32px rgba(0, 0, 0, .45); }
.styles-dialog-row { align-items: end !important; flex-wrap: nowrap !important; }
.styles-dialog-row .tool-button { height: 2.6em !important; min-height: 0 !important; flex-grow: 0 !important;
                                  align-self: end !important; margin-bottom: 8px; }
.styles-dialog-buttons button { height: 2.4em !important; min-height: 0 !important; align-self: center; }
.extra-network-editor-title .path { opacity: .7; font-size: .85em; }
"""

SCRIPT = """
  const networkViews = {};  // "tab/kind" -> {dir, sort, sortdir} chosen in this page
  const editTargets = {};  // tab -> "kind\\npath" of the card whose 🔧 was clicked
  const viewOf = (cards) => {
    const key = `${cards.dataset.tab}/${cards.dataset.kind}`;
    networkViews[key] ??= { dir: '', sort: cards.dataset.sort || 'Path',
                            sortdir: cards.dataset.sortdir || 'Ascending' };
    return networkViews[key];
  };
  const sortAttribute = { 'Path': 'sortPath', 'Name': 'sortName', 'Date Created': 'sortDate_created',
                          'Date Modified': 'sortDate_modified' };
  const applyView = (cards) => {
    const view = viewOf(cards);
    const box = cards.closest('.extra-network-view');
    const all = [...cards.querySelectorAll(':scope > .card')];
    for (const card of all) {
      const dir = card.dataset.dir || '';
      card.classList.toggle('dir-hidden', Boolean(view.dir) && dir !== view.dir && !dir.startsWith(view.dir + '/'));
    }
    const key = sortAttribute[view.sort] || 'sortPath';
    const numeric = key.startsWith('sortDate');
    const sign = view.sortdir === 'Descending' ? -1 : 1;
    all.sort((a, b) => {
      const x = a.dataset[key] || '', y = b.dataset[key] || '';
      const order = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return sign * (order || (a.dataset.sortName || '').localeCompare(b.dataset.sortName || ''));
    });
    for (const card of all) cards.appendChild(card);
    for (const button of box?.querySelectorAll('.extra-network-dir') || []) {
      const chosen = button.dataset.dir === view.dir;
      button.classList.toggle('selected', chosen);
      button.setAttribute('aria-pressed', String(chosen));
    }
    const select = box?.querySelector('.extra-network-sort select');
    if (select) select.value = view.sort;
    const direction = box?.querySelector('.extra-network-sort-dir');
    if (direction) {
      direction.dataset.sortdir = view.sortdir;
      direction.textContent = view.sortdir === 'Descending' ? '⬇' : '⬆';
      direction.title = `${view.sortdir}: click to reverse`;
      direction.setAttribute('aria-label', `Sort direction: ${view.sortdir}`);
    }
    cards.dataset.viewApplied = '1';
  };
  const cardsOf = (element) => element.closest('.extra-network-view')?.querySelector('.extra-network-cards');
  new MutationObserver(() => {
    for (const cards of root().querySelectorAll('.extra-network-cards:not([data-view-applied])')) applyView(cards);
  }).observe(document.body, { childList: true, subtree: true });

  window.webuiNetworkNotice = (card) => {
    const notice = card.closest('.extra-network-view')?.querySelector('.extra-network-notice');
    if (!notice) return;
    notice.textContent = card.dataset.error || 'This file cannot be used';
    notice.hidden = false;
  };
  window.webuiTakeEditTarget = (tab, current) => {
    const target = editTargets[tab] ?? current;
    delete editTargets[tab];
    return target;
  };
  document.addEventListener('click', (event) => {
    const target = event.target;
    const edit = target.closest?.('.extra-network-cards .card .edit-button');
    if (edit) {
      event.preventDefault();
      const card = edit.closest('.card');
      const tab = card.closest('.extra-network-cards').dataset.tab;
      editTargets[tab] = `${card.dataset.kind}\\n${card.dataset.path}`;
      root().querySelector(`#${tab}_extra_edit_user_metadata_button`)?.click();
      return;
    }
    const dirButton = target.closest?.('.extra-network-dir');
    if (dirButton) {
      const cards = cardsOf(dirButton);
      const view = viewOf(cards);
      view.dir = view.dir === dirButton.dataset.dir ? '' : dirButton.dataset.dir;
      applyView(cards);
      return;
    }
    const reverse = target.closest?.('.extra-network-sort-dir');
    if (reverse) {
      const cards = cardsOf(reverse);
      const view = viewOf(cards);
      view.sortdir = view.sortdir === 'Descending' ? 'Ascending' : 'Descending';
      applyView(cards);
      return;
    }
    for (const tab of ['txt2img', 'img2img']) {
      const tabButton = target.closest?.(`#${tab}_extra_networks_tabs button[role="tab"]`);
      if (tabButton) localStorage.setItem(`webui-extra-networks-tab-${tab}`, tabButton.textContent.trim());
    }
  });
  document.addEventListener('change', (event) => {
    const select = event.target.closest?.('.extra-network-sort select');
    if (!select) return;
    const cards = cardsOf(select);
    viewOf(cards).sort = select.value;
    applyView(cards);
  });
  window.webuiRestoreExtraTab = (tab) => {
    const wanted = localStorage.getItem(`webui-extra-networks-tab-${tab}`);
    if (!wanted) return;
    const buttons = root().querySelectorAll(`#${tab}_extra_networks_tabs button[role="tab"]`);
    const button = [...buttons].find((b) => b.textContent.trim() === wanted);
    if (button && button.getAttribute('aria-selected') !== 'true') button.click();
  };
"""
