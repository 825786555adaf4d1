// Node types from /object_info registered with litegraph: a socket for every input, a
// widget (with its own socket, so that linking converts it to an input) for every
// widget input, front-end-only widgets (seed control, upload button), and the drawing
// of run state (running outline, step progress, validation errors, previews).
import { LiteGraph, LGraphNode } from '@comfyorg/litegraph';
import { widgetLayout, schemaInputs, isWidgetInput, defaultValue, SEED_CONTROLS } from './workflow.js';
import { t } from './i18n.js';

/**
 * Registers one litegraph type per schema. hooks: {uploadImage(node, inputName), state}
 * where state holds {running, progress:{node,value,max}, errors:{id:{messages,inputs}}, previews:{id:url}}.
 */
export function registerNodeTypes(defs, hooks) {
  for (const [name, def] of Object.entries(defs)) {
    const layout = widgetLayout(def);
    const inputs = schemaInputs(def);
    class ApiNode extends LGraphNode {
      constructor(title) {
        super(title ?? def.display_name ?? name);
        this.comfyClass = name;
        this.serialize_widgets = true;
        for (const inp of inputs) {
          if (isWidgetInput(inp)) continue;
          this.addInput(inp.name, inp.type, inp.required ? {} : { shape: 7 });
        }
        for (const w of layout) addWidget(this, w, hooks);
        for (const w of layout) {
          if (w.kind === 'value') this.addInput(w.name, w.input.type === 'COMBO' ? 'COMBO' : w.input.type, { widget: { name: w.name } });
        }
        (def.output || []).forEach((type, i) => {
          const label = def.output_name?.[i] ?? type;
          this.addOutput(label, Array.isArray(type) ? 'COMBO' : type, def.output_is_list?.[i] ? { shape: 6 } : {});
        });
        const sz = this.computeSize();
        this.size = [Math.max(sz[0], 220), sz[1] + (name === 'LoadImage' ? 160 : 0)];
      }

      onDrawForeground(ctx) {
        drawState(this, ctx, hooks.state);
      }
    }
    ApiNode.title = def.display_name || name;
    ApiNode.comfyClass = name;
    ApiNode.category = def.category;
    ApiNode.nodeData = def;
    LiteGraph.registerNodeType(name, ApiNode);
    // registerNodeType derives a category from a "category/name" type string; ours
    // comes from the schema (as ComfyUI's app.registerNodeDef sets it afterwards).
    ApiNode.category = def.category || '';
  }
}

function addWidget(node, w, hooks) {
  const inp = w.input;
  const o = inp.options;
  switch (w.kind) {
    case 'control': {
      node.addWidget('combo', 'control_after_generate', 'randomize', null, { values: SEED_CONTROLS, serialize: true });
      return;
    }
    case 'filter':
      node.addWidget('text', 'control_filter_list', '', null, {});
      return;
    case 'upload': {
      const b = node.addWidget('button', 'upload', 'image', () => hooks.uploadImage(node, inp.name), { serialize: true });
      b.label = t('widget.upload');
      b.value = 'image';
      return;
    }
  }
  const v = defaultValue(inp);
  switch (inp.type) {
    case 'INT':
    case 'FLOAT': {
      const step = o.step ?? (inp.type === 'INT' ? 1 : 0.01);
      const precision = inp.type === 'INT' ? 0 : Math.max(0, o.round ? decimals(o.round) : decimals(step));
      const opts = { min: o.min, max: o.max, step2: step, step: step * 10, precision };
      const wd = node.addWidget('number', inp.name, v, function (value) {
        // Snap to the step grid as ComfyUI does (widgets.ts onChange rounding).
        let x = inp.type === 'INT' ? Math.round(value / step) * step + ((o.min ?? 0) % step) : Number(value.toFixed(precision));
        if (o.min !== undefined) x = Math.max(o.min, x);
        if (o.max !== undefined) x = Math.min(o.max, x);
        this.value = x;
      }, opts);
      wd.tooltip = o.tooltip;
      return;
    }
    case 'BOOLEAN':
      node.addWidget('toggle', inp.name, v, null, { on: o.label_on ?? 'true', off: o.label_off ?? 'false' });
      return;
    case 'COMBO':
      node.addWidget('combo', inp.name, v, null, { values: [...(o.options || [])] });
      return;
    case 'STRING': {
      const wd = node.addWidget('text', inp.name, v, null, { multiline: !!o.multiline });
      if (o.multiline) {
        // A textarea dialog for multiline text (litegraph's own prompt, multiline form).
        wd.onClick = ({ e, node: n, canvas }) => canvas.prompt(inp.name, wd.value, (text) => wd.setValue(text, { e, node: n, canvas }), e, true);
      }
      return;
    }
  }
}

