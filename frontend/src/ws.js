// The websocket client of ComfyUI's /ws endpoint: JSON messages {type, data} and binary
// preview frames (server.py send_image / send_image_with_metadata): a 4-byte big-endian
// event type, then for type 1 a 4-byte image type (1 JPEG, 2 PNG) and the image, for
// type 4 a 4-byte metadata length, metadata JSON (image_type is the MIME type) and the
// image.

export const PREVIEW_IMAGE = 1;
export const PREVIEW_IMAGE_WITH_METADATA = 4;

/**
 * Decodes one binary frame.
 * @param {ArrayBuffer} buf
 * @returns {{event:number, mime:string, image:Uint8Array, metadata?:object}}
 */
export function parseBinaryFrame(buf) {
  const b = new Uint8Array(buf);
  if (b.length < 8) throw new Error(`ws: binary frame of ${b.length} bytes is shorter than its 8-byte header`);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const event = view.getUint32(0);
  if (event === PREVIEW_IMAGE) {
    const t = view.getUint32(4);
    const mime = t === 1 ? 'image/jpeg' : t === 2 ? 'image/png' : null;
    if (!mime) throw new Error(`ws: preview frame has unknown image type ${t}`);
    return { event, mime, image: b.subarray(8) };
  }
  if (event === PREVIEW_IMAGE_WITH_METADATA) {
    const n = view.getUint32(4);
    if (8 + n > b.length) throw new Error(`ws: preview metadata length ${n} runs past the ${b.length}-byte frame`);
    let metadata;
    try {
      metadata = JSON.parse(new TextDecoder().decode(b.subarray(8, 8 + n)));
    } catch (e) {
      throw new Error(`ws: preview metadata is not JSON: ${e.message}`);
    }
    return { event, mime: metadata.image_type || 'image/jpeg', image: b.subarray(8 + n), metadata };
  }
  throw new Error(`ws: unknown binary event type ${event}`);
}

/**
 * The failure of a request sent over the socket. `body` is the server's answer
 * (TYPE_error's data: the HTTP route's error body with `id` and `status`); `lost` is
 * set when no answer came (the socket closed first), so the request's outcome is
 * unknown.
 */
export class WSRequestError extends Error {
  constructor(type, body, lost = false) {
    const detail = body?.error?.message || body?.error || '';
    super(lost ? `ws: ${type}: the connection closed before the server answered` : `${type}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`);
    this.type = type;
    this.status = body?.status;
    this.body = body;
    this.lost = lost;
  }
}

/**
 * A reconnecting client. Listeners get (type, data) for JSON messages and
 * ('preview', frame) for binary frames; 'open' and 'close' report the connection.
 * The server's feature flags (its answer to ours) are in `serverFlags`; `request`
 * sends a request message (prompt, interrupt, queue) and resolves with its
 * TYPE_result, when the server announced `forgeflow_ws_prompt`.
 */
export class WSClient {
  /**
   * @param {string} url ws:// or wss:// address of /ws
   * @param {{WebSocket?: any, retryMs?: number, setTimeout?: Function}} [opts]
   */
  constructor(url, opts = {}) {
    this.url = url;
    this.WebSocket = opts.WebSocket || globalThis.WebSocket;
    this.retryMs = opts.retryMs ?? 1000;
    this.setTimeout = opts.setTimeout || ((f, ms) => setTimeout(f, ms));
    this.listeners = new Set();
    this.clientId = null;
    this.closed = false;
    this.socket = null;
    this.serverFlags = {};
    this.pending = new Map(); // request id → {type, resolve, reject}
    this.seq = 0;
  }

  /** Whether requests can go over the socket now: open, and the server takes them. */
  canRequest() {
    return this.serverFlags.forgeflow_ws_prompt === true && this.socket?.readyState === 1;
  }

  /**
   * Sends {type, id, data} and resolves with the data of TYPE_result; rejects with a
   * WSRequestError on TYPE_error, or with `lost` set when the socket closes first.
   */
  request(type, data) {
    const id = `r${++this.seq}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { type, resolve, reject });
      try {
        this.socket.send(JSON.stringify({ type, id, data }));
      } catch {
        this.pending.delete(id);
        reject(new WSRequestError(type, null, true));
      }
    });
  }

  /** Settles the request an answer names; reports whether it was one. */
  answer(type, data) {
    const m = /^(.*)_(result|error)$/.exec(type);
    const p = m && this.pending.get(data?.id);
    if (!p || p.type !== m[1]) return false;
    this.pending.delete(data.id);
    if (m[2] === 'result') p.resolve(data);
    else p.reject(new WSRequestError(p.type, data));
    return true;
  }

  /** Fails every unanswered request: their outcome is unknown. */
  dropPending() {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(new WSRequestError(p.type, null, true));
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(type, data) {
    for (const fn of this.listeners) {
      try {
        fn(type, data);
      } catch (e) {
        console.error('ws listener', e);
      }
    }
  }

  connect() {
    const u = this.clientId ? `${this.url}${this.url.includes('?') ? '&' : '?'}clientId=${encodeURIComponent(this.clientId)}` : this.url;
    const s = new this.WebSocket(u);
    s.binaryType = 'arraybuffer';
    this.socket = s;
    this.serverFlags = {};
    s.onopen = () => {
      // Announce that this client reads type-4 preview frames (feature flags message).
      s.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true } }));
      this.emit('open', null);
    };
    s.onmessage = (ev) => this.handle(ev.data);
    s.onclose = () => {
      if (this.socket === s) {
        this.serverFlags = {};
        this.dropPending();
      }
      this.emit('close', null);
      if (!this.closed) this.setTimeout(() => this.connect(), this.retryMs);
    };
    s.onerror = () => {};
  }

  handle(raw) {
    if (typeof raw !== 'string') {
      let frame;
      try {
        frame = parseBinaryFrame(raw);
      } catch (e) {
        this.emit('error', e.message);
        return;
      }
      this.emit('preview', frame);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      this.emit('error', 'ws: message is not JSON');
      return;
    }
    if (!msg || typeof msg.type !== 'string') {
      this.emit('error', 'ws: message has no type');
      return;
    }
    if (msg.type === 'status' && msg.data?.sid) this.clientId = msg.data.sid;
    if (msg.type === 'feature_flags' && msg.data && typeof msg.data === 'object') this.serverFlags = msg.data;
    if (this.answer(msg.type, msg.data)) return;
    this.emit(msg.type, msg.data);
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }
}
