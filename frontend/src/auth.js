// The access token of a server started with --auth-token: asked for once in a dialog
// when the server answers 401, then kept in the browser (localStorage) for the next
// visits; a wrong one is asked for again.
import { t } from './i18n.js';
import { el } from './ui.js';

export const TOKEN_KEY = 'forgeflow.token';

export function savedToken(storage = globalThis.localStorage) {
  return storage?.getItem(TOKEN_KEY) || '';
}

/**
 * Asks for the token; resolves to it (and keeps it) or to null when cancelled.
 * wrong says the previous one was refused.
 */
export function askToken(wrong, storage = globalThis.localStorage) {
  return new Promise((resolve) => {
    document.getElementById('token-dialog')?.remove();
    const input = el('input', { type: 'password', id: 'token-input', autocomplete: 'current-password', 'aria-label': t('auth.token') });
    const form = el('form', { method: 'dialog' },
      el('h2', { text: t('auth.title') }),
      el('p', { text: t('auth.text') }),
      wrong ? el('p', { class: 'error', id: 'token-wrong', role: 'alert', text: t('auth.wrong') }) : null,
      el('label', { for: 'token-input', text: t('auth.token') }), input,
      el('div', { class: 'row', style: 'margin-top:8px;justify-content:flex-end' },
        el('button', { type: 'submit', class: 'primary', id: 'token-ok', text: t('dialog.ok') })));
    const d = el('dialog', { id: 'token-dialog', 'aria-label': t('auth.title') }, form);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const tok = input.value.trim();
      if (!tok) return;
      storage?.setItem(TOKEN_KEY, tok);
      d.close('ok');
    });
    d.addEventListener('close', () => {
      resolve(d.returnValue === 'ok' ? input.value.trim() : null);
      d.remove();
    });
    document.body.append(d);
    d.showModal();
    input.focus();
  });
}
