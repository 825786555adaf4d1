import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { widgetLayout, graphToPrompt, expandDynamicPrompt, nextSeed, nextComboValue, searchNodes, categories, schemaInputs, defaultValue, ConvertError } from '../../src/workflow.js';

const defs = {
  EmptyImage: {
    display_name: 'EmptyImage', category: 'image',
    input: { required: { width: ['INT', { default: 512, min: 1, max: 16384 }], height: ['INT', { default: 512, min: 1 }], batch_size: ['INT', { default: 1, min: 1 }], color: ['INT', { default: 0 }] } },
    input_order: { required: ['width', 'height', 'batch_size', 'color'] }, output: ['IMAGE'], output_name: ['IMAGE'],
  },
  ImageInvert: { display_name: 'Invert Image', category: 'image', input: { required: { image: ['IMAGE'] } }, output: ['IMAGE'] },
  SaveImage: { display_name: 'Save Image', category: 'image', output_node: true, input: { required: { images: ['IMAGE'], filename_prefix: ['STRING', { default: 'ComfyUI' }] } }, input_order: { required: ['images', 'filename_prefix'] }, output: [] },
  KSampler: {
    display_name: 'KSampler', category: 'sampling',
    input: { required: { model: ['MODEL'], seed: ['INT', { default: 0, min: 0, max: 2 ** 64 - 1 }], steps: ['INT', { default: 20 }], sampler_name: [['euler', 'dpmpp_2m']], latent_image: ['LATENT'] } },
    input_order: { required: ['model', 'seed', 'steps', 'sampler_name', 'latent_image'] }, output: ['LATENT'],
  },
  LoadImage: { display_name: 'Load Image', category: 'image', input: { required: { image: [['a.png', 'b.png'], { image_upload: true }] } }, output: ['IMAGE', 'MASK'] },
  ComboNew: { category: 'x', input: { required: { mode: ['COMBO', { options: ['x', 'y'], control_after_generate: true }], text: ['STRING', { forceInput: true }] } }, output: [] },
};

test('widgetLayout puts front-end-only widgets where the front end does', () => {
  assert.deepEqual(widgetLayout(defs.KSampler).map((w) => `${w.kind}:${w.name}`),
    ['value:seed', 'control:control_after_generate', 'value:steps', 'value:sampler_name']);
  assert.deepEqual(widgetLayout(defs.LoadImage).map((w) => `${w.kind}:${w.name}`), ['value:image', 'upload:upload']);
  assert.deepEqual(widgetLayout(defs.ComboNew).map((w) => `${w.kind}:${w.name}`),
    ['value:mode', 'control:control_after_generate', 'filter:control_filter_list']);
  assert.deepEqual(schemaInputs(defs.ComboNew)[0].options.options, ['x', 'y']);
});

const chain = (modes = {}) => ({
  version: 0.4,
  nodes: [
    { id: 1, type: 'EmptyImage', mode: modes[1] ?? 0, inputs: [], outputs: [{ name: 'IMAGE', type: 'IMAGE', links: [1] }], widgets_values: [64, 32, 1, 255] },
    { id: 2, type: 'ImageInvert', mode: modes[2] ?? 0, inputs: [{ name: 'image', type: 'IMAGE', link: 1 }], outputs: [{ name: 'IMAGE', type: 'IMAGE', links: [2] }] },
    { id: 3, type: 'SaveImage', mode: modes[3] ?? 0, title: 'Out', inputs: [{ name: 'images', type: 'IMAGE', link: 2 }, { name: 'filename_prefix', type: 'STRING', widget: { name: 'filename_prefix' }, link: null }], outputs: [], widgets_values: ['pre'] },
  ],
  links: [[1, 1, 0, 2, 0, 'IMAGE'], [2, 2, 0, 3, 0, 'IMAGE']],
});

test('graphToPrompt converts widgets and links', () => {
  const p = graphToPrompt(chain(), defs);
  assert.deepEqual(p, {
    1: { class_type: 'EmptyImage', inputs: { width: 64, height: 32, batch_size: 1, color: 255 }, _meta: { title: 'EmptyImage' } },
    2: { class_type: 'ImageInvert', inputs: { image: ['1', 0] }, _meta: { title: 'Invert Image' } },
    3: { class_type: 'SaveImage', inputs: { images: ['2', 0], filename_prefix: 'pre' }, _meta: { title: 'Out' } },
  });
});

test('graphToPrompt follows bypassed nodes and drops muted ones', () => {
  const bypassed = graphToPrompt(chain({ 2: 4 }), defs);
  assert.equal(bypassed[2], undefined);
  assert.deepEqual(bypassed[3].inputs.images, ['1', 0]);
  const muted = graphToPrompt(chain({ 2: 2 }), defs);
  assert.equal(muted[2], undefined);
  assert.equal(muted[3].inputs.images, undefined, 'an input linked to a muted node is dropped');
});

