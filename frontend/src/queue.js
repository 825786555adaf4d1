// The queue panel: the running prompt, pending prompts (each can be cancelled), the
// history of finished prompts with their status; clear and interrupt.
import { t } from './i18n.js';
import { el, toast } from './ui.js';

export class QueuePanel {
  constructor(app, { onHistory } = {}) {
    this.app = app;
    this.onHistory = onHistory;
    this.data = { running: [], pending: [], history: [] };
    this.busy = null;
    document.getElementById('btn-clear-queue').addEventListener('click', () => this.act(() => app.api.clearQueue()));
    document.getElementById('btn-clear-history').addEventListener('click', () => this.act(() => app.api.clearHistory()));
  }

  async act(fn) {
    try {
      await fn();
    } catch (e) {
      toast(e.message, 'error');
    }
    await this.refresh();
  }

  /** Reloads /queue and /history (coalescing calls made while one is in flight). */
  refresh() {
    if (this.busy) {
      this.again = true;
      return this.busy;
    }
    this.busy = (async () => {
      try {
        const [q, h] = await Promise.all([this.app.api.queue(), this.app.api.history(50)]);
        this.data.running = q.queue_running || [];
        this.data.pending = (q.queue_pending || []).slice().sort((a, b) => a[0] - b[0]);
        this.data.history = Object.entries(h || {}).map(([id, item]) => ({ id, ...item }));
        for (const item of this.data.history) {
          for (const out of Object.values(item.outputs || {})) {
            if (out.images?.length) this.onHistory?.(item.id, out.images, false);
          }
        }
        this.render();
      } catch (e) {
        toast(e.message, 'error');
      } finally {
        this.busy = null;
        if (this.again) {
          this.again = false;
          this.refresh();
        }
      }
    })();
    return this.busy;
  }

  render() {
    const item = (entry, action) => el('li', { 'data-prompt-id': entry[1] },
      el('span', { class: 'name', text: t('queue.item', { n: entry[0], id: entry[1].slice(0, 8) }) }), action);
    document.getElementById('queue-running').replaceChildren(...this.data.running.map((e) => item(e,
      el('button', { text: t('queue.interrupt'), onclick: () => this.act(() => this.app.api.interrupt(e[1])) }))));
    document.getElementById('queue-pending').replaceChildren(...this.data.pending.map((e) => item(e,
      el('button', { text: t('queue.cancel'), 'aria-label': t('queue.cancelNamed', { n: e[0] }), onclick: () => this.act(() => this.app.api.deleteQueued([e[1]])) }))));
    const hist = this.data.history.slice().reverse().map((h) => {
      const st = h.status?.status_str ?? (h.status?.completed ? 'success' : '');
      const n = Object.values(h.outputs || {}).reduce((k, o) => k + (o.images?.length || 0), 0);
      return el('li', { 'data-prompt-id': h.id, 'data-status': st },
        el('span', { class: 'name', text: t('queue.historyItem', { id: h.id.slice(0, 8), status: st ? t(`queue.status.${st}`) : '', n }) }),
        el('button', { text: t('queue.load'), onclick: () => this.loadFromHistory(h) }));
    });
    document.getElementById('queue-history').replaceChildren(...hist);
    const n = this.data.running.length + this.data.pending.length;
    document.getElementById('queue-count').textContent = String(n);
  }

  loadFromHistory(h) {
    const wf = h.prompt?.[3]?.extra_pnginfo?.workflow;
    try {
      if (wf) this.app.loadAnyJSON(wf);
      else this.app.loadAnyJSON(h.prompt?.[2]);
    } catch (e) {
      toast(e.message, 'error');
    }
  }
}
