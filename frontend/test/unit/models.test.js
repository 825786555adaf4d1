import { test } from 'node:test';
import assert from 'node:assert/strict';
import { findMissingModels, workflowModelEntries, inputFolder, formatBytes, hostOf, downloadText } from '../../src/models.js';
import { Api } from '../../src/api.js';
import { WSClient } from '../../src/ws.js';

// A workflow as ComfyUI's front end saves one with model sources: a top-level models
// list and one in a node's properties.
const wf = {
  nodes: [
    { id: 4, type: 'CheckpointLoaderSimple', properties: { models: [{ name: 'sd15.safetensors', url: 'https://huggingface.co/o/r/resolve/main/sd15.safetensors', directory: 'checkpoints' }] } },
    { id: 10, type: 'LoraLoader', properties: {} },
    { id: 11, type: 'UpscaleModelLoader', properties: {} },
    { id: 12, type: 'CLIPVisionLoader', properties: { models: [{ name: 'broken' }, null, 'x'] } },
  ],
  models: [
    { name: 'detail.safetensors', url: 'https://civitai.com/api/download/models/1', directory: 'loras' },
    { name: 'present.safetensors', url: 'https://huggingface.co/x', directory: 'vae' },
  ],
};

test('the models a workflow names that the server lacks, with their sources', () => {
  const nodes = [
    { id: 4, type: 'CheckpointLoaderSimple', widgets: [{ name: 'ckpt_name', value: 'sd15.safetensors', values: ['other.safetensors'] }] },
    { id: 10, type: 'LoraLoader', widgets: [{ name: 'lora_name', value: 'detail.safetensors', values: [] }, { name: 'strength', value: 1 }] },
    { id: 11, type: 'UpscaleModelLoader', widgets: [{ name: 'model_name', value: '4x.pth', values: [] }] },
    { id: 12, type: 'CLIPVisionLoader', widgets: [{ name: 'clip_name', value: 'vision.safetensors', values: ['vision.safetensors'] }] },
    { id: 13, type: 'KSampler', widgets: [{ name: 'sampler_name', value: 'nope', values: ['euler'] }] },
    { id: 14, type: 'CheckpointLoaderSimple', widgets: [{ name: 'ckpt_name', value: '', values: [] }] },
  ];
  const got = findMissingModels(wf, nodes, { vae: ['present.safetensors'], loras: [] });
  assert.deepEqual(got, [
    { name: 'sd15.safetensors', folder: 'checkpoints', url: 'https://huggingface.co/o/r/resolve/main/sd15.safetensors', nodes: [4] },
    { name: 'detail.safetensors', folder: 'loras', url: 'https://civitai.com/api/download/models/1', nodes: [10] },
    { name: '4x.pth', folder: 'upscale_models', url: '', nodes: [11] },
  ]);
  // Present everywhere: nothing missing.
  const ok = findMissingModels({ nodes: [] }, [{ id: 1, type: 'VAELoader', widgets: [{ name: 'vae_name', value: 'a.safetensors', values: ['a.safetensors'] }] }], {});
  assert.deepEqual(ok, []);
});

test('model entries, folders, sizes and hosts', () => {
  assert.equal(workflowModelEntries(wf).length, 3);
  assert.equal(workflowModelEntries({}).length, 0);
  assert.equal(inputFolder('CheckpointLoaderSimple', 'ckpt_name'), 'checkpoints');
  assert.equal(inputFolder('CLIPVisionLoader', 'clip_name'), 'clip_vision');
  assert.equal(inputFolder('DualCLIPLoader', 'clip_name2'), 'text_encoders');
  assert.equal(inputFolder('UpscaleModelLoader', 'model_name'), 'upscale_models');
  assert.equal(inputFolder('SomethingElse', 'model_name'), null);
  assert.equal(formatBytes(2_130_000_000), '2.1 GB');
  assert.equal(formatBytes(335_000_000), '335.0 MB');
  assert.equal(formatBytes(12), '12 B');
  assert.equal(hostOf('https://huggingface.co/a/b'), 'huggingface.co');
  assert.equal(hostOf('not a url'), '');
  assert.match(downloadText({ status: 'running', done: 5e8, total: 2e9, rate: 4e7, eta: 37.4 }), /500\.0 MB \/ 2\.0 GB · 40\.0 MB\/s, 37 s left/);
  assert.match(downloadText({ status: 'error', error: 'HTTP 404' }), /HTTP 404/);
});

// A fake fetch answering 401 until the right token comes.
function fakeFetch(good) {
  const calls = [];
  const fn = async (url, opts) => {
    calls.push({ url, auth: opts.headers?.Authorization });
    const ok = opts.headers?.Authorization === `Bearer ${good}`;
    return { ok, status: ok ? 200 : 401, text: async () => (ok ? '{"x": 1}' : '{"error": "authentication required"}') };
  };
  return { fn, calls };
}

test('the API asks for the token once on a 401 and sends it from then on', async () => {
  const f = fakeFetch('tok');
  const api = new Api('', f.fn);
  let asked = 0;
  api.onUnauthorized = async (body, sent) => {
    asked++;
    assert.equal(body.error, 'authentication required');
    return sent ? null : 'tok';
  };
  const [a, b] = await Promise.all([api.request('/a'), api.request('/b')]);
  assert.deepEqual([a, b], [{ x: 1 }, { x: 1 }]);
  assert.equal(asked, 1, 'concurrent 401s share one prompt');
  assert.equal(api.token, 'tok');
  await api.request('/c');
  assert.equal(f.calls.at(-1).auth, 'Bearer tok');
  // Images and the websocket carry it in the query.
  assert.equal(api.viewURL({ filename: 'a b.png' }), '/api/view?filename=a+b.png&subfolder=&type=output&token=tok');
  assert.equal(api.wsURL({ protocol: 'https:', host: 'h:1' }), 'wss://h:1/ws?token=tok');
  // A wrong kept token: asked again, refused again → the error surfaces.
  const api2 = new Api('', fakeFetch('right').fn);
  api2.token = 'stale';
  api2.onUnauthorized = async () => null;
  await assert.rejects(api2.request('/a'), (e) => e.status === 401);
});

test('the websocket URL keeps the token when the client id is added', () => {
  const opened = [];
  class FakeWS {
    constructor(u) {
      opened.push(u);
    }
  }
  const c = new WSClient('ws://h/ws?token=t', { WebSocket: FakeWS });
  c.clientId = 'abc';
  c.connect();
  assert.equal(opened[0], 'ws://h/ws?token=t&clientId=abc');
});
