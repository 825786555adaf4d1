// Keyboard editing of a node's widgets: F2 on the selected node opens a modal
// <dialog> with one native form control per widget (number field with the schema's
// min/max/step, select for combos, text field or textarea, checkbox, and the upload
// button), so widget values can be read and set without a pointer and by screen
// readers. Values go through the widget's own setValue, i.e. the same snapping and
// clamping as a drag or litegraph's prompt.
import { el } from './ui.js';
import { t } from './i18n.js';

const KINDS = new Set(['number', 'combo', 'text', 'customtext', 'toggle', 'button']);

/** The widgets the editor offers: value widgets whose input is not linked. */
export function editableWidgets(node) {
  const linked = new Set((node.inputs || []).filter((i) => i.widget?.name && i.link != null).map((i) => i.widget.name));
  return (node.widgets || []).filter((w) => KINDS.has(w.type) && !linked.has(w.name));
}

/** The choices of a combo widget as a list (litegraph also allows a map or a function). */
function comboChoices(w, node) {
  let v = w.options?.values ?? [];
  if (typeof v === 'function') v = v(w, node);
  return Array.isArray(v) ? v : Object.values(v);
}

/**
 * The value a form control holds for widget w, or undefined when it holds none (an
 * empty or non-numeric number field keeps the widget's value).
 */
export function controlValue(w, control) {
  switch (w.type) {
    case 'number': {
      if (control.value.trim() === '') return undefined;
      const x = Number(control.value);
      return Number.isFinite(x) ? x : undefined;
    }
    case 'toggle':
      return control.checked;
    case 'button':
      return undefined;
    default:
      return control.value;
  }
}

/**
 * Opens the editor for node; onApply(changed) runs after the values were set (changed:
 * how many widgets changed), onClose when the dialog is gone (either way).
 */
export function openWidgetEditor(node, canvas, { onApply, onClose } = {}) {
  document.getElementById('widget-dialog')?.remove();
  const widgets = editableWidgets(node);
  const title = t('edit.title', { title: node.title });
  const rows = [];
  const controls = new Map();
  widgets.forEach((w, i) => {
    const id = `widget-field-${i}`;
    const label = w.label || w.name;
    let control;
    if (w.type === 'button') {
      control = el('button', { type: 'button', id, text: label, onclick: () => { d.close('cancel'); w.callback?.(w, canvas, node); } });
      rows.push(el('div', { class: 'field' }, control));
      return;
    }
    if (w.type === 'number') {
      const o = w.options || {};
      control = el('input', { type: 'number', id, value: String(w.value), step: String(o.step2 ?? 'any') });
      if (o.min !== undefined) control.min = String(o.min);
      if (o.max !== undefined) control.max = String(o.max);
    } else if (w.type === 'combo') {
      control = el('select', { id });
      for (const c of comboChoices(w, node)) control.append(el('option', { value: String(c), text: String(c) }));
      control.value = String(w.value);
    } else if (w.type === 'toggle') {
      control = el('input', { type: 'checkbox', id });
      control.checked = !!w.value;
    } else if (w.options?.multiline) {
      control = el('textarea', { id, rows: '4' });
      control.value = String(w.value ?? '');
    } else {
      control = el('input', { type: 'text', id, value: String(w.value ?? '') });
    }
    controls.set(w, control);
    rows.push(el('div', { class: 'field' }, el('label', { for: id, text: label }), control));
  });
  // novalidate: a value off the step grid is snapped by the widget, not refused.
  const form = el('form', { method: 'dialog', novalidate: '' },
    el('h2', { text: title }),
    widgets.length ? null : el('p', { text: t('edit.none') }),
    ...rows,
    el('div', { class: 'row', style: 'margin-top:8px;justify-content:flex-end' },
      el('button', { type: 'button', id: 'widget-cancel', text: t('dialog.cancel'), onclick: () => d.close('cancel') }),
      el('button', { type: 'submit', class: 'primary', id: 'widget-ok', text: t('dialog.ok') })));
  const d = el('dialog', { id: 'widget-dialog', 'aria-label': title }, form);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    let changed = 0;
    for (const [w, control] of controls) {
      const v = controlValue(w, control);
      if (v === undefined || v === w.value) continue;
      w.setValue(v, { e: undefined, node, canvas });
      changed++;
    }
    d.close('ok');
    onApply?.(changed);
  });
  d.addEventListener('close', () => {
    d.remove();
    onClose?.();
  });
  document.body.append(d);
  d.showModal();
  (form.querySelector('input, select, textarea, button'))?.focus();
  return d;
}
