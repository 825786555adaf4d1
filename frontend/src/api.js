// The HTTP side of ComfyUI's API (server.py routes), under /api/ as the ComfyUI front
// end calls it. Every failure becomes an ApiError carrying the server's JSON body.

export class ApiError extends Error {
  constructor(status, body, what) {
    const detail = body?.error?.message || body?.error || body?.message || (typeof body === 'string' ? body : '');
    super(`${what}: HTTP ${status}${detail ? `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}` : ''}`);
    this.status = status;
    this.body = body;
  }
}

export class Api {
  constructor(base = '', fetchFn = globalThis.fetch.bind(globalThis)) {
    this.base = base;
    this.fetch = fetchFn;
  }

  url(path) {
    return `${this.base}/api${path}`;
  }

  async request(path, opts = {}, what = path) {
    const res = await this.fetch(this.url(path), opts);
    const text = await res.text();
    let body = text;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text
    }
    if (!res.ok) throw new ApiError(res.status, body, what);
    return body;
  }

  objectInfo() {
    return this.request('/object_info');
  }

  /** Queues a prompt; returns {prompt_id, number, node_errors}. A 400 carries node_errors. */
  queuePrompt(prompt, clientId, workflow, front = false) {
    const body = { prompt, client_id: clientId, extra_data: { extra_pnginfo: { workflow } } };
    if (front) body.front = true;
    return this.request('/prompt', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }, 'queue prompt');
  }

  queue() {
    return this.request('/queue');
  }

  history(max = 64) {
    return this.request(`/history?max_items=${max}`);
  }

  deleteQueued(ids) {
    return this.request('/queue', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ delete: ids }) }, 'cancel');
  }

  clearQueue() {
    return this.request('/queue', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ clear: true }) }, 'clear queue');
  }

  clearHistory() {
    return this.request('/history', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ clear: true }) }, 'clear history');
  }

  interrupt() {
    return this.request('/interrupt', { method: 'POST' }, 'interrupt');
  }

  /** Lists saved workflows (file names under user/<user>/workflows). */
  async listWorkflows() {
    try {
      return await this.request('/userdata?dir=workflows&recurse=true', {}, 'list workflows');
    } catch (e) {
      if (e.status === 404) return [];
      throw e;
    }
  }

  loadWorkflow(name) {
    return this.request(`/userdata/${encodeURIComponent('workflows/' + name)}`, {}, `load ${name}`);
  }

  saveWorkflow(name, workflow) {
    return this.request(`/userdata/${encodeURIComponent('workflows/' + name)}?overwrite=true`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(workflow),
    }, `save ${name}`);
  }

  deleteWorkflow(name) {
    return this.request(`/userdata/${encodeURIComponent('workflows/' + name)}`, { method: 'DELETE' }, `delete ${name}`);
  }

  /** Uploads an image to the input folder; returns {name, subfolder, type}. */
  uploadImage(file, overwrite = false) {
    const fd = new FormData();
    fd.append('image', file);
    if (overwrite) fd.append('overwrite', 'true');
    return this.request('/upload/image', { method: 'POST', body: fd }, 'upload image');
  }

  viewURL({ filename, subfolder = '', type = 'output' }) {
    const q = new URLSearchParams({ filename, subfolder, type });
    return this.url(`/view?${q}`);
  }

  wsURL(loc = globalThis.location) {
    const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${loc.host}${this.base}/ws`;
  }
}