test('graphToPrompt: a widget converted to an input takes the link', () => {
  const wf = chain();
  wf.nodes.push({ id: 4, type: 'PrimitiveNode', inputs: [], outputs: [{ name: 'STRING', type: 'STRING', links: [3] }], widgets_values: ['from-primitive'] });
  wf.nodes[2].inputs[1].link = 3;
  wf.links.push([3, 4, 0, 3, 1, 'STRING']);
  assert.equal(graphToPrompt(wf, defs)[3].inputs.filename_prefix, 'from-primitive');
  assert.equal(graphToPrompt(wf, defs)[4], undefined);
});

test('graphToPrompt: links as objects, missing widgets take defaults, seed control skipped', () => {
  const wf = {
    nodes: [{ id: 7, type: 'KSampler', inputs: [], outputs: [], widgets_values: [42, 'randomize'] }],
    links: [],
  };
  assert.deepEqual(graphToPrompt(wf, defs)[7].inputs, { seed: 42, steps: 20, sampler_name: 'euler' });
  const obj = chain();
  obj.links = obj.links.map(([id, o, os, t, ts, type]) => ({ id, origin_id: o, origin_slot: os, target_id: t, target_slot: ts, type }));
  assert.deepEqual(graphToPrompt(obj, defs)[3].inputs.images, ['2', 0]);
});

test('graphToPrompt reports bad workflows', () => {
  assert.throws(() => graphToPrompt({}, defs), ConvertError);
  assert.throws(() => graphToPrompt({ nodes: [{ id: 1, type: 'Nope' }], links: [] }, defs), /not available: Nope/);
  const dup = chain();
  dup.nodes.push({ ...dup.nodes[0] });
  assert.throws(() => graphToPrompt(dup, defs), /duplicate node id/);
  const broken = chain();
  broken.links[0][1] = 99;
  assert.throws(() => graphToPrompt(broken, defs), /node 99, which does not exist/);
});

test('expandDynamicPrompt picks options, strips comments, keeps escapes', () => {
  const first = () => 0;
  const last = (n) => n - 1;
  assert.equal(expandDynamicPrompt('a {red|green|blue} ball', first), 'a red ball');
  assert.equal(expandDynamicPrompt('a {red|green|blue} ball', last), 'a blue ball');
  assert.equal(expandDynamicPrompt('{a|b} and {c|d}', last), 'b and d');
  assert.equal(expandDynamicPrompt('x /* {a|b} */ y // {c|d}\nz', first), 'x  y \nz');
  assert.equal(expandDynamicPrompt('plain', first), 'plain');
  // Only one escaped brace is ignored (the front end replaces the first occurrence).
  assert.equal(expandDynamicPrompt('\\{a|b\\}', first), '\\{a|b\\}');
  // Reversed braces make the front end loop forever; here it is an error.
  assert.throws(() => expandDynamicPrompt('} x {', first), /does not terminate/);
  const wf = { nodes: [{ id: 1, type: 'T', widgets_values: ['{cat|dog}'] }], links: [] };
  const d = { T: { input: { required: { text: ['STRING', { multiline: true, dynamicPrompts: true }] } }, output: [] } };
  assert.equal(graphToPrompt(wf, d, { choose: (n) => n - 1 })[1].inputs.text, 'dog');
});

test('nextSeed follows control_after_generate', () => {
  assert.equal(nextSeed(5, 'fixed'), 5);
  assert.equal(nextSeed(5, 'increment'), 6);
  assert.equal(nextSeed(5, 'decrement'), 4);
  assert.equal(nextSeed(0, 'decrement', { min: 0 }), 0);
  assert.equal(nextSeed(10, 'increment', { max: 10 }), 10);
  assert.equal(nextSeed(5, 'randomize', { min: 0, max: 99 }, () => 0.5), 50);
});

test('searchNodes ranks exact and prefix matches first', () => {
  assert.deepEqual(searchNodes(defs, 'invert'), ['ImageInvert']);
  assert.equal(searchNodes(defs, 'save image')[0], 'SaveImage');
  assert.deepEqual(searchNodes(defs, 'image').slice(0, 1), ['EmptyImage'].filter(() => false).concat(searchNodes(defs, 'image')[0]));
  assert.ok(searchNodes(defs, 'sampling').includes('KSampler'), 'category matches');
  assert.deepEqual(searchNodes(defs, 'zzz'), []);
  assert.deepEqual(searchNodes(defs, ''), ['EmptyImage', 'ImageInvert', 'LoadImage', 'SaveImage', 'KSampler', 'ComboNew'], 'empty query: by category, then name');
  assert.deepEqual(categories(defs).map((c) => c[0]), ['image', 'sampling', 'x']);
});

// ComfyUI's own example workflows and the prompts its front end queued for them
// (../shared/reference/workflows): the converter must produce the same prompt.
const here = path.dirname(fileURLToPath(import.meta.url));
const refDir = process.env.FORGEFLOW_SHARED_DIR
  ? path.join(process.env.FORGEFLOW_SHARED_DIR, 'reference')
  : path.resolve(here, '../../../../shared/reference');

