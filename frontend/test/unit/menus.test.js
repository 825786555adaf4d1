import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { LITEGRAPH_KEYS, dropEntries, translateLiteral } from '../../src/menus.js';
import { LOCALES, setLocale } from '../../src/i18n.js';

// The literals litegraph puts in its menus and dialogs, read from the installed
// bundle, so that a litegraph update with a new entry fails here rather than showing
// English in the Chinese UI.
function litegraphLiterals() {
  // Wherever npm put it (frontend/node_modules, or the workspace root's).
  const src = readFileSync(fileURLToPath(import.meta.resolve('@comfyorg/litegraph')), 'utf8');
  const out = new Set();
  const strings = (s) => [...s.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
  for (const m of src.matchAll(/content: "([^"<]+)"/g)) out.add(m[1]);
  for (const m of src.matchAll(/content: [\w.]+ \? "([^"]+)" : "([^"]+)"/g)) out.add(m[1]).add(m[2]);
  for (const m of src.matchAll(/new LiteGraph\.ContextMenu\((\[[^\]]*\])/g)) strings(m[1]).forEach((s) => out.add(s));
  for (const m of src.matchAll(/const options = (\["Add Node"[^\]]*\])/g)) strings(m[1]).forEach((s) => out.add(s));
  for (const name of ['NODE_MODES', 'VALID_SHAPES']) {
    const m = src.match(new RegExp(`\\b${name} = (\\[[^\\]]*\\])`));
    assert.ok(m, `litegraph defines ${name}`);
    strings(m[1]).forEach((s) => out.add(s));
  }
  const colors = src.match(/node_colors = \{([\s\S]*?)\n {2}\};/);
  assert.ok(colors, 'litegraph defines node_colors');
  for (const m of colors[1].matchAll(/^ {4}(\w+): \{/gm)) out.add(m[1]);
  for (const m of src.matchAll(/\.prompt\(\s*"([^"]+)"/g)) out.add(m[1]);
  for (const m of src.matchAll(/title: "([^"]+)"/g)) out.add(m[1]);
  out.add('No color').add('OK').add('Name').add('Search');
  return out;
}

test('every litegraph menu and dialog literal has a locale key', () => {
  const lits = litegraphLiterals();
  assert.ok(lits.size > 50, `found only ${lits.size} literals`);
  const dropped = [...lits].filter((l) => !dropEntries([{ content: l }]).length);
  assert.deepEqual(dropped.sort(), ['Convert to Subgraph 🆕', 'Properties Panel']);
  const missing = [...lits].filter((l) => !dropped.includes(l) && !Object.hasOwn(LITEGRAPH_KEYS, l) && !/^Nice text$/.test(l));
  assert.deepEqual(missing, [], 'litegraph literals without a key in LITEGRAPH_KEYS');
  for (const [code, strings] of Object.entries(LOCALES)) {
    for (const key of Object.values(LITEGRAPH_KEYS)) assert.ok(strings[key], `${code} has ${key}`);
  }
});

test('translateLiteral translates whole literals only', () => {
  setLocale('zh', null);
  try {
    assert.equal(translateLiteral('Add Reroute'), '添加中转点');
    assert.equal(translateLiteral(' Never '), '从不');
    assert.equal(translateLiteral('pale_blue'), '淡蓝');
    assert.equal(translateLiteral('KSampler'), null, 'node types stay');
    assert.equal(translateLiteral('Add Reroute here'), null);
    assert.equal(translateLiteral('toString'), null, 'no prototype keys');
  } finally {
    setLocale('en', null);
  }
  assert.equal(translateLiteral('Value'), 'Value');
});
