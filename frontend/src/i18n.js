// UI strings: every visible string is a key looked up in the current locale; the
// language follows the browser (navigator.languages) unless the user picked one.
import en from './locales/en.json' with { type: 'json' };
import zh from './locales/zh.json' with { type: 'json' };

export const LOCALES = { en, zh };
export const LOCALE_NAMES = { en: 'English', zh: '中文' };

const STORAGE_KEY = 'forgeflow.locale';
let current = 'en';
const listeners = new Set();

/** Picks the first supported locale of a list of BCP 47 tags, or 'en'. */
export function matchLocale(tags) {
  for (const tag of tags || []) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (LOCALES[base]) return base;
  }
  return 'en';
}

export function initLocale(storage = globalThis.localStorage, nav = globalThis.navigator) {
  const saved = storage?.getItem(STORAGE_KEY);
  current = saved && LOCALES[saved] ? saved : matchLocale(nav?.languages || [nav?.language]);
  return current;
}

export function locale() {
  return current;
}

export function setLocale(l, storage = globalThis.localStorage) {
  if (!LOCALES[l]) throw new Error(`i18n: unknown locale ${l}`);
  current = l;
  storage?.setItem(STORAGE_KEY, l);
  for (const fn of listeners) fn(l);
}

export function onLocaleChange(fn) {
  listeners.add(fn);
}

/** Translates key, replacing {name} placeholders from params. */
export function t(key, params) {
  let s = LOCALES[current][key] ?? LOCALES.en[key];
  if (s === undefined) {
    console.warn(`i18n: missing key ${key}`);
    return key;
  }
  if (params) s = s.replace(/\{(\w+)\}/g, (m, k) => (params[k] !== undefined ? String(params[k]) : m));
  return s;
}

/** Sets textContent / attributes of elements carrying data-i18n* attributes. */
export function translateDom(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
}
