import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LOCALES, LOCALE_NAMES, matchLocale, initLocale, setLocale, t } from '../../src/i18n.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// Every key used by the sources: t('key') calls, data-i18n* attributes, and the
// status keys built at run time (queue.js: `queue.status.${status_str}`).
function usedKeys() {
  const keys = new Set(['queue.status.success', 'queue.status.error']);
  const files = [path.join(root, 'index.html'), ...readdirSync(path.join(root, 'src')).filter((f) => f.endsWith('.js')).map((f) => path.join(root, 'src', f))];
  for (const f of files) {
    const s = readFileSync(f, 'utf8');
    for (const m of s.matchAll(/\b(?:t|setStatus)\('([\w.]+)'/g)) keys.add(m[1]);
    for (const m of s.matchAll(/data-i18n(?:-[a-z]+)?="([\w.]+)"/g)) keys.add(m[1]);
    for (const m of s.matchAll(/: '((?:menu|dialog)\.[\w.]+)'/g)) keys.add(m[1]);
  }
  return keys;
}

test('every locale has exactly the keys of every other locale', () => {
  const en = Object.keys(LOCALES.en).sort();
  for (const [code, strings] of Object.entries(LOCALES)) {
    assert.ok(LOCALE_NAMES[code], `locale ${code} has a display name`);
    const keys = Object.keys(strings).sort();
    assert.deepEqual(en.filter((k) => !keys.includes(k)), [], `keys missing in ${code}`);
    assert.deepEqual(keys.filter((k) => !en.includes(k)), [], `keys in ${code} but not in en`);
    for (const k of keys) assert.ok(strings[k].trim(), `${code}.${k} is empty`);
  }
  assert.ok(Object.keys(LOCALES).includes('zh'));
});

test('every key the sources use exists in every locale, placeholders match', () => {
  const used = usedKeys();
  assert.ok(used.size > 40, `found only ${used.size} keys in the sources`);
  for (const [code, strings] of Object.entries(LOCALES)) {
    assert.deepEqual([...used].filter((k) => !(k in strings)), [], `keys used but missing in ${code}`);
    for (const [k, s] of Object.entries(strings)) {
      const ph = (x) => [...x.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      assert.deepEqual(ph(s), ph(LOCALES.en[k]), `${code}.${k} placeholders`);
    }
  }
});

test('the language follows the browser and can be switched', () => {
  assert.equal(matchLocale(['zh-CN', 'en']), 'zh');
  assert.equal(matchLocale(['fr-FR', 'en-GB']), 'en');
  assert.equal(matchLocale(['de']), 'en');
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  assert.equal(initLocale(storage, { languages: ['zh-TW'] }), 'zh');
  assert.equal(t('toolbar.queue'), '运行');
  setLocale('en', storage);
  assert.equal(initLocale(storage, { languages: ['zh-TW'] }), 'en', 'a chosen language wins over the browser');
  assert.equal(t('status.step', { value: 2, max: 9 }), 'Step 2/9');
  assert.throws(() => setLocale('xx', storage), /unknown locale/);
});
