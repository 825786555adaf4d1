// Reads the text chunks that ComfyUI and forgeflow write into PNG files: "workflow" (the
// UI graph) and "prompt" (the API form). The format is the PNG specification's tEXt
// (keyword, NUL, Latin-1 text) and iTXt (keyword, NUL, compression flag, method,
// language tag NUL, translated keyword NUL, UTF-8 text) chunks; compressed iTXt is
// inflated with the browser's DecompressionStream.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** Error thrown for bytes that are not a readable PNG. */
export class PngError extends Error {}

/**
 * Returns every text chunk of a PNG as keyword → text.
 * @param {ArrayBuffer|Uint8Array} buf
 * @returns {Promise<Record<string,string>>}
 */
export async function readPngText(buf) {
  const b = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  if (b.length < 8 || SIGNATURE.some((v, i) => b[i] !== v)) {
    throw new PngError('png: not a PNG file (bad signature)');
  }
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = {};
  let p = 8;
  while (p + 8 <= b.length) {
    const len = view.getUint32(p);
    const type = String.fromCharCode(b[p + 4], b[p + 5], b[p + 6], b[p + 7]);
    const start = p + 8;
    const end = start + len;
    if (end + 4 > b.length) throw new PngError(`png: chunk ${type} at byte ${p} runs past the end of the file`);
    const data = b.subarray(start, end);
    if (type === 'tEXt') {
      const nul = data.indexOf(0);
      if (nul > 0) out[latin1(data.subarray(0, nul))] = latin1(data.subarray(nul + 1));
    } else if (type === 'iTXt') {
      const entry = await readITXt(data);
      if (entry) out[entry[0]] = entry[1];
    } else if (type === 'IEND') {
      break;
    }
    p = end + 4; // skip the CRC
  }
  return out;
}

async function readITXt(data) {
  const nul = data.indexOf(0);
  if (nul <= 0 || nul + 3 > data.length) return null;
  const key = latin1(data.subarray(0, nul));
  const compressed = data[nul + 1] === 1;
  let p = nul + 3;
  const langEnd = data.indexOf(0, p);
  if (langEnd < 0) return null;
  const transEnd = data.indexOf(0, langEnd + 1);
  if (transEnd < 0) return null;
  let text = data.subarray(transEnd + 1);
  if (compressed) text = await inflate(text);
  return [key, new TextDecoder().decode(text)];
}

async function inflate(bytes) {
  const ds = new DecompressionStream('deflate');
  const stream = new Blob([bytes]).stream().pipeThrough(ds);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function latin1(bytes) {
  let s = '';
  for (const c of bytes) s += String.fromCharCode(c);
  return s;
}

/**
 * Finds the graph a PNG carries: the UI workflow when present, else the API prompt.
 * @returns {Promise<{workflow?: object, prompt?: object}>}
 */
export async function readPngGraph(buf) {
  const text = await readPngText(buf);
  const res = {};
  for (const key of ['workflow', 'prompt']) {
    if (text[key] === undefined) continue;
    try {
      res[key] = JSON.parse(text[key]);
    } catch (e) {
      throw new PngError(`png: the "${key}" text chunk is not JSON: ${e.message}`);
    }
  }
  return res;
}
