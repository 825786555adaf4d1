import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';
import { readPngText, readPngGraph, PngError } from '../../src/png.js';

// A PNG container with the given chunks (CRCs are not checked by the reader, so they
// are left zero); no image data is needed to test the text chunks.
function png(chunks) {
  const parts = [Uint8Array.from([137, 80, 78, 71, 13, 10, 26, 10])];
  for (const [type, data] of chunks) {
    const head = new Uint8Array(8);
    new DataView(head.buffer).setUint32(0, data.length);
    head.set([...type].map((c) => c.charCodeAt(0)), 4);
    parts.push(head, data, new Uint8Array(4));
  }
  return Buffer.concat(parts);
}
const bytes = (s) => new TextEncoder().encode(s);
const cat = (...a) => Buffer.concat(a.map((x) => Buffer.from(x)));

test('readPngText reads tEXt and iTXt (plain and compressed)', async () => {
  const wf = JSON.stringify({ nodes: [{ id: 1, type: 'EmptyImage', title: '图像' }], links: [] });
  const b = png([
    ['IHDR', new Uint8Array(13)],
    ['tEXt', cat(bytes('prompt'), [0], bytes('{"1":{"class_type":"EmptyImage","inputs":{}}}'))],
    ['iTXt', cat(bytes('workflow'), [0, 1, 0], bytes('zh'), [0], [0], deflateSync(bytes(wf)))],
    ['iTXt', cat(bytes('note'), [0, 0, 0], [0], [0], bytes('héllo'))],
    ['IEND', new Uint8Array(0)],
  ]);
  const text = await readPngText(b);
  assert.equal(text.note, 'héllo');
  const g = await readPngGraph(b);
  assert.equal(g.workflow.nodes[0].title, '图像');
  assert.equal(g.prompt['1'].class_type, 'EmptyImage');
});

test('readPngText rejects what is not a PNG', async () => {
  await assert.rejects(readPngText(bytes('GIF89a....')), PngError);
  const truncated = png([['tEXt', bytes('a\0b')]]).subarray(0, 20);
  await assert.rejects(readPngText(truncated), /runs past the end/);
  const badJSON = png([['tEXt', cat(bytes('workflow'), [0], bytes('{nope'))], ['IEND', new Uint8Array(0)]]);
  await assert.rejects(readPngGraph(badJSON), /"workflow" text chunk is not JSON/);
});
