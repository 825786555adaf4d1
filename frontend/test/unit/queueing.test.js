// How the editor queues: over the websocket when the server announces
// forgeflow_ws_prompt, over HTTP otherwise (ComfyUI), and what happens when the socket
// closes before the answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WSClient, WSRequestError } from '../../src/ws.js';
import { Api, ApiError, uuid4 } from '../../src/api.js';

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
  }
  send(s) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(s));
  }
  close() {
    this.readyState = 3;
    this.onclose?.();
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  receive(msg) {
    this.onmessage({ data: JSON.stringify(msg) });
  }
}

/** A client connected to a server whose feature_flags answer is flags. */
function connected(flags) {
  FakeSocket.all = [];
  const c = new WSClient('ws://h/ws', { WebSocket: FakeSocket, setTimeout: () => {} });
  c.connect();
  const s = FakeSocket.all[0];
  s.open();
  s.receive({ type: 'status', data: { status: {}, sid: 'me' } });
  if (flags) s.receive({ type: 'feature_flags', data: flags });
  return { c, s };
}

/** A fetch that records requests and answers from routes: "METHOD path" → [status, body]. */
function fakeFetch(routes) {
  const calls = [];
  const fn = async (url, opts = {}) => {
    const method = opts.method || 'GET';
    const u = new URL(url, 'http://h');
    calls.push({ method, path: u.pathname, body: opts.body ? JSON.parse(opts.body) : undefined });
    const [status, body] = routes[`${method} ${u.pathname}`] || [404, { error: 'not found' }];
    return { ok: status < 300, status, text: async () => (body === undefined ? '' : JSON.stringify(body)) };
  };
  fn.calls = calls;
  return fn;
}

