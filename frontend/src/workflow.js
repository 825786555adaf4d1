// Graph ↔ prompt conversion on plain JSON, independent of the canvas library:
//   - widgetLayout: which widgets a node of a schema has, in widgets_values order;
//   - graphToPrompt: a UI workflow (litegraph's serialize()) → the API prompt that
//     POST /prompt takes.
// The rules follow ComfyUI_frontend's graphToPrompt (src/utils/executionUtil.ts) and its
// widget constructors, as the Go converter in graph/convert.go documents them: widget
// inputs in schema order, front-end-only widgets (control_after_generate, the upload
// button) taking places in widgets_values, links followed through bypassed nodes and
// Reroute nodes, muted/bypassed/virtual nodes not queued.

export const MODE_ALWAYS = 0;
export const MODE_NEVER = 2;
export const MODE_BYPASS = 4;

const WIDGET_TYPES = new Set(['INT', 'FLOAT', 'STRING', 'BOOLEAN', 'COMBO']);
const UPLOAD_OPTIONS = ['image_upload', 'video_upload', 'audio_upload', 'animated_image_upload', 'file_upload', 'model_upload', '3d_upload'];
const VIRTUAL_TYPES = new Set(['Reroute', 'PrimitiveNode', 'Note', 'MarkdownNote']);

export const SEED_CONTROLS = ['fixed', 'increment', 'decrement', 'randomize'];

/** Error for a workflow that cannot be turned into a prompt. */
export class ConvertError extends Error {
  constructor(nodeId, msg) {
    super(nodeId == null ? `workflow: ${msg}` : `workflow: node ${nodeId}: ${msg}`);
    this.nodeId = nodeId;
  }
}

/**
 * The inputs of a schema in order: [{name, type, options, required}]. type is the type
 * name, or 'COMBO' for a list of choices (options.options holds them).
 */
export function schemaInputs(def) {
  const list = [];
  for (const group of ['required', 'optional']) {
    const specs = def?.input?.[group] || {};
    const order = def?.input_order?.[group] || Object.keys(specs);
    for (const name of order) {
      const spec = specs[name];
      if (!spec) continue;
      let [type, options] = Array.isArray(spec) ? spec : [spec, {}];
      options = options && typeof options === 'object' ? { ...options } : {};
      if (Array.isArray(type)) {
        options.options = type;
        type = 'COMBO';
      } else if (type === 'COMBO' && !Array.isArray(options.options)) {
        options.options = [];
      }
      list.push({ name, type: String(type), options, required: group === 'required' });
    }
  }
  return list;
}

/** Whether an input is shown as a widget (rather than only a socket). */
export function isWidgetInput(inp) {
  return WIDGET_TYPES.has(inp.type) && !inp.options.forceInput;
}

/**
 * The widgets a node of this schema has, in widgets_values order. kind is 'value' for a
 * queued widget, 'control' / 'filter' for control_after_generate and its filter list,
 * 'upload' for an upload button.
 */
export function widgetLayout(def) {
  const out = [];
  for (const inp of schemaInputs(def)) {
    if (!isWidgetInput(inp)) continue;
    out.push({ kind: 'value', name: inp.name, input: inp });
    const cag = inp.options.control_after_generate;
    if (inp.type === 'INT' && (cag === true || (cag === undefined && (inp.name === 'seed' || inp.name === 'noise_seed')))) {
      out.push({ kind: 'control', name: 'control_after_generate', input: inp });
    } else if (inp.type === 'COMBO' && cag) {
      out.push({ kind: 'control', name: 'control_after_generate', input: inp });
      out.push({ kind: 'filter', name: 'control_filter_list', input: inp });
    }
    if (UPLOAD_OPTIONS.some((o) => inp.options[o])) {
      out.push({ kind: 'upload', name: 'upload', input: inp });
    }
  }
  return out;
}

/** The schema default of an input, as the front end would set it on a new widget. */
export function defaultValue(inp) {
  const o = inp.options;
  if (o.default !== undefined) return o.default;
  switch (inp.type) {
    case 'INT':
    case 'FLOAT':
      return typeof o.min === 'number' && o.min > 0 ? o.min : 0;
    case 'STRING':
      return '';
    case 'BOOLEAN':
      return false;
    case 'COMBO':
      return o.options?.[0] ?? '';
  }
  return null;
}

function linkTable(links) {
  const m = new Map();
  for (const l of links || []) {
    if (Array.isArray(l)) m.set(l[0], { id: l[0], origin_id: l[1], origin_slot: l[2], target_id: l[3], target_slot: l[4], type: l[5] });
    else if (l && typeof l === 'object') m.set(l.id, l);
  }
  return m;
}

