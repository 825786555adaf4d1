// litegraph's own menus and dialogs in the current language. litegraph builds its
// context menus (canvas, node, link, slot, group and their submenus: modes, colours,
// shapes, alignment) and its small dialogs (the "Value" prompt of a widget, the title
// editor) from English literals, and its callbacks compare the clicked value with
// those literals (e.g. showLinkMenu's `case "Add Reroute"`). So the values must stay
// English; only what is drawn is translated: every text node of a menu entry, a menu
// title or a dialog label whose whole text is a known litegraph literal is replaced
// as the element enters the page. Node types, categories, input and property names
// come from /object_info and stay as they are (as in ComfyUI without locale packs).
import { t } from './i18n.js';

// litegraph 0.17 literal → locale key (strings from litegraph.es.js: getCanvasMenuOptions,
// getNodeMenuOptions, LGraphGroup.getMenuOptions, showLinkMenu, showConnectionMenu,
// onMenuNodeMode (LiteGraph.NODE_MODES), onMenuNodeColors (LGraphCanvas.node_colors),
// onMenuNodeShapes (LiteGraph.VALID_SHAPES), onNodeAlign, createDistributeMenu, prompt).
export const LITEGRAPH_KEYS = {
  'Add Node': 'menu.addNode', 'Add Group': 'menu.addGroup', Align: 'menu.align', Arrange: 'menu.arrange',
  Inputs: 'menu.inputs', Outputs: 'menu.outputs', 'Properties Panel': 'menu.propertiesPanel', Properties: 'menu.properties',
  Title: 'menu.title', title: 'menu.title', Mode: 'menu.mode', Resize: 'menu.resize', Collapse: 'menu.collapse', Expand: 'menu.expand',
  Pin: 'menu.pin', Unpin: 'menu.unpin', Colors: 'menu.colors', Color: 'menu.color', Shapes: 'menu.shapes', Clone: 'menu.clone',
  Remove: 'menu.remove', 'Align Selected To': 'menu.alignSelectedTo', 'Distribute Nodes': 'menu.distributeNodes',
  'Show Advanced': 'menu.showAdvanced', 'Hide Advanced': 'menu.hideAdvanced', 'Font size': 'menu.fontSize',
  'Add Reroute': 'menu.addReroute', Delete: 'menu.delete', 'Delete Reroute': 'menu.deleteReroute', 'Link has no origin': 'menu.linkNoOrigin',
  Search: 'menu.search', 'Disconnect Links': 'menu.disconnectLinks', 'Remove Slot': 'menu.removeSlot', 'Rename Slot': 'menu.renameSlot',
  'Cannot remove': 'menu.cannotRemove', 'Edit Group': 'menu.editGroup', Group: 'menu.group', Event: 'menu.event', 'On Executed': 'menu.onExecuted',
  Top: 'menu.top', Bottom: 'menu.bottom', Left: 'menu.left', Right: 'menu.right', Vertically: 'menu.vertically', Horizontally: 'menu.horizontally',
  Always: 'menu.mode.always', 'On Event': 'menu.mode.onEvent', Never: 'menu.mode.never', 'On Trigger': 'menu.mode.onTrigger',
  default: 'menu.shape.default', box: 'menu.shape.box', round: 'menu.shape.round', card: 'menu.shape.card',
  'No color': 'menu.color.none', red: 'menu.color.red', brown: 'menu.color.brown', green: 'menu.color.green', blue: 'menu.color.blue',
  pale_blue: 'menu.color.paleBlue', cyan: 'menu.color.cyan', purple: 'menu.color.purple', yellow: 'menu.color.yellow', black: 'menu.color.black',
  Value: 'dialog.value', Name: 'dialog.name', OK: 'dialog.ok', 'Slot name': 'dialog.slotName',
};

// Entries dropped from litegraph's menus: the browser converter does not flatten
// subgraphs, and the properties panel is an English-only form of the "Properties"
// submenu and the title/mode entries.
const DROPPED = [/^Convert to Subgraph/, /^Properties Panel$/];

/** Filters a litegraph menu option list (see DROPPED). */
export function dropEntries(items) {
  return items.filter((i) => !(typeof i?.content === 'string' && DROPPED.some((re) => re.test(i.content))));
}

/** The translation of a litegraph literal, or null when s is not one. */
export function translateLiteral(s) {
  const key = Object.hasOwn(LITEGRAPH_KEYS, s.trim()) ? LITEGRAPH_KEYS[s.trim()] : null;
  return key ? t(key) : null;
}

/** Translates the litegraph literals among the text nodes under root. */
export function translateTree(root) {
  const walker = root.ownerDocument.createTreeWalker(root, 4 /* NodeFilter.SHOW_TEXT */);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    // A dialog's input/textarea value is not a text node; labels and buttons are.
    const tr = translateLiteral(n.nodeValue);
    if (tr !== null) n.nodeValue = tr;
  }
}

// litegraph's value lists (a combo widget's choices, the properties panel's enum
// values) are menus of class "dark"; their entries are data ("default", "box", "red"
// can be a node's combo choices) and stay as they are.
const SELECTOR = '.litecontextmenu:not(.dark), .graphdialog';

/**
 * Translates litegraph's menus and dialogs as they are added anywhere in doc, and
 * filters the canvas and node menus of canvas.
 */
export function localizeLitegraph(canvas, doc = document) {
  const canvasMenu = canvas.getCanvasMenuOptions.bind(canvas);
  const nodeMenu = canvas.getNodeMenuOptions.bind(canvas);
  canvas.getCanvasMenuOptions = () => dropEntries(canvasMenu());
  canvas.getNodeMenuOptions = (node) => dropEntries(nodeMenu(node));
  const obs = new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) {
        if (n.nodeType !== 1) continue;
        if (n.matches(SELECTOR)) translateTree(n);
        else for (const m of n.querySelectorAll(SELECTOR)) translateTree(m);
      }
    }
  });
  obs.observe(doc.body, { childList: true, subtree: true });
  return obs;
}
