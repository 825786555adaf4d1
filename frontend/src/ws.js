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
 * A reconnecting client. Listeners get (type, data) for JSON messages and
 * ('preview', frame) for binary frames; 'open' and 'close' report the connection.
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
    s.onopen = () => {
      // Announce that this client reads type-4 preview frames (feature flags message).
      s.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true } }));
      this.emit('open', null);
    };
    s.onmessage = (ev) => this.handle(ev.data);
    s.onclose = () => {
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
    this.emit(msg.type, msg.data);
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }
}
