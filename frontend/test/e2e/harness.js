// Shared set-up of the end-to-end suite: a real `forgeflow serve` built from this
// checkout (go build into a temp dir, temp base/output/input/user dirs, a free port)
// serving the freshly built editor, and Debian's Chromium driven by playwright-core.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, copyFileSync, readdirSync, readFileSync, statSync, openSync, readSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const frontendDir = path.resolve(here, '../..');
export const repoDir = path.resolve(frontendDir, '..');
export const artefactDir = path.join(frontendDir, 'test-results');
export const screenshotDir = path.join(repoDir, 'codex', 'screenshots');

let built = null;

/**
 * Builds the editor bundle (once per process) and the forgeflow binary, or takes the
 * binary $FORGEFLOW_E2E_BIN that `npm run test:e2e` built once for every test file.
 */
export function buildAll() {
  if (built) return built;
  if (process.env.FORGEFLOW_E2E_BIN) {
    built = { bin: path.resolve(frontendDir, process.env.FORGEFLOW_E2E_BIN), dir: null };
    return built;
  }
  if (!process.env.FORGEFLOW_E2E_SKIP_VITE) {
    // vite from wherever npm installed it (frontend/node_modules or the workspace
    // root's), never fetched by npx.
    const vite = fileURLToPath(new URL('bin/vite.js', import.meta.resolve('vite/package.json')));
    execFileSync(process.execPath, [vite, 'build', '--logLevel', 'error'], { cwd: frontendDir, stdio: 'inherit' });
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'forgeflow-e2e-bin-'));
  const bin = path.join(dir, 'forgeflow');
  execFileSync('go', ['build', '-o', bin, './cmd/forgeflow'], { cwd: repoDir, stdio: 'inherit' });
  built = { bin, dir };
  return built;
}

/**
 * Starts forgeflow serve on a free port with its own folders. The editor is served
 * from build/dist with --front-end-root, or, with FORGEFLOW_E2E_EMBEDDED=1, from the
 * files embedded in the binary (frontend.FS(), built right after the bundle).
 * opts: args (more serve flags), env (more environment), models (false: start with
 * no model files at all, as a new user does). Returns {url, base, log(), stop()}.
 */
export async function startServer(opts = {}) {
  const { bin } = buildAll();
  const base = mkdtempSync(path.join(tmpdir(), 'forgeflow-e2e-'));
  for (const d of ['output', 'input', 'user', 'models']) mkdirSync(path.join(base, d), { recursive: true });
  const models = opts.models === false ? null : installModels(bin, base);
  const dist = path.join(frontendDir, 'build', 'dist');
  if (!existsSync(path.join(dist, 'index.html'))) throw new Error(`e2e: ${dist}/index.html is missing; the editor was not built`);
  const args = ['serve', '--port', '0', '--base-directory', base, ...(opts.args || [])];
  if (process.env.FORGEFLOW_E2E_EMBEDDED !== '1') args.push('--front-end-root', dist);
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(opts.env || {}) } });
  // Never leave the server behind, even when the test process dies early.
  const killOnExit = () => proc.kill('SIGKILL');
  process.once('exit', killOnExit);
  let log = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`e2e: forgeflow serve did not report its address in 30s; log:\n${log}`)), 30000);
    const onData = (b) => {
      log += b.toString();
      const m = log.match(/listening.*?url=(http:\/\/[^\s"]+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`e2e: forgeflow serve exited with ${code}; log:\n${log}`));
    });
  });
  return {
    url,
    base,
    models,
    log: () => log,
    async stop() {
      process.removeListener('exit', killOnExit);
      proc.kill('SIGTERM');
      await new Promise((r) => {
        if (proc.exitCode !== null) r();
        else proc.on('exit', r);
      });
      rmSync(base, { recursive: true, force: true });
    },
  };
}

/**
 * The golden fixture folder, found like the Go tests' internal/testenv.GoldenDir:
 * $FORGEFLOW_GOLDEN_DIR, else ../shared/golden next to the repository.
 */
export function goldenDir() {
  return process.env.FORGEFLOW_GOLDEN_DIR || path.join(repoDir, '..', 'shared', 'golden');
}