/** The current choices of a combo input (refreshed when /object_info is reloaded). */
export function comboValues(def, name) {
  const inp = schemaInputs(def).find((i) => i.name === name);
  return inp?.options?.options ?? [];
}

function decimals(x) {
  const s = String(x);
  const i = s.indexOf('.');
  return i < 0 ? 0 : s.length - i - 1;
}

function drawState(node, ctx, state) {
  if (!state) return;
  const id = String(node.id);
  const titleH = LiteGraph.NODE_TITLE_HEIGHT;
  const err = state.errors?.[id];
  if (state.running === id || err) {
    ctx.save();
    ctx.lineWidth = 3;
    ctx.strokeStyle = err ? '#ff4040' : '#40e060';
    ctx.strokeRect(-4, -titleH - 4, node.size[0] + 8, node.size[1] + titleH + 8);
    ctx.restore();
  }
  if (state.progress && state.progress.node === id && state.progress.max > 0) {
    ctx.fillStyle = '#40a0ff';
    ctx.fillRect(0, -titleH, (node.size[0] * state.progress.value) / state.progress.max, 4);
  }
  if (err) {
    ctx.save();
    ctx.fillStyle = '#ff6060';
    ctx.font = '12px sans-serif';
    err.messages.slice(0, 3).forEach((m, i) => ctx.fillText(m, 4, node.size[1] + 16 + i * 14));
    for (const name of err.inputs) {
      const slot = node.inputs?.findIndex((s) => (s.widget?.name ?? s.name) === name);
      if (slot >= 0) {
        const p = node.getConnectionPos(true, slot);
        ctx.beginPath();
        ctx.arc(p[0] - node.pos[0], p[1] - node.pos[1], 7, 0, Math.PI * 2);
        ctx.strokeStyle = '#ff4040';
        ctx.lineWidth = 2;
        ctx.stroke();
      }
    }
    ctx.restore();
  }
  const img = state.images?.[id];
  if (img && img.complete && img.naturalWidth) {
    const top = imageTop(node);
    const h = node.size[1] - top - 6;
    const w = node.size[0] - 12;
    if (h > 20) {
      const s = Math.min(w / img.naturalWidth, h / img.naturalHeight);
      const dw = img.naturalWidth * s;
      const dh = img.naturalHeight * s;
      ctx.drawImage(img, 6 + (w - dw) / 2, top + (h - dh) / 2, dw, dh);
      // What each node shows now (the e2e suite checks that previews reach the canvas).
      if (state.drawn) state.drawn[id] = img.src;
    }
  }
}

/** Where a node's image area starts, below its widgets (node-local y). */
function imageTop(node) {
  return node.widgets?.length ? (node.widgets[node.widgets.length - 1].last_y ?? 0) + 30 : 40;
}

/** Minimum height of a node's image area when it shows a preview or an output. */
export const IMAGE_AREA = 128;

/**
 * Grows a node so that an image fits below its widgets (as ComfyUI does for
 * previews); a node that is already tall enough keeps its size. Returns whether it grew.
 */
export function makeRoomForImage(node) {
  const need = imageTop(node) + IMAGE_AREA + 6;
  if (node.size[1] >= need) return false;
  node.setSize([node.size[0], need]);
  return true;
}
