// The HTTP side of ComfyUI's API (server.py routes), under /api/ as the ComfyUI front
// end calls it. Every failure becomes an ApiError carrying the server's JSON body.
//
// With a websocket attached (useSocket) whose server announced forgeflow_ws_prompt,
// prompts, interrupts and queue changes go over the socket instead, answered with the
// same bodies; against any other server (ComfyUI) they stay HTTP requests.

/**
 * A random (version 4) UUID in canonical form. crypto.randomUUID exists only in
 * secure contexts; an editor opened over plain HTTP from another machine is not one,
 * but getRandomValues works everywhere.
 */
export function uuid4() {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

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
    // The access token of a server started with --auth-token: sent as a Bearer header,
    // and as ?token= on the URLs the browser fetches itself (images, the websocket).
    this.token = '';
    // Called on a 401 with the server's body and the token that was refused ('' for
    // none); resolves to a token to retry with, or null. Concurrent 401s share one
    // call.
    this.onUnauthorized = null;
    this.asking = null;
    this.ws = null;
  }

  /** Sends requests over ws (a WSClient) while its server takes them. */
  useSocket(ws) {
    this.ws = ws;
  }

  /**
   * Sends a request over the socket, turning its refusal into the ApiError the HTTP
   * route would have given; null when the socket cannot take requests now.
   */
  async overSocket(type, data, what) {
    if (!this.ws?.canRequest()) return null;
    try {
      return await this.ws.request(type, data);
    } catch (e) {
      if (e.lost) throw e;
      throw new ApiError(e.body?.status ?? 400, e.body, what);
    }
  }

  url(path) {
    return `${this.base}/api${path}`;
  }

  async request(path, opts = {}, what = path, tries = 0) {
    const headers = { ...(opts.headers || {}) };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const res = await this.fetch(this.url(path), { ...opts, headers });
    const text = await res.text();
    let body = text;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: keep the text
    }
    // A refused token is asked for again (the prompt says so), a few times at most.
    if (res.status === 401 && this.onUnauthorized && tries < 5) {
      const sent = this.token;
      this.asking ??= Promise.resolve(this.onUnauthorized(body, sent)).finally(() => {
        this.asking = null;
      });
      const token = await this.asking;
      if (token) {
        this.token = token;
        return this.request(path, opts, what, tries + 1);
      }
    }
    if (!res.ok) throw new ApiError(res.status, body, what);
    return body;
  }

  /** Adds the access token to a URL the browser loads itself. */
  withToken(u) {
    return this.token ? `${u}${u.includes('?') ? '&' : '?'}token=${encodeURIComponent(this.token)}` : u;
  }

  /** The model library: [{name, folders}] (ComfyUI's /experiment/models). */
  modelFolders() {
    return this.request('/experiment/models', {}, 'list model folders');
  }

  /** One folder's files: [{name, pathIndex, size, modified}]. */
  modelFiles(folder) {
    return this.request(`/experiment/models/${encodeURIComponent(folder)}`, {}, `list ${folder}`);
  }

  /** Names in a model folder, as the loaders' combos list them. */
  models(folder) {
    return this.request(`/models/${encodeURIComponent(folder)}`, {}, `list ${folder}`);
  }

  /** forgeflow's download state: {enabled, reason, hosts, downloads, starters}. */
  downloads() {
    return this.request('/forgeflow/models/downloads', {}, 'list downloads');
  }

  /** Starts a download: {url, folder, name} or {starter}. */
  startDownload(body) {
    return this.request('/forgeflow/models/download', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }, 'download');
  }

  cancelDownload(id) {
    return this.request(`/forgeflow/models/download/${encodeURIComponent(id)}/cancel`, { method: 'POST' }, 'cancel download');
  }

  objectInfo() {
    return this.request('/object_info');
  }

  /**
   * Queues a prompt; returns {prompt_id, number, node_errors}. A 400 carries
   * node_errors. Over the socket the prompt carries an id chosen here, so that when
   * the socket closes before the answer the editor can ask whether it was queued
   * (GET /api/jobs/{id}) and send it over HTTP only if not: it is queued once.
   */
  async queuePrompt(prompt, clientId, workflow, front = false) {
    const body = { prompt, client_id: clientId, extra_data: { extra_pnginfo: { workflow } } };
    if (front) body.front = true;
    if (this.ws?.canRequest()) {
      const withID = { ...body, prompt_id: uuid4() };
      try {
        return await this.overSocket('prompt', withID, 'queue prompt');
      } catch (e) {
        if (!e.lost) throw e;
        if (await this.hasJob(withID.prompt_id)) return { prompt_id: withID.prompt_id, number: null, node_errors: {} };
        return this.postPrompt(withID);
      }
    }
    return this.postPrompt(body);
  }

  postPrompt(body) {
    return this.request('/prompt', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }, 'queue prompt');
  }

  /** Whether the server knows the job (pending, running or finished). */
  async hasJob(id) {
    try {
      await this.request(`/jobs/${encodeURIComponent(id)}`, {}, 'job');
      return true;
    } catch (e) {
      if (e.status === 404) return false;
      throw e;
    }
  }

  queue() {
    return this.request('/queue');
  }

  history(max = 64) {
    return this.request(`/history?max_items=${max}`);
  }

  /** POST /queue {delete} or {clear}, over the socket when it takes requests. */
  async changeQueue(body, what) {
    const viaSocket = await this.overSocket('queue', body, what).catch((e) => {
      if (e.lost) return null; // deleting again is harmless
      throw e;
    });
    if (viaSocket) return viaSocket;
    return this.request('/queue', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }, what);
  }

  deleteQueued(ids) {
    return this.changeQueue({ delete: ids }, 'cancel');
  }

  clearQueue() {
    return this.changeQueue({ clear: true }, 'clear queue');
  }

  clearHistory() {
    return this.request('/history', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ clear: true }) }, 'clear history');
  }

  /** Interrupts the prompt promptId if it runs, or whatever runs without one. */
  async interrupt(promptId) {
    const body = promptId ? { prompt_id: promptId } : undefined;
    try {
      const viaSocket = await this.overSocket('interrupt', body, 'interrupt');
      if (viaSocket) return viaSocket;
    } catch (e) {
      if (!e.lost) throw e;
      // Unanswered: a named prompt may be interrupted again safely; a global interrupt
      // is not repeated, as it could stop a prompt that started since.
      if (!promptId) return null;
    }
    const opts = { method: 'POST' };
    if (body) Object.assign(opts, { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    return this.request('/interrupt', opts, 'interrupt');
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

  /**
   * Uploads an image to the input folder; returns {name, subfolder, type}. A file over
   * the max_upload_size the server announced in its feature flags (ComfyUI does too)
   * is refused here, before its bytes are sent, with the 413 the server would answer.
   */
  async uploadImage(file, overwrite = false) {
    const max = this.ws?.serverFlags?.max_upload_size;
    if (typeof max === 'number' && max > 0 && file.size > max) {
      throw new ApiError(413, { error: `${file.name} is too large: ${file.size} bytes; the server takes at most ${max} (--max-upload-size)` }, 'upload image');
    }
    const fd = new FormData();
    fd.append('image', file);
    if (overwrite) fd.append('overwrite', 'true');
    return this.request('/upload/image', { method: 'POST', body: fd }, 'upload image');
  }

  viewURL({ filename, subfolder = '', type = 'output' }) {
    const q = new URLSearchParams({ filename, subfolder, type });
    return this.withToken(this.url(`/view?${q}`));
  }

  wsURL(loc = globalThis.location) {
    const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    return this.withToken(`${proto}//${loc.host}${this.base}/ws`);
  }
}
