// Small DOM helpers shared by the panels: element builder, toasts, a modal prompt and
// the node search dialog. Everything is keyboard operable (native buttons, dialog
// elements, arrow keys in lists).
import { t } from './i18n.js';
import { searchNodes } from './workflow.js';

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c != null) e.append(c);
  return e;
}

export function toast(msg, kind = 'info', ms = 6000) {
  const box = document.getElementById('toasts');
  const n = el('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status', 'data-kind': kind, text: msg });
  box.append(n);
  setTimeout(() => n.remove(), ms);
  return n;
}

/** Asks for a line of text in a modal dialog; resolves to the text or null. */
export function promptText(title, value = '') {
  return new Promise((resolve) => {
    const input = el('input', { type: 'text', value, 'aria-label': title, id: 'prompt-input' });
    const form = el('form', { method: 'dialog' },
      el('label', { for: 'prompt-input', text: title }), input,
      el('div', { class: 'row', style: 'margin-top:8px;justify-content:flex-end' },
        el('button', { type: 'button', value: 'cancel', id: 'prompt-cancel', text: t('dialog.cancel'), onclick: () => d.close('cancel') }),
        el('button', { type: 'submit', value: 'ok', class: 'primary', id: 'prompt-ok', text: t('dialog.ok') })));
    const d = el('dialog', { id: 'prompt-dialog', 'aria-label': title }, form);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      d.close('ok');
    });
    d.addEventListener('close', () => {
      resolve(d.returnValue === 'ok' ? input.value : null);
      d.remove();
    });
    document.body.append(d);
    d.showModal();
    input.select();
  });
}

/**
 * The node search: a dialog with a text box and a result list (listbox); arrow keys
 * move, Enter adds, Escape closes. onPick(type) adds the node.
 */
export function openSearch(defs, onPick) {
  document.getElementById('search-dialog')?.remove();
  const input = el('input', { type: 'search', id: 'search-input', role: 'combobox', 'aria-controls': 'search-results', 'aria-expanded': 'true', 'aria-autocomplete': 'list', placeholder: t('search.placeholder'), 'aria-label': t('search.label'), autocomplete: 'off' });
  const list = el('ul', { id: 'search-results', role: 'listbox', 'aria-label': t('search.results') });
  const d = el('dialog', { id: 'search-dialog', 'aria-label': t('search.label') }, input, list);
  let items = [];
  let sel = 0;
  const render = () => {
    items = searchNodes(defs, input.value, 40);
    sel = Math.min(sel, Math.max(0, items.length - 1));
    list.replaceChildren(...items.map((name, i) => el('li', {
      role: 'option', id: `search-opt-${i}`, 'data-type': name, 'aria-selected': i === sel ? 'true' : 'false',
      onclick: () => pick(name),
    }, el('span', { text: defs[name].display_name || name }), el('span', { class: 'cat', text: defs[name].category || '' }))));
    if (!items.length) list.append(el('li', { role: 'presentation', text: t('search.none') }));
    input.setAttribute('aria-activedescendant', items.length ? `search-opt-${sel}` : '');
    list.querySelector('[aria-selected="true"]')?.scrollIntoView({ block: 'nearest' });
  };
  const pick = (name) => {
    d.close();
    onPick(name);
  };
  input.addEventListener('input', () => {
    sel = 0;
    render();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'ArrowDown') sel = Math.min(items.length - 1, sel + 1);
    else if (e.key === 'ArrowUp') sel = Math.max(0, sel - 1);
    else if (e.key === 'Enter') {
      e.preventDefault();
      if (items[sel]) pick(items[sel]);
      return;
    } else if (e.key === 'Escape') {
      e.preventDefault();
      d.close();
      return;
    } else return;
    e.preventDefault();
    render();
  });
  d.addEventListener('close', () => d.remove());
  document.body.append(d);
  render();
  d.showModal();
  input.focus();
  // The release of the press that opened the dialog (a tap, a pen) may still arrive and
  // move the focus; keep it in the search box for that one.
  const keep = () => input.isConnected && document.activeElement !== input && input.focus();
  for (const type of ['pointerup', 'mouseup', 'click']) document.addEventListener(type, keep, { once: true, capture: true });
  setTimeout(keep, 0);
  return d;
}

/** Makes a toolbar's buttons reachable with the arrow keys (roving focus). */
export function arrowKeys(toolbar) {
  toolbar.addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    if (e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') return;
    const items = [...toolbar.querySelectorAll('button, select, input:not([hidden])')].filter((x) => !x.hidden);
    const i = items.indexOf(document.activeElement);
    if (i < 0) return;
    items[(i + (e.key === 'ArrowRight' ? 1 : items.length - 1)) % items.length].focus();
    e.preventDefault();
  });
}