function typeFits(a, b) {
  if (!a || !b || a === '*' || b === '*') return true;
  const as = String(a).split(',');
  const bs = String(b).split(',');
  return as.some((x) => bs.includes(x));
}

/**
 * Expands {a|b|c} alternatives in a text widget with dynamicPrompts, as the front end's
 * Comfy.DynamicPrompts extension does when it queues (extensions/core/dynamicPrompts.ts):
 * comments (/* *\/ and // to the end of the line) are removed, then while the text
 * holds a "{" and a "}" (one escaped occurrence of each aside) the span between the
 * first of each is replaced by one of its "|"-separated options. choose(n) picks one.
 */
export function expandDynamicPrompt(text, choose = (n) => Math.floor(Math.random() * n)) {
  let s = text.replace(/\/\*[\s\S]*?\*\/|\/\/.*/g, '');
  for (let iter = 0; s.replace('\\{', '').includes('{') && s.replace('\\}', '').includes('}'); iter++) {
    if (iter >= 4096 || s.length > 1 << 20) throw new Error('dynamic prompt does not terminate (unbalanced braces)');
    const start = s.replace('\\{', '00').indexOf('{');
    const end = s.replace('\\}', '00').indexOf('}');
    const options = s.substring(start + 1, end).split('|');
    let k = choose(options.length);
    if (!(k >= 0 && k < options.length)) k = 0;
    s = s.substring(0, start) + options[k] + s.substring(end + 1);
  }
  return s;
}

/**
 * Converts a UI workflow into an API prompt.
 * @param {object} workflow litegraph's serialize() output (links as arrays or objects)
 * @param {Record<string, object>} defs /object_info
 * @param {{choose?: (n:number)=>number}} [opts] choose picks dynamic-prompt options (random by default)
 * @returns {Record<string, {class_type:string, inputs:object, _meta:{title:string}}>}
 */
export function graphToPrompt(workflow, defs, opts = {}) {
  if (!workflow || !Array.isArray(workflow.nodes)) throw new ConvertError(null, 'has no nodes list');
  const nodes = new Map();
  for (const n of workflow.nodes) {
    if (!n || n.id === undefined) throw new ConvertError(null, 'a node has no id');
    if (nodes.has(String(n.id))) throw new ConvertError(n.id, 'duplicate node id');
    nodes.set(String(n.id), n);
  }
  const links = linkTable(workflow.links);
  const missing = [...new Set(workflow.nodes.filter((n) => !VIRTUAL_TYPES.has(n.type) && !defs[n.type]).map((n) => n.type))];
  if (missing.length) {
    const e = new ConvertError(null, `uses node types that are not available: ${missing.sort().join(', ')}`);
    e.missingTypes = missing;
    throw e;
  }

  // resolve follows a link back to the node that really produces its value:
  // {node, slot} for a queued node, {value} for a PrimitiveNode, or null (no source).
  const resolve = (linkId, seen = new Set()) => {
    const l = links.get(linkId);
    if (!l) return null;
    if (seen.has(linkId)) throw new ConvertError(l.target_id, 'link cycle through reroutes or bypassed nodes');
    seen.add(linkId);
    const origin = nodes.get(String(l.origin_id));
    if (!origin) throw new ConvertError(l.target_id, `link ${linkId} comes from node ${l.origin_id}, which does not exist`);
    if (origin.type === 'Reroute') {
      const up = origin.inputs?.[0]?.link;
      return up == null ? null : resolve(up, seen);
    }
    if (origin.type === 'PrimitiveNode') {
      return { value: origin.widgets_values?.[0] };
    }
    if (origin.mode === MODE_BYPASS) {
      const outType = origin.outputs?.[l.origin_slot]?.type ?? l.type;
      const ins = origin.inputs || [];
      const order = [l.origin_slot, ...ins.keys()].filter((i, k, a) => i < ins.length && a.indexOf(i) === k);
      for (const i of order) {
        const inp = ins[i];
        if (inp?.link != null && typeFits(inp.type, outType)) return resolve(inp.link, seen);
      }
      return null;
    }
    return { node: origin, slot: l.origin_slot };
  };

  const prompt = {};
  for (const n of workflow.nodes) {
    if (VIRTUAL_TYPES.has(n.type) || n.mode === MODE_NEVER || n.mode === MODE_BYPASS) continue;
    const def = defs[n.type];
    const inputs = {};
    const values = Array.isArray(n.widgets_values) ? n.widgets_values : null;
    const named = !values && n.widgets_values && typeof n.widgets_values === 'object' ? n.widgets_values : null;
    widgetLayout(def).forEach((w, i) => {
      if (w.kind !== 'value') return;
      let v = values ? values[i] : named ? named[w.name] : undefined;
      if (v === undefined) v = defaultValue(w.input);
      if (typeof v === 'string' && w.input.options.dynamicPrompts) {
        try {
          v = expandDynamicPrompt(v, opts.choose);
        } catch (e) {
          throw new ConvertError(n.id, `input "${w.name}": ${e.message}`);
        }
      }
      inputs[w.name] = Array.isArray(v) ? { __value__: v } : v;
    });
    for (const inp of n.inputs || []) {
      if (inp.link == null) continue;
      const src = resolve(inp.link);
      const name = inp.widget?.name ?? inp.name;
      if (!src) {
        delete inputs[name];
        continue;
      }
      if ('value' in src) inputs[name] = src.value;
      else inputs[name] = [String(src.node.id), src.slot];
    }
    prompt[String(n.id)] = { inputs, class_type: n.type, _meta: { title: n.title || def.display_name || n.type } };
  }
  // Inputs linked to nodes that are not queued are dropped (graphToPrompt's last pass).
  for (const p of Object.values(prompt)) {
    for (const [k, v] of Object.entries(p.inputs)) {
      if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && !prompt[v[0]]) delete p.inputs[k];
    }
  }
  return prompt;
}

