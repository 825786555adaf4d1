// The editor: a litegraph canvas over the graph, the toolbar, the queue panel, the
// workflow sidebar and the gallery, all against ComfyUI's public API.
import { LiteGraph, LGraph, LGraphCanvas, LGraphGroup } from '@comfyorg/litegraph';
import '@comfyorg/litegraph/style.css';
import './style.css';
import { Api } from './api.js';
import { WSClient } from './ws.js';
import { registerNodeTypes, comboValues, makeRoomForImage } from './nodes.js';
import { graphToPrompt, nextSeed, nextComboValue, MODE_ALWAYS, MODE_NEVER, MODE_BYPASS } from './workflow.js';
import { readPngGraph } from './png.js';
import { initLocale, t, setLocale, locale, LOCALE_NAMES, translateDom, onLocaleChange } from './i18n.js';
import { el, toast, promptText, openSearch, arrowKeys } from './ui.js';
import { defaultPrompt, buildFromPrompt } from './graphio.js';
import { History } from './history.js';
import { QueuePanel } from './queue.js';
import { localizeLitegraph } from './menus.js';
import { openWidgetEditor } from './widgeteditor.js';
import { keyboardOrder, nextIndex, arrowDelta, moveNodes, MOVE_STEP, PAN_STEP } from './keynav.js';
import { Models } from './models.js';
import { askToken, savedToken } from './auth.js';

const AUTOSAVE_KEY = 'forgeflow.workflow';
const NAME_KEY = 'forgeflow.workflowName';

const api = new Api();
// Run state drawn on the nodes (see nodes.js drawState).
const state = { running: null, progress: null, errors: {}, images: {}, drawn: {} };
const app = { LiteGraph, api, state, defs: {}, graph: null, canvas: null, ws: null, workflowName: null, loadAnyJSON: (o, n) => loadAnyJSON(o, n), toPrompt: () => graphToPrompt(app.graph.serialize(), app.defs), events: [], ranNodes: [], status: { key: null }, refreshDefs: (quiet) => refreshDefs(quiet) };
app.models = new Models(app);
// A server started with --auth-token: the kept token, or ask for it on the first 401.
api.token = savedToken();
api.onUnauthorized = (body, sent) => askToken(Boolean(sent));

/** Shows a status line by key, so that it follows a language switch. */
function setStatus(key, params) {
  app.status = { key, params };
  document.getElementById('status-text').textContent = key ? t(key, params) : '';
}
window.forgeflow = app;

async function main() {
  initLocale();
  onLocaleChange(() => {
    document.documentElement.lang = locale();
    translateDom(document);
    app.queuePanel?.render();
    setStatus(app.status.key, app.status.params);
    document.getElementById('current-workflow').textContent = app.workflowName || t('workflows.unsaved');
  });
  document.documentElement.lang = locale();
  translateDom(document);
  const sel = document.getElementById('locale-select');
  for (const [code, name] of Object.entries(LOCALE_NAMES)) sel.append(el('option', { value: code, text: name }));
  sel.value = locale();
  sel.addEventListener('change', () => setLocale(sel.value));

  try {
    app.defs = await api.objectInfo();
  } catch (e) {
    toast(t('error.objectInfo', { msg: e.message }), 'error', 60000);
    return;
  }
  // On a touch screen (coarse pointer) widgets and slots get finger-sized hit targets.
  if (window.matchMedia?.('(pointer: coarse)').matches) {
    LiteGraph.NODE_WIDGET_HEIGHT = 32;
    LiteGraph.NODE_SLOT_HEIGHT = 32;
    document.body.dataset.coarse = 'true';
  }
  registerNodeTypes(app.defs, { state, uploadImage });
  setupCanvas();
  app.history = new History(() => JSON.stringify(app.graph.serialize()), (s) => loadWorkflow(JSON.parse(s)), autosave);
  restore();
  app.history.reset();
  setupToolbar();
  setupDrop();
  setupKeys();
  app.queuePanel = new QueuePanel(app, { onHistory: addRunToGallery });
  connectWS();
  app.models.nudge();
  await app.queuePanel.refresh();
  document.body.dataset.ready = 'true';
}

