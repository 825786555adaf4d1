// The real txt2img run of the end-to-end suite (a test of editor.test.js, kept here to
// keep that file readable): CheckpointLoaderSimple → CLIPTextEncode ×2 → KSampler →
// VAEDecode → SaveImage on the random-weight sd15-tiny checkpoint the harness wrote.
import assert from 'node:assert/strict';
import { screenshot } from './harness.js';

/** Runs the test; h: the suite's page helpers (setWidget, widgetPos). */
export async function sampleTxt2img({ browser, server, t, h }) {
  const { setWidget, widgetPos } = h;
  // A real run of CheckpointLoaderSimple → CLIPTextEncode ×2 → KSampler → VAEDecode →
  // SaveImage on the random-weight sd15-tiny checkpoint the harness wrote; the text
  // encoder needs CLIP's vocabulary from the golden fixtures.
  if (!server.models.tokenizer) {
    if (process.env.CI === 'true') assert.fail(`${server.models.missing} (CI=true)`);
    t.skip(server.models.missing);
    return;
  }
  const steps = 4;
  // A fresh browser profile: no autosave, so the editor starts with its default graph.
  const ctx = await browser.newContext({ viewport: { width: 1400, height: 860 } });
  const p = await ctx.newPage();
  const pageErrors = [];
  p.on('pageerror', (e) => pageErrors.push(e.message));
  await p.goto(server.url);
  await p.waitForSelector('body[data-ready="true"]');
  const ids = await p.evaluate(() => Object.fromEntries(window.forgeflow.graph._nodes.map((n) => [n.type, n.id])));
  for (const type of ['CheckpointLoaderSimple', 'EmptyLatentImage', 'KSampler', 'VAEDecode', 'SaveImage']) assert.ok(ids[type], `default graph has ${type}`);
  // Pick the checkpoint from the combo's list, as a user would.
  const [cx, cy] = await widgetPos(ids.CheckpointLoaderSimple, 'ckpt_name', p);
  await p.mouse.click(cx, cy);
  await p.locator('.litecontextmenu .litemenu-entry', { hasText: /^tiny\.safetensors$/ }).click();
  await setWidget(ids.EmptyLatentImage, 'width', 64, p);
  await setWidget(ids.EmptyLatentImage, 'height', 64, p);
  await setWidget(ids.KSampler, 'steps', steps, p);
  const prompt = await p.evaluate(() => window.forgeflow.toPrompt());
  assert.equal(prompt[ids.CheckpointLoaderSimple].inputs.ckpt_name, 'tiny.safetensors');
  assert.deepEqual([prompt[ids.EmptyLatentImage].inputs.width, prompt[ids.EmptyLatentImage].inputs.height], [64, 64]);
  assert.equal(prompt[ids.KSampler].inputs.steps, steps);
  // Record what the server sends, through the editor's own websocket client.
  await p.evaluate(() => {
    const rec = { progress: [], previews: [], start: null };
    window.__run = rec;
    window.forgeflow.ws.on((type, data) => {
      if (type === 'execution_start') rec.start = data.prompt_id;
      if (type === 'progress') rec.progress.push({ node: String(data.node), value: data.value, max: data.max });
      if (type === 'preview') {
        const r = { node: data.metadata?.node_id ?? window.forgeflow.state.running, mime: data.mime, size: null };
        rec.previews.push(r);
        createImageBitmap(new Blob([data.image], { type: data.mime })).then((b) => { r.size = [b.width, b.height]; }, (e) => { r.size = String(e); });
      }
    });
  });
  await p.click('#btn-queue');
  const promptId = await p.waitForFunction(() => window.__run.start, null, { timeout: 60000 }).then((h) => h.jsonValue());
  const img = p.locator(`#gallery-items figure[data-prompt-id="${promptId}"] img`).first();
  await img.waitFor({ timeout: 120000 });
  await p.waitForFunction((id) => {
    const i = document.querySelector(`#gallery-items figure[data-prompt-id="${id}"] img`);
    return i && i.complete && i.naturalWidth > 0;
  }, promptId, { timeout: 30000 });
  // 64×64 pixels → an 8×8 latent; sd15-tiny's VAE has two levels (one 2× upsampling,
  // diffusion/sd.TinyRandomSpec), not SD1.5's four, so it decodes to 16×16.
  assert.deepEqual(await img.evaluate((i) => [i.naturalWidth, i.naturalHeight]), [16, 16], 'the decoded image is in the gallery');
  const run = await p.evaluate(() => window.__run);
  const ks = String(ids.KSampler);
  assert.deepEqual(run.progress.filter((m) => m.node === ks).map((m) => `${m.value}/${m.max}`),
    Array.from({ length: steps }, (_, i) => `${i + 1}/${steps}`), `KSampler reports every step (got ${JSON.stringify(run.progress)})`);
  assert.ok(run.previews.length >= 1, 'at least one live preview frame');
  assert.equal(String(run.previews[0].node), ks, 'the preview belongs to the KSampler');
  await p.waitForFunction(() => window.__run.previews[0].size !== null);
  const size = await p.evaluate(() => window.__run.previews[0].size);
  assert.ok(Array.isArray(size) && size[0] > 0 && size[1] > 0, `the preview frame decodes (${size})`);
  // The last preview stays on the KSampler node and is drawn on the canvas.
  await p.waitForFunction((id) => window.forgeflow.state.drawn[id]?.startsWith('blob:'), ks, { timeout: 10000 });
  await p.waitForFunction(() => window.forgeflow.state.drawn && Object.values(window.forgeflow.state.drawn).some((s) => !s.startsWith('blob:')), null, { timeout: 10000 });
  await screenshot(p, '13-txt2img-run');
  assert.deepEqual(pageErrors, []);
  await ctx.close();
}