/**
 * The value a seed widget takes after a queue, by its control mode (ComfyUI's
 * widgets.ts valueControl with "after" timing). rand() is in [0,1).
 */
export function nextSeed(value, mode, opts = {}, rand = Math.random) {
  const min = opts.min ?? 0;
  const max = Math.min(opts.max ?? Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const step = opts.step ?? 1;
  let v = value;
  switch (mode) {
    case 'increment':
      v = value + step;
      break;
    case 'decrement':
      v = value - step;
      break;
    case 'randomize':
      v = Math.floor(rand() * (max - min + 1)) + min;
      break;
    default:
      return value;
  }
  return Math.min(max, Math.max(min, v));
}

/**
 * The value a COMBO widget with control_after_generate takes after a queue (the combo
 * branch of ComfyUI_frontend's widgets.ts addValueControlWidgets, "after" timing):
 * the choices are first narrowed by the control_filter_list text (/regex/ or a
 * case-insensitive substring; a bad regex falls back to the substring), then the
 * position of the current value moves by one (increment / decrement) or is drawn at
 * random, clamped to the list, never wrapping. A value outside the narrowed list
 * counts as position -1. With no choice left the value stays.
 */
export function nextComboValue(value, mode, choices, filter = '', rand = Math.random) {
  if (mode !== 'increment' && mode !== 'decrement' && mode !== 'randomize') return value;
  let list = choices.map(String);
  if (filter) {
    let keep = null;
    if (filter.length > 1 && filter.startsWith('/') && filter.endsWith('/')) {
      try {
        const re = new RegExp(filter.slice(1, -1));
        keep = (c) => re.test(c);
      } catch {
        keep = null;
      }
    }
    if (!keep) {
      const lower = filter.toLocaleLowerCase();
      keep = (c) => c.toLocaleLowerCase().includes(lower);
    }
    list = list.filter(keep);
  }
  if (!list.length) return value;
  let i = list.indexOf(String(value));
  if (mode === 'increment') i += 1;
  else if (mode === 'decrement') i -= 1;
  else i = Math.floor(rand() * list.length);
  return list[Math.min(list.length - 1, Math.max(0, i))];
}

/** Groups node types by category path for the palette: [[category, [names...]], ...] sorted. */
export function categories(defs) {
  const m = new Map();
  for (const [name, d] of Object.entries(defs)) {
    if (d.deprecated || d.dev_only) continue;
    const c = d.category || 'other';
    if (!m.has(c)) m.set(c, []);
    m.get(c).push(name);
  }
  return [...m.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([c, l]) => [c, l.sort()]);
}

/**
 * Ranks node types for a search string: exact and prefix matches of the display name
 * first, then substring matches in the name, display name or category; every word of
 * the query must match somewhere. An empty query lists the palette by category.
 */
export function searchNodes(defs, query, limit = 50) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return categories(defs).flatMap(([, names]) => names).slice(0, limit);
  const scored = [];
  for (const [name, d] of Object.entries(defs)) {
    if (d.deprecated || d.dev_only) continue;
    const disp = (d.display_name || name).toLowerCase();
    const hay = `${name.toLowerCase()} ${disp} ${(d.category || '').toLowerCase()}`;
    if (!words.every((w) => hay.includes(w))) continue;
    const q = words.join(' ');
    let score = 3;
    if (disp === q || name.toLowerCase() === q) score = 0;
    else if (disp.startsWith(q) || name.toLowerCase().startsWith(q)) score = 1;
    else if (disp.includes(q) || name.toLowerCase().includes(q)) score = 2;
    scored.push([score, disp.length, name]);
  }
  scored.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2].localeCompare(b[2]));
  return scored.slice(0, limit).map((s) => s[2]);
}
