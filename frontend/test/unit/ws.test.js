import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBinaryFrame, WSClient, PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA } from '../../src/ws.js';

function frame(words, ...parts) {
  const head = new Uint8Array(words.length * 4);
  const dv = new DataView(head.buffer);
  words.forEach((w, i) => dv.setUint32(i * 4, w));
  const all = [head, ...parts];
  const out = new Uint8Array(all.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of all) {
    out.set(p, o);
    o += p.length;
  }
  return out.buffer;
}

test('parseBinaryFrame reads type-1 preview frames', () => {
  const f = parseBinaryFrame(frame([1, 2], new Uint8Array([9, 8, 7])));
  assert.equal(f.event, PREVIEW_IMAGE);
  assert.equal(f.mime, 'image/png');
  assert.deepEqual([...f.image], [9, 8, 7]);
  assert.equal(parseBinaryFrame(frame([1, 1])).mime, 'image/jpeg');
});

test('parseBinaryFrame reads type-4 frames with metadata', () => {
  const meta = new TextEncoder().encode(JSON.stringify({ node_id: '3', prompt_id: 'p', image_type: 'image/png' }));
  const f = parseBinaryFrame(frame([4, meta.length], meta, new Uint8Array([1, 2])));
  assert.equal(f.event, PREVIEW_IMAGE_WITH_METADATA);
  assert.equal(f.mime, 'image/png');
  assert.equal(f.metadata.node_id, '3');
  assert.deepEqual([...f.image], [1, 2]);
});

test('parseBinaryFrame rejects bad frames with a reason', () => {
  assert.throws(() => parseBinaryFrame(new ArrayBuffer(3)), /shorter than its 8-byte header/);
  assert.throws(() => parseBinaryFrame(frame([1, 7])), /unknown image type 7/);
  assert.throws(() => parseBinaryFrame(frame([4, 100])), /runs past/);
  assert.throws(() => parseBinaryFrame(frame([4, 2], new Uint8Array([123, 120]))), /not JSON/);
  assert.throws(() => parseBinaryFrame(frame([9, 0])), /unknown binary event type 9/);
});

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(s) {
    this.sent.push(s);
  }
  close() {
    this.onclose?.();
  }
}

test('WSClient dispatches messages, keeps the session id and reconnects with it', () => {
  FakeSocket.all = [];
  const timers = [];
  const c = new WSClient('ws://h/ws', { WebSocket: FakeSocket, setTimeout: (f) => timers.push(f) });
  const got = [];
  c.on((type, data) => got.push([type, data]));
  c.connect();
  const s = FakeSocket.all[0];
  assert.equal(s.url, 'ws://h/ws');
  assert.equal(s.binaryType, 'arraybuffer');
  s.onopen();
  assert.deepEqual(JSON.parse(s.sent[0]), { type: 'feature_flags', data: { supports_preview_metadata: true } });
  s.onmessage({ data: JSON.stringify({ type: 'status', data: { status: { exec_info: { queue_remaining: 0 } }, sid: 'abc' } }) });
  s.onmessage({ data: JSON.stringify({ type: 'progress', data: { value: 1, max: 4, node: '3' } }) });
  s.onmessage({ data: frame([1, 1], new Uint8Array([5])) });
  s.onmessage({ data: 'not json' });
  s.onmessage({ data: frame([7, 0]) });
  assert.equal(c.clientId, 'abc');
  assert.deepEqual(got.map((g) => g[0]), ['open', 'status', 'progress', 'preview', 'error', 'error']);
  assert.deepEqual(got[2][1], { value: 1, max: 4, node: '3' });
  // A dropped connection comes back with the same client id.
  s.onclose();
  assert.equal(timers.length, 1);
  timers[0]();
  assert.equal(FakeSocket.all[1].url, 'ws://h/ws?clientId=abc');
  // After close() it stays closed.
  c.close();
  assert.equal(timers.length, 1);
});
