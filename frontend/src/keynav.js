// Keyboard access to the nodes on the canvas: Tab / Shift+Tab walk the nodes in
// reading order of the flow (left to right by column, then top to bottom), the arrow
// keys move the selected nodes (or pan the view when none is selected). Pure helpers
// here; main.js wires them to the focused canvas.

/** Grid step of an arrow-key move, in graph units; Shift moves by one unit. */
export const MOVE_STEP = 10;

/** Screen pixels the view pans per arrow key when no node is selected. */
export const PAN_STEP = 50;

/** Nodes in keyboard order: by x, then y, then id (stable for equal positions). */
export function keyboardOrder(nodes) {
  return [...nodes].sort((a, b) => a.pos[0] - b.pos[0] || a.pos[1] - b.pos[1] || String(a.id).localeCompare(String(b.id), 'en', { numeric: true }));
}

/**
 * The index in order to select after Tab (back=false) or Shift+Tab (back=true) from
 * index cur (-1: none selected), or -1 when the walk leaves the canvas (past the last
 * node, before the first, or an empty graph), so that Tab never traps the focus.
 */
export function nextIndex(cur, count, back) {
  if (count <= 0) return -1;
  if (cur < 0) return back ? count - 1 : 0;
  const i = back ? cur - 1 : cur + 1;
  return i >= 0 && i < count ? i : -1;
}

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

/** The [dx, dy] direction of an arrow key, or null for another key. */
export function arrowDelta(key) {
  return ARROWS[key] ?? null;
}

/**
 * Moves nodes by (dx, dy) graph units; pinned nodes stay. Returns how many moved.
 */
export function moveNodes(nodes, dx, dy) {
  let moved = 0;
  for (const n of nodes) {
    if (n.pinned || n.flags?.pinned) continue;
    n.pos[0] += dx;
    n.pos[1] += dy;
    moved++;
  }
  return moved;
}