function setupCanvas() {
  const canvasEl = document.getElementById('graph-canvas');
  LiteGraph.release_link_on_empty_shows_menu = false;
  const graph = new LGraph();
  const canvas = new LGraphCanvas(canvasEl, graph);
  canvas.allow_searchbox = false;
  canvas.show_info = false;
  localizeLitegraph(canvas);
  app.graph = graph;
  app.canvas = canvas;
  const resize = () => {
    const r = canvasEl.parentElement.getBoundingClientRect();
    canvas.resize(Math.max(1, Math.floor(r.width)), Math.max(1, Math.floor(r.height)));
    canvas.setDirty(true, true);
  };
  new ResizeObserver(resize).observe(canvasEl.parentElement);
  resize();
  canvasEl.addEventListener('litegraph:canvas', (e) => {
    const d = e.detail;
    // A mouse double-click opens the search on the browser's dblclick (below), after
    // the second button release; litegraph reports it on the second press, and the
    // press's default action would then take the focus away from the search box.
    if (d.subType === 'empty-double-click' && d.originalEvent?.pointerType !== 'mouse') showSearch(d.originalEvent);
    if (d.subType === 'after-change') app.history?.check();
  });
  // A link dropped on a slot of another type is refused by litegraph without a word;
  // say why. (after-drop-links fires for every drop; before-drop-links does not.)
  canvas.linkConnector.events.addEventListener('after-drop-links', (e) => {
    const { renderLinks, event } = e.detail;
    const rl = renderLinks?.[0];
    const node = graph.getNodeOnPos(event.canvasX, event.canvasY);
    if (!rl?.fromSlot || !node) return;
    const toInput = rl.toType === 'input';
    const i = slotAt(node, toInput, event.canvasX, event.canvasY);
    if (i < 0) return;
    const target = toInput ? node.inputs[i] : node.outputs[i];
    const [outType, inType, inSlot] = toInput ? [rl.fromSlot.type, target.type, target] : [target.type, rl.fromSlot.type, rl.fromSlot];
    if (!LiteGraph.isValidConnection(outType, inType)) {
      toast(t('link.refused', { from: outType, to: inType, input: inSlot.label || inSlot.name, node: toInput ? node.title : rl.node?.title ?? '' }), 'error');
    }
  });
  // litegraph detects double-clicks itself with a 300 ms window; the browser's own
  // dblclick (the user's system setting) opens the search too.
  canvasEl.addEventListener('dblclick', (e) => {
    const p = canvas.convertEventToCanvasOffset(e);
    if (!graph.getNodeOnPos(p[0], p[1]) && !graph.getGroupOnPos?.(p[0], p[1])) showSearch(e);
  });
  canvasEl.addEventListener('pointerup', () => setTimeout(() => app.history?.check(), 0));
  canvasEl.addEventListener('keyup', () => app.history?.check());
  setupTouch(canvasEl, canvas);
}

function slotAt(node, input, x, y) {
  const slots = (input ? node.inputs : node.outputs) ?? [];
  for (let i = 0; i < slots.length; i++) {
    const p = node.getConnectionPos(input, i);
    if (Math.abs(p[0] - x) < 16 && Math.abs(p[1] - y) < 12) return i;
  }
  return -1;
}