test('graphToPrompt matches ComfyUI on the reference workflows', (t) => {
  if (!existsSync(path.join(refDir, 'workflows', 'manifest.json'))) {
    if (process.env.CI === 'true') assert.fail(`reference fixtures missing at ${refDir} (CI=true)`);
    t.skip(`no reference fixtures at ${refDir}`);
    return;
  }
  const refDefs = JSON.parse(readFileSync(path.join(refDir, 'comfyui-0.3.64-object_info.json'), 'utf8'));
  const manifest = JSON.parse(readFileSync(path.join(refDir, 'workflows', 'manifest.json'), 'utf8'));
  let compared = 0;
  const diffs = [];
  for (const e of manifest) {
    if (!e.has_prompt || e.has_subgraphs || e.legacy_group_node_instances?.length) continue;
    const wf = JSON.parse(readFileSync(path.join(refDir, 'workflows', e.file), 'utf8'));
    const want = JSON.parse(readFileSync(path.join(refDir, 'workflows', e.prompt_file), 'utf8'));
    let got;
    try {
      got = graphToPrompt(wf, refDefs, { choose: () => 0 });
    } catch (err) {
      if (err.missingTypes) continue;
      throw new Error(`${e.file}: ${err.message}`);
    }
    compared++;
    for (const id of new Set([...Object.keys(want), ...Object.keys(got)])) {
      const g = got[id];
      const w = want[id];
      if (!g || !w) {
        diffs.push(`${e.file}: node ${id} ${g ? 'extra' : 'missing'}`);
        continue;
      }
      assert.equal(g.class_type, w.class_type, `${e.file} node ${id}`);
      const inputs = new Map(schemaInputs(refDefs[g.class_type]).map((i) => [i.name, i]));
      for (const k of new Set([...Object.keys(g.inputs), ...Object.keys(w.inputs).filter((k) => inputs.has(k))])) {
        if (!(k in w.inputs)) {
          const def = inputs.has(k) ? defaultValue(inputs.get(k)) : undefined;
          if (JSON.stringify(g.inputs[k]) !== JSON.stringify(def)) diffs.push(`${e.file}: node ${id} ${k}=${JSON.stringify(g.inputs[k])} absent from reference, not the default`);
          continue;
        }
        if (JSON.stringify(g.inputs[k]) !== JSON.stringify(w.inputs[k])) {
          diffs.push(`${e.file}: node ${id} (${g.class_type}) ${k}: got ${JSON.stringify(g.inputs[k])}, want ${JSON.stringify(w.inputs[k])}`);
        }
      }
    }
  }
  assert.deepEqual(diffs, []);
  assert.ok(compared >= 20, `only ${compared} pairs compared`);
  t.diagnostic(`${compared} reference workflow/prompt pairs compared`);
});

test('nextComboValue follows control_after_generate on a combo, with its filter', () => {
  const c = ['euler', 'euler_ancestral', 'heun', 'dpmpp_2m', 'DPM_fast'];
  assert.equal(nextComboValue('heun', 'fixed', c), 'heun');
  assert.equal(nextComboValue('heun', 'increment', c), 'dpmpp_2m');
  assert.equal(nextComboValue('heun', 'decrement', c), 'euler_ancestral');
  assert.equal(nextComboValue('DPM_fast', 'increment', c), 'DPM_fast', 'clamped at the end, no wrap');
  assert.equal(nextComboValue('euler', 'decrement', c), 'euler', 'clamped at the start');
  assert.equal(nextComboValue('heun', 'randomize', c, '', () => 0.99), 'DPM_fast');
  assert.equal(nextComboValue('heun', 'randomize', c, '', () => 0), 'euler');
  // The filter narrows the list first: a substring, case-insensitive…
  // (['dpmpp_2m', 'DPM_fast']; a value outside it is position -1, so increment gives the first).
  assert.equal(nextComboValue('euler', 'increment', c, 'dpm'), 'dpmpp_2m');
  assert.equal(nextComboValue('dpmpp_2m', 'increment', c, 'dpm'), 'DPM_fast');
  assert.equal(nextComboValue('euler', 'decrement', c, 'dpm'), 'dpmpp_2m');
  // …or a /regex/ (case-sensitive); a bad regex falls back to the substring.
  assert.equal(nextComboValue('euler', 'increment', c, '/^euler/'), 'euler_ancestral');
  assert.equal(nextComboValue('euler_ancestral', 'increment', c, '/^euler/'), 'euler_ancestral');
  assert.equal(nextComboValue('heun', 'increment', c, '/[/'), 'heun', 'no choice contains "/[/": the value stays');
  assert.equal(nextComboValue('heun', 'increment', c, 'zzz'), 'heun', 'an empty list keeps the value');
  assert.equal(nextComboValue('heun', 'increment', []), 'heun');
});
