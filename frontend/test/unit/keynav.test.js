import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keyboardOrder, nextIndex, arrowDelta, moveNodes } from '../../src/keynav.js';

test('keyboardOrder walks columns left to right, each top to bottom', () => {
  const nodes = [
    { id: 3, pos: [400, 0] }, { id: 1, pos: [0, 200] }, { id: 2, pos: [0, 0] }, { id: 10, pos: [400, 0] }, { id: 9, pos: [400, 0] },
  ];
  assert.deepEqual(keyboardOrder(nodes).map((n) => n.id), [2, 1, 3, 9, 10]);
  assert.deepEqual(nodes.map((n) => n.id), [3, 1, 2, 10, 9], 'the input is not reordered');
});

test('nextIndex steps through the nodes and leaves at either end', () => {
  assert.equal(nextIndex(-1, 3, false), 0);
  assert.equal(nextIndex(-1, 3, true), 2);
  assert.equal(nextIndex(0, 3, false), 1);
  assert.equal(nextIndex(2, 3, false), -1, 'Tab after the last node leaves the canvas');
  assert.equal(nextIndex(0, 3, true), -1, 'Shift+Tab before the first leaves the canvas');
  assert.equal(nextIndex(-1, 0, false), -1, 'an empty graph has nothing to select');
});

test('arrowDelta and moveNodes: arrows move unpinned nodes', () => {
  assert.deepEqual(arrowDelta('ArrowLeft'), [-1, 0]);
  assert.deepEqual(arrowDelta('ArrowDown'), [0, 1]);
  assert.equal(arrowDelta('a'), null);
  const a = { pos: [10, 20] };
  const pinned = { pos: [0, 0], pinned: true };
  assert.equal(moveNodes([a, pinned], 10, -1), 1);
  assert.deepEqual(a.pos, [20, 19]);
  assert.deepEqual(pinned.pos, [0, 0]);
});

test('the widget editor offers unlinked value widgets and reads its controls', async () => {
  const { editableWidgets, controlValue } = await import('../../src/widgeteditor.js');
  const node = {
    inputs: [{ name: 'seed', widget: { name: 'seed' }, link: 7 }, { name: 'steps', widget: { name: 'steps' }, link: null }],
    widgets: [{ name: 'seed', type: 'number' }, { name: 'steps', type: 'number' }, { name: 'sampler', type: 'combo' }, { name: 'dom', type: 'custom' }],
  };
  assert.deepEqual(editableWidgets(node).map((w) => w.name), ['steps', 'sampler'], 'linked and unknown widgets are left out');
  const num = { type: 'number' };
  assert.equal(controlValue(num, { value: '12.5' }), 12.5);
  assert.equal(controlValue(num, { value: '' }), undefined, 'an empty field keeps the value');
  assert.equal(controlValue(num, { value: 'abc' }), undefined);
  assert.equal(controlValue({ type: 'toggle' }, { checked: false }), false);
  assert.equal(controlValue({ type: 'combo' }, { value: 'karras' }), 'karras');
  assert.equal(controlValue({ type: 'button' }, {}), undefined);
});