// Two-finger pan and pinch zoom: litegraph follows a single pointer; with two touch
// pointers down we move and scale the view ourselves.
function setupTouch(canvasEl, canvas) {
  const touches = new Map();
  let last = null;
  const mid = () => {
    const [a, b] = [...touches.values()];
    return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2, d: Math.hypot(a.x - b.x, a.y - b.y) };
  };
  canvasEl.addEventListener('pointerdown', (e) => {
    if (e.pointerType !== 'touch') return;
    touches.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (touches.size === 2) {
      last = mid();
      canvas.pointer.reset?.();
    }
  }, true);
  canvasEl.addEventListener('pointermove', (e) => {
    if (!touches.has(e.pointerId)) return;
    touches.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (touches.size !== 2 || !last) return;
    e.stopImmediatePropagation();
    const m = mid();
    const ds = canvas.ds;
    ds.offset[0] += (m.x - last.x) / ds.scale;
    ds.offset[1] += (m.y - last.y) / ds.scale;
    if (last.d > 0 && m.d > 0) {
      const r = canvasEl.getBoundingClientRect();
      ds.changeScale(ds.scale * (m.d / last.d), [m.x - r.left, m.y - r.top]);
    }
    last = m;
    canvas.setDirty(true, true);
  }, true);
  const up = (e) => {
    touches.delete(e.pointerId);
    if (touches.size < 2) last = null;
  };
  canvasEl.addEventListener('pointerup', up, true);
  canvasEl.addEventListener('pointercancel', up, true);
}

function showSearch(ev) {
  if (document.getElementById('search-dialog')) return;
  const pos = ev ? app.canvas.convertEventToCanvasOffset(ev) : centre();
  openSearch(app.defs, (type) => {
    const node = LiteGraph.createNode(type);
    if (!node) return;
    node.pos = [pos[0], pos[1]];
    app.graph.add(node);
    app.canvas.selectNode(node);
    app.canvas.setDirty(true, true);
    app.history.check();
    document.getElementById('graph-canvas').focus();
  });
}

function centre() {
  const c = app.canvas;
  return c.convertOffsetToCanvas([c.canvas.width / 2 / (window.devicePixelRatio || 1), c.canvas.height / 2 / (window.devicePixelRatio || 1)]);
}

function restore() {
  const saved = localStorage.getItem(AUTOSAVE_KEY);
  app.workflowName = localStorage.getItem(NAME_KEY);
  if (saved) {
    try {
      const wf = JSON.parse(saved);
      loadWorkflow(wf);
      offerModels(wf);
      return;
    } catch (e) {
      toast(t('error.restore', { msg: e.message }), 'error');
    }
  }
  const g = new LGraph();
  buildFromPrompt(g, defaultPrompt(app.defs), app.defs, LiteGraph);
  loadWorkflow(g.serialize());
}

function autosave(json) {
  localStorage.setItem(AUTOSAVE_KEY, json);
  if (app.workflowName) localStorage.setItem(NAME_KEY, app.workflowName);
  else localStorage.removeItem(NAME_KEY);
}

/**
 * Loads a UI workflow into the canvas; reports node types the server lacks. Callers
 * record the change in the undo history (a load can be undone).
 */
function loadWorkflow(wf) {
  if (!wf || !Array.isArray(wf.nodes)) throw new Error(t('error.notWorkflow'));
  const missing = [...new Set(wf.nodes.filter((n) => !LiteGraph.registered_node_types[n.type] && !['Reroute', 'Note', 'PrimitiveNode', 'MarkdownNote'].includes(n.type)).map((n) => n.type))];
  app.graph.clear();
  app.graph.configure(wf);
  clearErrors();
  if (missing.length) toast(t('error.missingTypes', { types: missing.join(', ') }), 'error', 15000);
  app.canvas.setDirty(true, true);
  document.getElementById('current-workflow').textContent = app.workflowName || t('workflows.unsaved');
}

/** Offers to download the model files a loaded workflow names that the server lacks. */
function offerModels(wf) {
  app.models.offer(wf).catch((e) => toast(e.message, 'error'));
}

/** Loads a parsed JSON file of either form: UI workflow or API prompt. */
function loadAnyJSON(obj, name) {
  if (obj && Array.isArray(obj.nodes)) {
    app.workflowName = name?.replace(/\.json$/, '') ?? null;
    loadWorkflow(obj);
    offerModels(obj);
  } else if (obj && typeof obj === 'object' && Object.values(obj).length && Object.values(obj).every((n) => n && typeof n.class_type === 'string')) {
    app.workflowName = null;
    const missing = [...new Set(Object.values(obj).map((n) => n.class_type).filter((c) => !app.defs[c]))];
    if (missing.length) throw new Error(t('error.missingTypes', { types: missing.join(', ') }));
    const g = new LGraph();
    buildFromPrompt(g, obj, app.defs, LiteGraph);
    const wf = g.serialize();
    loadWorkflow(wf);
    offerModels(wf);
  } else {
    throw new Error(t('error.notWorkflow'));
  }
  app.history.check();
}

