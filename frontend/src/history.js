// Undo/redo by snapshots: after every change the graph's serialized JSON is compared
// with the last one; a difference pushes the old state (as ComfyUI's change tracker
// does). Each new state is also handed to onSave (autosave to local storage).

export class History {
  /**
   * @param {() => string} snapshot current state as a string
   * @param {(s: string) => void} restore puts a state back
   * @param {(s: string) => void} onSave called with each new state
   */
  constructor(snapshot, restore, onSave = () => {}, limit = 50) {
    this.snapshot = snapshot;
    this.restoreFn = restore;
    this.onSave = onSave;
    this.limit = limit;
    this.undos = [];
    this.redos = [];
    this.current = null;
    this.restoring = false;
  }

  /** Starts over from the current state (after a load). */
  reset() {
    this.undos = [];
    this.redos = [];
    this.current = this.snapshot();
    this.onSave(this.current);
  }

  /** Records the current state if it changed. */
  check() {
    if (this.restoring) return;
    const s = this.snapshot();
    if (this.current === null) {
      this.current = s;
      this.onSave(s);
      return;
    }
    if (s === this.current) return;
    this.undos.push(this.current);
    if (this.undos.length > this.limit) this.undos.shift();
    this.redos = [];
    this.current = s;
    this.onSave(s);
  }

  undo() {
    this.check();
    if (!this.undos.length) return false;
    this.redos.push(this.current);
    this.apply(this.undos.pop());
    return true;
  }

  redo() {
    if (!this.redos.length) return false;
    this.undos.push(this.current);
    this.apply(this.redos.pop());
    return true;
  }

  apply(s) {
    this.restoring = true;
    try {
      this.restoreFn(s);
    } finally {
      this.restoring = false;
    }
    // Re-read: a restored graph may serialize slightly differently from the snapshot.
    this.current = this.snapshot();
    this.onSave(this.current);
  }
}
