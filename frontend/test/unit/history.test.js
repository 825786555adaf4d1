import { test } from 'node:test';
import assert from 'node:assert/strict';
import { History } from '../../src/history.js';
import { depths, defaultPrompt } from '../../src/graphio.js';

test('History records changes and undoes/redoes them', () => {
  let state = 'a';
  const saved = [];
  const h = new History(() => state, (s) => { state = s; }, (s) => saved.push(s));
  h.reset();
  state = 'b';
  h.check();
  h.check(); // no change, no entry
  state = 'c';
  h.check();
  assert.ok(h.undo());
  assert.equal(state, 'b');
  assert.ok(h.undo());
  assert.equal(state, 'a');
  assert.equal(h.undo(), false);
  assert.ok(h.redo());
  assert.equal(state, 'b');
  state = 'd';
  h.check();
  assert.equal(h.redo(), false, 'a new change drops the redo list');
  assert.deepEqual(saved, ['a', 'b', 'c', 'b', 'a', 'b', 'd']);
});

test('depths lays out a prompt by its longest chains', () => {
  const p = { 1: { inputs: {} }, 2: { inputs: { a: ['1', 0] } }, 3: { inputs: { a: ['2', 0], b: ['1', 0] } }, 4: { inputs: { x: ['9', 0] } } };
  assert.deepEqual(depths(p), { 1: 0, 2: 1, 3: 2, 4: 0 });
});

test('defaultPrompt is txt2img when the nodes exist, else model-free', () => {
  const names = (p) => Object.values(p).map((n) => n.class_type).sort();
  const all = Object.fromEntries(['CheckpointLoaderSimple', 'CLIPTextEncode', 'EmptyLatentImage', 'KSampler', 'VAEDecode', 'SaveImage', 'EmptyImage', 'ImageInvert'].map((n) => [n, {}]));
  assert.ok(names(defaultPrompt(all)).includes('KSampler'));
  delete all.KSampler;
  assert.deepEqual(names(defaultPrompt(all)), ['EmptyImage', 'ImageInvert', 'SaveImage']);
  assert.deepEqual(defaultPrompt({}), {});
});