async function loadFile(file) {
  try {
    if (file.type === 'image/png' || /\.png$/i.test(file.name)) {
      const { workflow, prompt } = await readPngGraph(await file.arrayBuffer());
      if (workflow) loadAnyJSON(workflow);
      else if (prompt) loadAnyJSON(prompt);
      else throw new Error(t('error.noGraphInPng'));
    } else {
      loadAnyJSON(JSON.parse(await file.text()), file.name);
    }
    toast(t('workflow.loaded', { name: file.name }));
  } catch (e) {
    toast(t('error.load', { name: file.name, msg: e.message }), 'error');
  }
}

function setupDrop() {
  const target = document.body;
  target.addEventListener('dragover', (e) => e.preventDefault());
  target.addEventListener('drop', (e) => {
    e.preventDefault();
    const f = e.dataTransfer?.files?.[0];
    if (f) loadFile(f);
  });
  document.getElementById('file-input').addEventListener('change', (e) => {
    const f = e.target.files[0];
    if (f) loadFile(f);
    e.target.value = '';
  });
}

async function uploadImage(node, inputName) {
  const input = el('input', { type: 'file', accept: 'image/*', hidden: true });
  document.body.append(input);
  input.addEventListener('change', async () => {
    const f = input.files[0];
    input.remove();
    if (!f) return;
    try {
      const res = await api.uploadImage(f);
      const name = res.subfolder ? `${res.subfolder}/${res.name}` : res.name;
      const w = node.widgets.find((x) => x.name === inputName);
      if (!w.options.values.includes(name)) w.options.values.push(name);
      w.value = name;
      showThumbnail(node, name);
      app.history.check();
    } catch (e) {
      toast(t('error.upload', { msg: e.message }), 'error');
    }
  });
  input.click();
}

function showThumbnail(node, name) {
  const img = new Image();
  const [sub, file] = name.includes('/') ? [name.slice(0, name.lastIndexOf('/')), name.slice(name.lastIndexOf('/') + 1)] : ['', name];
  img.onload = () => app.canvas.setDirty(true, true);
  img.src = api.viewURL({ filename: file, subfolder: sub, type: 'input' });
  state.images[String(node.id)] = img;
}

// ---- running ----

async function queuePrompt(front = false) {
  const count = Math.max(1, Math.min(100, Number(document.getElementById('batch-count').value) || 1));
  for (let i = 0; i < count; i++) {
    const wf = app.graph.serialize();
    let prompt;
    try {
      prompt = graphToPrompt(wf, app.defs);
    } catch (e) {
      toast(e.message, 'error');
      return;
    }
    try {
      const res = await api.queuePrompt(prompt, app.ws.clientId, wf, front);
      clearErrors();
      if (res?.node_errors && Object.keys(res.node_errors).length) showNodeErrors(res.node_errors);
    } catch (e) {
      if (e.body?.node_errors && Object.keys(e.body.node_errors).length) showNodeErrors(e.body.node_errors, e.body.error);
      else toast(t('error.queue', { msg: e.message }), 'error');
      return;
    }
    applySeedControls();
  }
  app.queuePanel.refresh();
}

function applySeedControls() {
  for (const node of app.graph._nodes) {
    const ws = node.widgets || [];
    ws.forEach((w, i) => {
      if (w.name !== 'control_after_generate' || i === 0) return;
      const target = ws[i - 1];
      if (target.type === 'combo') {
        const filter = ws[i + 1]?.name === 'control_filter_list' ? String(ws[i + 1].value ?? '') : '';
        const choices = Array.isArray(target.options.values) ? target.options.values : [];
        target.value = nextComboValue(target.value, w.value, choices, filter);
        return;
      }
      if (target.type !== 'number') return;
      target.value = nextSeed(target.value, w.value, { min: target.options.min, max: target.options.max, step: target.options.step2 ?? 1 });
    });
  }
  app.canvas.setDirty(true, false);
  app.history.check();
}