test('uuid4 makes canonical version-4 UUIDs', () => {
  const seen = new Set();
  for (let i = 0; i < 100; i++) {
    const u = uuid4();
    assert.match(u, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    seen.add(u);
  }
  assert.equal(seen.size, 100);
});

test('requests match their answers by id; other messages still reach listeners', async () => {
  const { c, s } = connected({ forgeflow_ws_prompt: true });
  const got = [];
  c.on((type) => got.push(type));
  assert.equal(c.canRequest(), true);
  const a = c.request('prompt', { prompt: {} });
  const b = c.request('queue', { clear: true });
  const [ma, mb] = s.sent.slice(-2);
  assert.equal(ma.type, 'prompt');
  assert.notEqual(ma.id, mb.id);
  s.receive({ type: 'queue_result', data: { id: mb.id } });
  s.receive({ type: 'executing', data: { node: '1', prompt_id: 'x' } });
  s.receive({ type: 'prompt_error', data: { id: ma.id, status: 400, error: { type: 'prompt_no_outputs', message: 'Prompt has no outputs' }, node_errors: {} } });
  assert.deepEqual(await b, { id: mb.id });
  await assert.rejects(a, (e) => e instanceof WSRequestError && !e.lost && e.status === 400 && e.body.error.type === 'prompt_no_outputs');
  assert.deepEqual(got, ['executing']);
  // An answer of another type or an unknown id is an ordinary message.
  s.receive({ type: 'prompt_result', data: { id: 'r999' } });
  assert.deepEqual(got, ['executing', 'prompt_result']);
});

test('a closed socket fails its pending requests as lost and forgets the server flags', async () => {
  const { c, s } = connected({ forgeflow_ws_prompt: true });
  const p = c.request('prompt', {});
  s.close();
  await assert.rejects(p, (e) => e.lost === true);
  assert.equal(c.canRequest(), false);
  assert.deepEqual(c.serverFlags, {});
});

test('without the server flag (ComfyUI) nothing goes over the socket', async () => {
  const { c, s } = connected({ supports_preview_metadata: true, max_upload_size: 1 });
  assert.equal(c.canRequest(), false);
  const fetch = fakeFetch({ 'POST /api/prompt': [200, { prompt_id: 'p', number: 0, node_errors: {} }], 'POST /api/queue': [200], 'POST /api/interrupt': [200] });
  const api = new Api('', fetch);
  api.useSocket(c);
  const sent = s.sent.length;
  assert.equal((await api.queuePrompt({ 1: {} }, 'me', { nodes: [] })).prompt_id, 'p');
  await api.deleteQueued(['a']);
  await api.interrupt('p');
  assert.equal(s.sent.length, sent);
  assert.deepEqual(fetch.calls.map((c) => `${c.method} ${c.path}`), ['POST /api/prompt', 'POST /api/queue', 'POST /api/interrupt']);
  assert.equal(fetch.calls[0].body.prompt_id, undefined, 'the HTTP body is the one the editor always sent');
  assert.deepEqual(fetch.calls[2].body, { prompt_id: 'p' });
});

test('with the flag, prompts and queue changes go over the socket, errors as ApiError', async () => {
  const { c, s } = connected({ forgeflow_ws_prompt: true });
  const fetch = fakeFetch({});
  const api = new Api('', fetch);
  api.useSocket(c);
  const q = api.queuePrompt({ 1: {} }, 'me', { nodes: [] }, true);
  const m = s.sent.at(-1);
  assert.equal(m.type, 'prompt');
  assert.deepEqual(m.data.extra_data, { extra_pnginfo: { workflow: { nodes: [] } } });
  assert.equal(m.data.front, true);
  assert.match(m.data.prompt_id, /^[0-9a-f-]{36}$/);
  s.receive({ type: 'prompt_result', data: { id: m.id, prompt_id: m.data.prompt_id, number: -1, node_errors: {} } });
  assert.equal((await q).number, -1);

  const bad = api.queuePrompt({ 1: {} }, 'me', {});
  const mb = s.sent.at(-1);
  s.receive({ type: 'prompt_error', data: { id: mb.id, status: 400, error: { type: 'prompt_outputs_failed_validation', message: 'Prompt outputs failed validation' },
    node_errors: { 1: { errors: [], class_type: 'X' } } } });
  await assert.rejects(bad, (e) => e instanceof ApiError && e.status === 400 && e.body.node_errors[1].class_type === 'X');

  const del = api.deleteQueued(['a']);
  assert.deepEqual(s.sent.at(-1).data, { delete: ['a'] });
  s.receive({ type: 'queue_result', data: { id: s.sent.at(-1).id } });
  await del;
  const irq = api.interrupt('p1');
  assert.deepEqual(s.sent.at(-1), { type: 'interrupt', id: s.sent.at(-1).id, data: { prompt_id: 'p1' } });
  s.receive({ type: 'interrupt_result', data: { id: s.sent.at(-1).id, prompt_id: 'p1' } });
  await irq;
  assert.deepEqual(fetch.calls, [], 'no HTTP request');
});

test('a prompt whose answer was lost is sent over HTTP only when the server does not know it', async () => {
  for (const known of [false, true]) {
    const { c, s } = connected({ forgeflow_ws_prompt: true });
    const routes = { 'POST /api/prompt': [200, { prompt_id: 'from-http', number: 3, node_errors: {} }] };
    const fetch = fakeFetch(routes);
    const api = new Api('', fetch);
    api.useSocket(c);
    const q = api.queuePrompt({ 1: {} }, 'me', {});
    const id = s.sent.at(-1).data.prompt_id;
    if (known) routes[`GET /api/jobs/${id}`] = [200, { id, status: 'pending' }];
    s.close();
    const res = await q;
    const paths = fetch.calls.map((c) => `${c.method} ${c.path}`);
    if (known) {
      assert.deepEqual(paths, [`GET /api/jobs/${id}`]);
      assert.equal(res.prompt_id, id);
    } else {
      assert.deepEqual(paths, [`GET /api/jobs/${id}`, 'POST /api/prompt']);
      assert.equal(fetch.calls[1].body.prompt_id, id, 'sent again with the same id, so a duplicate is refused');
    }
  }
});

test('a lost global interrupt is not repeated; a named one is', async () => {
  for (const id of [undefined, 'p1']) {
    const { c, s } = connected({ forgeflow_ws_prompt: true });
    const fetch = fakeFetch({ 'POST /api/interrupt': [200] });
    const api = new Api('', fetch);
    api.useSocket(c);
    const p = api.interrupt(id);
    s.close();
    await p;
    assert.equal(fetch.calls.length, id ? 1 : 0);
  }
});

test('an upload over the max_upload_size the server announced is refused before it is sent', async () => {
  const { c } = connected({ max_upload_size: 10 });
  const sent = [];
  const api = new Api('', async (url, opts) => {
    sent.push(url);
    return { ok: true, status: 200, text: async () => JSON.stringify({ name: opts.body.get('image').name, subfolder: '', type: 'input' }) };
  });
  api.useSocket(c);
  await assert.rejects(api.uploadImage(new File([new Uint8Array(11)], 'big.png')),
    (e) => e instanceof ApiError && e.status === 413 && /big\.png is too large: 11 bytes.*at most 10/.test(e.message));
  assert.deepEqual(sent, []);
  assert.equal((await api.uploadImage(new File([new Uint8Array(10)], 'ok.png'))).name, 'ok.png');
  assert.equal(sent.length, 1);
  // Without the flag (a server that did not announce it), the server decides.
  const { c: c2 } = connected(null);
  api.useSocket(c2);
  await api.uploadImage(new File([new Uint8Array(11)], 'big.png'));
  assert.equal(sent.length, 2);
});