/**
 * Puts a tiny random-weight SD1.5-shaped checkpoint (`forgeflow synth --family
 * sd15-tiny`, ~10 MB, written in well under a second) in base/models/checkpoints and,
 * when the golden fixtures are present, the CLIP vocabulary from golden/tokenizer in
 * base/models/tokenizers/clip, so that the server can run a real txt2img graph.
 * Returns {checkpoint, tokenizer: bool, missing: reason or null}.
 */
export function installModels(bin, base) {
  const ckptDir = path.join(base, 'models', 'checkpoints');
  mkdirSync(ckptDir, { recursive: true });
  const checkpoint = 'tiny.safetensors';
  execFileSync(bin, ['synth', '--family', 'sd15-tiny', '--out', path.join(ckptDir, checkpoint)], { stdio: 'pipe' });
  const vocab = goldenVocabulary(path.join(goldenDir(), 'tokenizer'));
  if (vocab.missing) return { checkpoint, tokenizer: false, missing: vocab.missing };
  const clip = path.join(base, 'models', 'tokenizers', 'clip');
  mkdirSync(clip, { recursive: true });
  copyFileSync(vocab.vocab, path.join(clip, 'vocab.json'));
  copyFileSync(vocab.merges, path.join(clip, 'merges.txt'));
  return { checkpoint, tokenizer: true, missing: null };
}

/**
 * The golden tokenizer family's CLIP vocabulary, found by content as the Go tests'
 * internal/testenv.GoldenVocabDir does (the fixtures may carry other names): the one
 * JSON object of more than 256 integer ids and the one file that starts with "#version".
 * Returns {vocab, merges} paths, or {missing: reason}.
 */
export function goldenVocabulary(tok) {
  let names;
  try {
    names = readdirSync(tok);
  } catch {
    return { missing: `no golden tokenizer folder ${tok}; set FORGEFLOW_GOLDEN_DIR` };
  }
  const vocab = [];
  const merges = [];
  for (const name of names) {
    const file = path.join(tok, name);
    if (!statSync(file).isFile()) continue;
    const head = Buffer.alloc(16);
    const fd = openSync(file, 'r');
    const n = readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    const start = head.subarray(0, n).toString('latin1');
    if (start.startsWith('#version')) {
      merges.push(file);
    } else if (start.trimStart().startsWith('{')) {
      try {
        const ids = Object.values(JSON.parse(readFileSync(file, 'utf8')));
        if (ids.length > 256 && ids.every(Number.isInteger)) vocab.push(file);
      } catch {
        // not JSON: not a vocabulary
      }
    }
  }
  if (vocab.length !== 1 || merges.length !== 1) {
    return { missing: `${tok} holds ${vocab.length} CLIP vocabularies and ${merges.length} merge lists, want one of each; set FORGEFLOW_GOLDEN_DIR` };
  }
  return { vocab: vocab[0], merges: merges[0] };
}

/**
 * Launches headless Chromium. playwright-core gives every launch a fresh temporary
 * --user-data-dir of its own (it refuses one in args), removed on close.
 */
export async function launchBrowser() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  return {
    browser,
    async close() {
      await browser.close();
    },
  };
}

/** Opens the editor in a new page and waits until it has loaded the node list. */
export async function openEditor(browser, url, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 860 }, locale: opts.locale || 'en-US', ...opts.context });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30000 });
  return { page, context, errors };
}

/** Saves a screenshot to the artefact folder and, for the docs, to codex/screenshots. */
export async function screenshot(page, name) {
  mkdirSync(artefactDir, { recursive: true });
  mkdirSync(screenshotDir, { recursive: true });
  const buf = await page.screenshot();
  const { writeFileSync } = await import('node:fs');
  writeFileSync(path.join(artefactDir, `${name}.png`), buf);
  writeFileSync(path.join(screenshotDir, `${name}.png`), buf);
}

/** Screen position (page pixels) of a point in graph space. */
export function toScreen(page, gx, gy) {
  return page.evaluate(([x, y]) => {
    const c = window.forgeflow.canvas;
    const r = c.canvas.getBoundingClientRect();
    const p = c.ds.convertOffsetToCanvas([x, y]);
    return [r.left + p[0], r.top + p[1]];
  }, [gx, gy]);
}