function clearErrors() {
  state.errors = {};
  const box = document.getElementById('errors');
  box.hidden = true;
  box.replaceChildren();
  app.canvas?.setDirty(true, false);
}

/** Marks nodes and inputs from a node_errors map and lists them. */
function showNodeErrors(nodeErrors, top) {
  state.errors = {};
  const list = el('ul');
  for (const [id, ne] of Object.entries(nodeErrors)) {
    const messages = [];
    const inputs = [];
    for (const er of ne.errors || []) {
      const name = er.extra_info?.input_name;
      if (name) inputs.push(name);
      messages.push(er.details ? `${er.message}: ${er.details}` : er.message);
    }
    state.errors[id] = { messages, inputs };
    const node = app.graph.getNodeById(isNaN(Number(id)) ? id : Number(id));
    const title = node?.title ?? ne.class_type ?? id;
    list.append(el('li', { 'data-node-id': id },
      el('button', { text: t('errors.show', { title, id }), onclick: () => node && focusNode(node) }),
      ` ${messages.join('; ')}`));
  }
  const box = document.getElementById('errors');
  box.replaceChildren(el('strong', { text: t('errors.title') }), top?.message ? el('div', { text: top.message }) : null, list,
    el('button', { id: 'errors-dismiss', text: t('errors.dismiss'), onclick: clearErrors }));
  box.hidden = false;
  app.canvas.setDirty(true, false);
}

function focusNode(node) {
  app.canvas.centerOnNode(node);
  app.canvas.selectNode(node);
  app.canvas.setDirty(true, true);
}

function connectWS() {
  const ws = new WSClient(api.wsURL());
  app.ws = ws;
  // Prompts and queue changes go over this socket when the server takes them there.
  api.useSocket(ws);
  let previewURL = null;
  const bar = document.querySelector('#progress .bar');
  const progress = document.getElementById('progress');
  const setProgress = (v, max) => {
    const pct = max ? Math.round((100 * v) / max) : 0;
    bar.style.width = `${pct}%`;
    progress.setAttribute('aria-valuenow', String(pct));
  };
  ws.on((type, data) => {
    // Kept for the e2e suite and for debugging from the console.
    if (app.events.length < 2000) app.events.push(type);
    app.models.onMessage(type, data);
    switch (type) {
      case 'open':
        setStatus('status.connected');
        break;
      case 'close':
        setStatus('status.disconnected');
        break;
      case 'status':
        document.getElementById('queue-count').textContent = String(data?.status?.exec_info?.queue_remaining ?? 0);
        app.queuePanel?.refresh();
        break;
      case 'execution_start':
        state.running = null;
        state.progress = null;
        setProgress(0, 0);
        setStatus('status.running');
        break;
      case 'executing':
        state.running = data?.node == null ? null : String(data.node);
        if (state.running) app.ranNodes.push(state.running);
        if (data?.node == null) {
          setStatus('status.idle');
          setProgress(0, 0);
          document.getElementById('live-preview').hidden = true;
          app.queuePanel?.refresh();
        }
        app.canvas.setDirty(true, false);
        break;
      case 'progress':
        state.progress = { node: String(data.node), value: data.value, max: data.max };
        setProgress(data.value, data.max);
        setStatus('status.step', { value: data.value, max: data.max });
        app.canvas.setDirty(true, false);
        break;
      case 'executed':
        onExecuted(data);
        break;
      case 'execution_error':
        state.errors[String(data.node_id)] = { messages: [data.exception_message], inputs: [] };
        toast(t('error.execution', { node: data.node_type, msg: data.exception_message }), 'error', 15000);
        app.canvas.setDirty(true, false);
        break;
      case 'execution_interrupted':
        toast(t('status.interrupted'));
        break;
      case 'preview': {
        const img = document.getElementById('live-preview');
        if (previewURL) URL.revokeObjectURL(previewURL);
        previewURL = URL.createObjectURL(new Blob([data.image], { type: data.mime }));
        img.src = previewURL;
        img.hidden = false;
        const node = data.metadata?.node_id ?? state.running;
        if (node != null) {
          const n = app.graph.getNodeById(isNaN(Number(node)) ? node : Number(node));
          if (n) makeRoomForImage(n);
          const i = new Image();
          i.onload = () => app.canvas.setDirty(true, false);
          i.src = previewURL;
          state.images[String(node)] = i;
        }
        break;
      }
    }
  });
  ws.connect();
}

