// Model files in the editor: the model panel (folders, files, sizes, starter models),
// the dialog listing the models a loaded workflow names but the server lacks (with the
// download source the workflow carries, as ComfyUI's front end stores it: `models:
// [{name, url, directory}]` at the top level and in node properties) and downloads
// through forgeflow's /forgeflow/models/download route, followed over the websocket
// ("forgeflow_model_download" messages).
import { t } from './i18n.js';
import { el, toast } from './ui.js';

/** The websocket message type of download progress. */
export const DOWNLOAD_EVENT = 'forgeflow_model_download';

// Which model folder a loader's combo input lists, by input name; a few inputs depend
// on the node (CLIPVisionLoader's clip_name, UpscaleModelLoader's model_name).
const INPUT_FOLDERS = {
  ckpt_name: 'checkpoints', vae_name: 'vae', lora_name: 'loras', unet_name: 'diffusion_models',
  clip_name: 'text_encoders', clip_name1: 'text_encoders', clip_name2: 'text_encoders', clip_name3: 'text_encoders',
  clip_name4: 'text_encoders', control_net_name: 'controlnet', style_model_name: 'style_models',
  gligen_name: 'gligen', hypernetwork_name: 'hypernetworks', config_name: 'configs',
};
const NODE_INPUT_FOLDERS = {
  CLIPVisionLoader: { clip_name: 'clip_vision' },
  UpscaleModelLoader: { model_name: 'upscale_models' },
  PhotoMakerLoader: { photomaker_model_name: 'photomaker' },
};

/** The model folder a node's combo input lists, or null. */
export function inputFolder(nodeType, input) {
  return NODE_INPUT_FOLDERS[nodeType]?.[input] ?? INPUT_FOLDERS[input] ?? null;
}

/** A workflow's `models` entries: top level and node properties, valid ones only. */
export function workflowModelEntries(wf) {
  const out = [];
  const add = (list, nodeId) => {
    if (!Array.isArray(list)) return;
    for (const m of list) {
      if (m && typeof m.name === 'string' && m.name && typeof m.directory === 'string' && m.directory) {
        out.push({ name: m.name, folder: m.directory, url: typeof m.url === 'string' ? m.url : '', nodeId });
      }
    }
  };
  add(wf?.models, null);
  for (const n of wf?.nodes || []) add(n?.properties?.models, n.id);
  return out;
}

/**
 * The models a workflow names that the server does not have.
 * @param {object} wf the serialized workflow
 * @param {{id, type, widgets: {name, value, values}[]}[]} nodes its nodes' combo widgets
 * @param {Object<string, string[]>} listings folder → names present (as /models/{folder})
 * @returns {{name, folder, url, nodes: (number|string)[]}[]} one entry per folder/name
 */
export function findMissingModels(wf, nodes, listings) {
  const byKey = new Map();
  const add = (name, folder, url, nodeId) => {
    const key = `${folder}/${name}`;
    let e = byKey.get(key);
    if (!e) {
      e = { name, folder, url: '', nodes: [] };
      byKey.set(key, e);
    }
    if (url && !e.url) e.url = url;
    if (nodeId != null && !e.nodes.includes(nodeId)) e.nodes.push(nodeId);
  };
  const present = (folder, name) => (listings[folder] || []).includes(name);
  for (const n of nodes) {
    for (const w of n.widgets || []) {
      const folder = inputFolder(n.type, w.name);
      if (!folder || typeof w.value !== 'string' || !w.value) continue;
      const known = Array.isArray(w.values) ? w.values.includes(w.value) : present(folder, w.value);
      if (!known && !present(folder, w.value)) add(w.value, folder, '', n.id);
    }
  }
  const entries = workflowModelEntries(wf);
  for (const m of entries) {
    if (!present(m.folder, m.name)) add(m.name, m.folder, m.url, m.nodeId);
  }
  // A source for a missing file named by a widget comes from any entry of that name.
  for (const e of byKey.values()) {
    if (!e.url) e.url = entries.find((m) => m.name === e.name && m.url)?.url || '';
  }
  return [...byKey.values()];
}

/** "1.2 GB", "340.0 MB": decimal units, as the hosting sites show sizes. */
export function formatBytes(n) {
  if (!(n >= 0)) return '?';
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

/** The host a URL points at, or ''. */
export function hostOf(url) {
  try {
    return new URL(url).host;
  } catch {
    return '';
  }
}

/** A download's state as one line of text. */
export function downloadText(d) {
  switch (d.status) {
    case 'queued':
      return t('models.queued');
    case 'running': {
      const of = d.total > 0 ? ` / ${formatBytes(d.total)}` : '';
      const eta = d.eta >= 0 ? `, ${t('models.eta', { s: Math.round(d.eta) })}` : '';
      return `${formatBytes(d.done)}${of} · ${formatBytes(d.rate)}/s${eta}`;
    }
    case 'done':
      return d.existed ? t('models.present') : t('models.done');
    case 'cancelled':
      return t('models.cancelled');
    default:
      return t('models.failed', { msg: d.error || '' });
  }
}

/**
 * The model panel and the missing-models dialog of one editor. app gives api,
 * graph, defs, refreshDefs() and the websocket (its messages reach onMessage).
 */
export class Models {
  constructor(app) {
    this.app = app;
    this.state = null; // the last GET /forgeflow/models/downloads
    this.rows = new Map(); // download id → [elements showing it]
    this.onDone = null;
  }

  /** The server's download state (enabled, reason, hosts, starters, downloads). */
  async refreshState() {
    try {
      this.state = await this.app.api.downloads();
    } catch {
      this.state = { enabled: false, reason: t('models.noRoute'), hosts: [], downloads: [], starters: [] };
    }
    return this.state;
  }

  /** Tells a user without any checkpoint where to get one. */
  async nudge() {
    const names = await this.app.api.models('checkpoints').catch(() => null);
    if (Array.isArray(names) && names.length === 0) toast(t('models.nudge'), 'info', 20000);
  }

  // ---- the panel ----

  async renderPanel() {
    const box = document.getElementById('models-body');
    box.replaceChildren(el('p', { text: t('models.loading') }));
    const [folders, state] = await Promise.all([this.app.api.modelFolders().catch((e) => e), this.refreshState()]);
    if (folders instanceof Error) {
      box.replaceChildren(el('p', { class: 'error', text: folders.message }));
      return;
    }
    const files = await Promise.all(folders.map((f) => this.app.api.modelFiles(f.name).catch(() => [])));
    const parts = [];
    if (state.enabled && state.starters?.length) {
      parts.push(el('h3', { text: t('models.starters') }), el('ul', { id: 'starter-list' }, ...state.starters.map((s) => this.starterRow(s))));
    } else if (!state.enabled) {
      parts.push(el('p', { class: 'note', id: 'downloads-off', text: t('models.downloadsOff', { reason: state.reason || '' }) }));
    }
    parts.push(el('h3', { text: t('models.folders') }));
    const list = el('ul', { id: 'model-folders' });
    folders.forEach((f, i) => {
      const fs = files[i];
      const total = fs.reduce((a, x) => a + (x.size || 0), 0);
      const details = el('details', { 'data-folder': f.name },
        el('summary', { text: t('models.folder', { name: f.name, count: fs.length, size: formatBytes(total) }) }),
        el('div', { class: 'dirs', text: (f.folders || []).join(', ') }),
        el('ul', {}, ...fs.map((x) => el('li', { 'data-name': x.name },
          el('span', { class: 'name', title: x.name, text: x.name }), el('span', { class: 'size', text: formatBytes(x.size) })))));
      if (fs.length) details.open = f.name === 'checkpoints';
      list.append(el('li', {}, details));
    });
    parts.push(list);
    box.replaceChildren(...parts);
  }

  starterRow(s) {
    const status = el('span', { class: 'status', text: s.present ? t('models.present') : formatBytes(s.size) });
    const btn = el('button', {
      text: t('models.download'), disabled: s.present, 'aria-label': t('models.downloadNamed', { name: s.name }),
      onclick: async () => {
        btn.disabled = true;
        try {
          const res = await this.app.api.startDownload({ starter: s.name });
          for (const d of res.downloads || []) this.track(d, status);
          if (!res.downloads?.length) status.textContent = t('models.present');
        } catch (e) {
          btn.disabled = false;
          toast(t('models.failed', { msg: e.message }), 'error');
        }
      },
    });
    return el('li', { 'data-starter': s.name, title: s.description },
      el('span', { class: 'name', text: s.name }), status, btn);
  }

  // ---- missing models ----

  /** Lists the models the workflow on the canvas names but the server lacks. */
  async check(wf) {
    const nodes = (this.app.graph._nodes || []).map((n) => ({
      id: n.id, type: n.type,
      widgets: (n.widgets || []).filter((w) => w.type === 'combo').map((w) => ({ name: w.name, value: w.value, values: w.options?.values })),
    }));
    const folders = new Set(workflowModelEntries(wf).map((m) => m.folder));
    for (const n of nodes) {
      for (const w of n.widgets) {
        const f = inputFolder(n.type, w.name);
        if (f && !Array.isArray(w.values)) folders.add(f);
      }
    }
    const listings = {};
    await Promise.all([...folders].map(async (f) => {
      listings[f] = await this.app.api.models(f).catch(() => []);
    }));
    return findMissingModels(wf, nodes, listings);
  }

  /** Shows the dialog when the workflow names missing models. */
  async offer(wf) {
    const missing = await this.check(wf);
    if (!missing.length) return;
    const state = await this.refreshState();
    this.showDialog(missing, state);
  }

  showDialog(missing, state) {
    document.getElementById('missing-models-dialog')?.remove();
    const rows = missing.map((m) => {
      const status = el('span', { class: 'status' });
      const host = hostOf(m.url);
      let why = '';
      if (!m.url) why = t('models.noSource');
      else if (!state.enabled) why = state.reason || t('models.noRoute');
      const btn = el('button', {
        class: 'download', text: t('models.download'), disabled: Boolean(why), 'aria-label': t('models.downloadNamed', { name: m.name }),
        onclick: () => this.download(m, btn, status),
      });
      if (why) status.textContent = why;
      return {
        m, btn,
        row: el('tr', { 'data-name': m.name, 'data-folder': m.folder },
          el('td', { class: 'name', text: m.name }), el('td', { text: m.folder }),
          el('td', { class: 'source' }, m.url ? el('a', { href: m.url, target: '_blank', rel: 'noopener noreferrer', text: host || m.url }) : t('models.none')),
          el('td', {}, btn, ' ', status)),
      };
    });
    const all = el('button', {
      id: 'download-all', class: 'primary', text: t('models.downloadAll'),
      disabled: !rows.some((r) => !r.btn.disabled), onclick: () => rows.forEach((r) => !r.btn.disabled && r.btn.click()),
    });
    const d = el('dialog', { id: 'missing-models-dialog', 'aria-labelledby': 'missing-models-title' },
      el('h2', { id: 'missing-models-title', text: t('models.missingTitle') }),
      el('p', { text: t('models.missingText') }),
      el('table', {}, el('thead', {}, el('tr', {}, ...['models.file', 'models.folderCol', 'models.source', 'models.action'].map((k) => el('th', { text: t(k) })))),
        el('tbody', {}, ...rows.map((r) => r.row))),
      el('div', { class: 'row', style: 'justify-content:flex-end;margin-top:8px' }, all,
        el('button', { id: 'missing-models-close', text: t('models.close'), onclick: () => d.close() })));
    d.addEventListener('close', () => d.remove());
    document.body.append(d);
    d.showModal();
  }

  async download(m, btn, status) {
    btn.disabled = true;
    status.textContent = t('models.queued');
    try {
      const d = await this.app.api.startDownload({ url: m.url, folder: m.folder, name: m.name });
      this.track(d, status);
    } catch (e) {
      btn.disabled = false;
      status.textContent = t('models.failed', { msg: e.body?.details || e.message });
    }
  }

  /** Shows a download's progress in status (and a progress bar beside it). */
  track(d, status) {
    const bar = el('progress', { max: '100', value: '0', 'aria-label': d.name });
    status.replaceChildren(bar, el('span', { class: 'text' }));
    const shown = this.rows.get(d.id) || [];
    shown.push(status);
    this.rows.set(d.id, shown);
    this.show(d);
  }

  show(d) {
    for (const status of this.rows.get(d.id) || []) {
      const bar = status.querySelector('progress');
      const text = status.querySelector('.text');
      if (bar) {
        if (d.total > 0) bar.value = String(Math.round((100 * d.done) / d.total));
        if (d.status === 'done') bar.value = '100';
      }
      if (text) text.textContent = ` ${d.name}: ${downloadText(d)}`;
      status.dataset.status = d.status;
    }
  }

  /** A websocket message. */
  onMessage(type, d) {
    if (type !== DOWNLOAD_EVENT || !d?.id) return;
    this.show(d);
    if (d.status === 'done' || d.status === 'error' || d.status === 'cancelled') {
      if (d.status === 'done') toast(t('models.saved', { name: d.name, folder: d.folder }));
      else if (d.status === 'error') toast(t('models.failed', { msg: d.error || '' }), 'error', 15000);
      this.afterChange();
    }
  }

  /** Refreshes the combo lists (debounced) once downloads finish. */
  afterChange() {
    clearTimeout(this.timer);
    this.timer = setTimeout(async () => {
      await this.app.refreshDefs?.(true);
      this.pickNewCheckpoint();
      if (!document.getElementById('models-panel')?.hidden) this.renderPanel();
      this.onDone?.();
    }, 300);
  }

  /** A checkpoint loader left empty (the default graph with no models) gets the first checkpoint. */
  pickNewCheckpoint() {
    for (const n of this.app.graph._nodes || []) {
      for (const w of n.widgets || []) {
        if (w.type !== 'combo' || inputFolder(n.type, w.name) !== 'checkpoints') continue;
        const values = w.options?.values || [];
        if (!w.value && values.length) w.value = values[0];
      }
    }
    this.app.canvas?.setDirty(true, true);
  }
}