function onExecuted(data) {
  const images = data?.output?.images || [];
  if (!images.length) return;
  addRunToGallery(data.prompt_id, images, true);
  const node = app.graph.getNodeById(isNaN(Number(data.node)) ? data.node : Number(data.node));
  if (node) makeRoomForImage(node);
  const i = new Image();
  i.onload = () => app.canvas.setDirty(true, false);
  i.src = api.viewURL(images[0]);
  state.images[String(data.node)] = i;
}

const galleryIds = new Set();
function addRunToGallery(promptId, images, front) {
  const box = document.getElementById('gallery-items');
  for (const im of images) {
    const key = `${im.type}/${im.subfolder}/${im.filename}`;
    if (galleryIds.has(key)) continue;
    galleryIds.add(key);
    const url = api.viewURL(im);
    const fig = el('figure', { 'data-prompt-id': promptId },
      el('a', { href: url, target: '_blank', rel: 'noopener', 'aria-label': t('gallery.open', { name: im.filename }) },
        el('img', { src: url, alt: im.filename, loading: 'lazy' })),
      el('figcaption', { text: im.filename }));
    if (front) box.prepend(fig);
    else box.append(fig);
  }
}

// ---- toolbar and keys ----

function setupToolbar() {
  const on = (id, fn) => document.getElementById(id).addEventListener('click', fn);
  on('btn-queue', () => queuePrompt());
  on('btn-interrupt', () => api.interrupt().catch((e) => toast(e.message, 'error')));
  on('btn-workflows', () => togglePanel('workflows-panel', 'btn-workflows', refreshWorkflows));
  on('btn-models', () => togglePanel('models-panel', 'btn-models', () => app.models.renderPanel()));
  on('btn-models-refresh', () => app.models.renderPanel());
  on('btn-queue-panel', () => togglePanel('queue-panel', 'btn-queue-panel', () => app.queuePanel.refresh()));
  on('btn-save', saveWorkflow);
  on('btn-download', () => download(`${app.workflowName || 'workflow'}.json`, app.graph.serialize()));
  on('btn-export-api', () => {
    try {
      download(`${app.workflowName || 'workflow'}_api.json`, graphToPrompt(app.graph.serialize(), app.defs));
    } catch (e) {
      toast(e.message, 'error');
    }
  });
  on('btn-import', () => document.getElementById('file-input').click());
  on('btn-add-node', () => showSearch(null));
  on('btn-refresh', () => refreshDefs());
  on('btn-undo', () => app.history.undo());
  on('btn-redo', () => app.history.redo());
  on('btn-clear', () => {
    app.workflowName = null;
    loadWorkflow({ nodes: [], links: [], groups: [], version: 0.4 });
    app.history.check();
  });
  arrowKeys(document.querySelector('.toolbar'));
}

function togglePanel(panelId, btnId, onOpen) {
  const p = document.getElementById(panelId);
  p.hidden = !p.hidden;
  document.getElementById(btnId).setAttribute('aria-expanded', String(!p.hidden));
  if (!p.hidden) onOpen?.();
}

function download(name, obj) {
  const a = el('a', { href: URL.createObjectURL(new Blob([JSON.stringify(obj, null, 2)], { type: 'application/json' })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

async function saveWorkflow() {
  const name = await promptText(t('workflows.saveAs'), app.workflowName || 'workflow');
  if (!name) return;
  const clean = name.replace(/\.json$/i, '').trim();
  if (!clean || /[\\/]/.test(clean)) {
    toast(t('error.badName'), 'error');
    return;
  }
  try {
    await api.saveWorkflow(`${clean}.json`, app.graph.serialize());
    app.workflowName = clean;
    document.getElementById('current-workflow').textContent = clean;
    autosave(JSON.stringify(app.graph.serialize()));
    toast(t('workflows.saved', { name: clean }));
    refreshWorkflows();
  } catch (e) {
    toast(t('error.save', { msg: e.message }), 'error');
  }
}

async function refreshWorkflows() {
  const ul = document.getElementById('workflow-list');
  let names;
  try {
    names = (await api.listWorkflows()).filter((n) => typeof n === 'string' && n.endsWith('.json')).sort();
  } catch (e) {
    toast(e.message, 'error');
    return;
  }
  ul.replaceChildren(...names.map((n) => el('li', { 'data-name': n },
    el('button', { class: 'name', text: n.replace(/\.json$/, ''), 'aria-label': t('workflows.open', { name: n }), onclick: () => openSaved(n) }),
    el('button', { text: t('workflows.delete'), 'aria-label': t('workflows.deleteNamed', { name: n }), onclick: () => deleteSaved(n) }))));
  if (!names.length) ul.append(el('li', { text: t('workflows.none') }));
}

async function openSaved(name) {
  try {
    loadAnyJSON(await api.loadWorkflow(name), name);
    toast(t('workflow.loaded', { name }));
  } catch (e) {
    toast(t('error.load', { name, msg: e.message }), 'error');
  }
}

async function deleteSaved(name) {
  try {
    await api.deleteWorkflow(name);
    refreshWorkflows();
  } catch (e) {
    toast(e.message, 'error');
  }
}

/** Reloads /object_info and updates the combo lists of the nodes on the canvas. */
async function refreshDefs(quiet = false) {
  try {
    const defs = await api.objectInfo();
    for (const [name, def] of Object.entries(defs)) {
      const ctor = LiteGraph.registered_node_types[name];
      if (ctor) ctor.nodeData = def;
    }
    app.defs = defs;
    for (const node of app.graph._nodes) {
      const def = defs[node.type];
      if (!def) continue;
      for (const w of node.widgets || []) {
        if (w.type !== 'combo' || w.name === 'control_after_generate') continue;
        const values = comboValues(def, w.name);
        if (values.length || def.input?.required?.[w.name] || def.input?.optional?.[w.name]) w.options.values = [...values];
      }
    }
    app.canvas.setDirty(true, true);
    if (!quiet) toast(t('toolbar.refreshed'));
  } catch (e) {
    toast(e.message, 'error');
  }
}

function setupKeys() {
  window.addEventListener('keydown', (e) => {
    const inField = ['INPUT', 'TEXTAREA', 'SELECT'].includes(e.target.tagName) || document.querySelector('dialog[open]');
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key === 'Enter') {
      e.preventDefault();
      queuePrompt(e.shiftKey);
      return;
    }
    if (inField) return;
    if (!mod && !e.altKey && document.activeElement?.id === 'graph-canvas' && canvasKey(e)) return;
    if (mod && !e.shiftKey && e.key.toLowerCase() === 'z') {
      e.preventDefault();
      app.history.undo();
    } else if (mod && (e.key.toLowerCase() === 'y' || (e.shiftKey && e.key.toLowerCase() === 'z'))) {
      e.preventDefault();
      app.history.redo();
    } else if (mod && e.key.toLowerCase() === 'm') {
      e.preventDefault();
      setMode(MODE_NEVER);
    } else if (mod && e.key.toLowerCase() === 'b') {
      e.preventDefault();
      setMode(MODE_BYPASS);
    } else if (mod && e.key.toLowerCase() === 'g') {
      e.preventDefault();
      groupSelected();
    } else if (mod && e.key.toLowerCase() === 's') {
      e.preventDefault();
      saveWorkflow();
    } else if (mod && e.key.toLowerCase() === 'o') {
      e.preventDefault();
      document.getElementById('file-input').click();
    } else if (e.key === 'r' && !mod && !e.altKey) {
      refreshDefs();
    } else if (e.key === 'Enter' && !mod && document.activeElement?.id === 'graph-canvas') {
      // Keyboard path to the node search.
      e.preventDefault();
      showSearch(null);
    }
  });
}

/**
 * Tab / Shift+Tab on the focused canvas select the next / previous node (keynav.js
 * order); past either end the selection is cleared and the browser moves the focus
 * on, so the canvas is no keyboard trap. Arrow keys move the selected nodes by the
 * grid step (Shift: by one unit), or pan the view when nothing is selected; the move
 * is one undo step per key release (the canvas keyup records history). F2 edits the
 * selected node's widgets in a form (widgeteditor.js). Returns whether the key was
 * handled.
 */
function canvasKey(e) {
  const canvas = app.canvas;
  const selected = Object.values(canvas.selected_nodes || {});
  if (e.key === 'Tab') {
    const order = keyboardOrder(app.graph._nodes);
    const i = nextIndex(selected.length === 1 ? order.indexOf(selected[0]) : -1, order.length, e.shiftKey);
    if (i < 0) {
      canvas.deselectAll();
      canvas.setDirty(true, true);
      announce('');
      return false;
    }
    e.preventDefault();
    const node = order[i];
    canvas.selectNode(node, false);
    reveal(node);
    announce(t('canvas.selected', { title: node.title, index: i + 1, count: order.length }));
    canvas.setDirty(true, true);
    return true;
  }
  if (e.key === 'F2') {
    if (selected.length !== 1) return false;
    e.preventDefault();
    const canvasEl = document.getElementById('graph-canvas');
    openWidgetEditor(selected[0], canvas, {
      onApply: () => {
        canvas.setDirty(true, true);
        app.history.check();
      },
      onClose: () => canvasEl.focus(),
    });
    return true;
  }
  const d = arrowDelta(e.key);
  if (!d) return false;
  e.preventDefault();
  if (selected.length) {
    const step = e.shiftKey ? 1 : MOVE_STEP;
    if (moveNodes(selected, d[0] * step, d[1] * step)) reveal(selected[0]);
  } else {
    canvas.ds.offset[0] -= (d[0] * PAN_STEP) / canvas.ds.scale;
    canvas.ds.offset[1] -= (d[1] * PAN_STEP) / canvas.ds.scale;
  }
  canvas.setDirty(true, true);
  return true;
}

/** Centres the view on a node unless its title is already on screen. */
function reveal(node) {
  const c = app.canvas;
  const [x, y] = c.ds.convertOffsetToCanvas([node.pos[0], node.pos[1]]);
  const w = c.canvas.width / (window.devicePixelRatio || 1);
  const h = c.canvas.height / (window.devicePixelRatio || 1);
  if (x < 0 || y < 0 || x > w - 40 || y > h - 40) c.centerOnNode(node);
}

function announce(text) {
  document.getElementById('canvas-announce').textContent = text;
}

/** Toggles mute (mode 2) or bypass (mode 4) on the selected nodes. */
function setMode(mode) {
  const nodes = Object.values(app.canvas.selected_nodes || {});
  if (!nodes.length) return;
  const all = nodes.every((n) => n.mode === mode);
  for (const n of nodes) n.mode = all ? MODE_ALWAYS : mode;
  app.canvas.setDirty(true, true);
  app.history.check();
}

function groupSelected() {
  const nodes = Object.values(app.canvas.selected_nodes || {});
  if (!nodes.length) return;
  const g = new LGraphGroup(t('group.default'));
  g.resizeTo(nodes, 10);
  app.graph.add(g);
  app.canvas.setDirty(true, true);
  app.history.check();
}

main().catch((e) => {
  console.error(e);
  toast(String(e?.message || e), 'error', 60000);
});
