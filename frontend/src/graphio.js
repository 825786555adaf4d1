// Building a canvas graph from an API prompt (importing API JSON, the default graph):
// nodes laid out in columns by their depth in the graph, widgets set by name, links
// connected by input name.

/** The default graph as an API prompt: txt2img when the server has the nodes, else a model-free one. */
export function defaultPrompt(defs) {
  const txt2img = {
    4: { class_type: 'CheckpointLoaderSimple', inputs: {} },
    6: { class_type: 'CLIPTextEncode', inputs: { text: 'a watercolor painting of a lighthouse at dawn', clip: ['4', 1] } },
    7: { class_type: 'CLIPTextEncode', inputs: { text: 'blurry, low quality', clip: ['4', 1] } },
    5: { class_type: 'EmptyLatentImage', inputs: { width: 512, height: 512, batch_size: 1 } },
    3: { class_type: 'KSampler', inputs: { model: ['4', 0], positive: ['6', 0], negative: ['7', 0], latent_image: ['5', 0] } },
    8: { class_type: 'VAEDecode', inputs: { samples: ['3', 0], vae: ['4', 2] } },
    9: { class_type: 'SaveImage', inputs: { images: ['8', 0] } },
  };
  if (Object.values(txt2img).every((n) => defs[n.class_type])) return txt2img;
  const modelFree = {
    1: { class_type: 'EmptyImage', inputs: { width: 512, height: 512, batch_size: 1, color: 0x3366cc } },
    2: { class_type: 'ImageInvert', inputs: { image: ['1', 0] } },
    3: { class_type: 'SaveImage', inputs: { images: ['2', 0], filename_prefix: 'forgeflow' } },
  };
  if (Object.values(modelFree).every((n) => defs[n.class_type])) return modelFree;
  return {};
}

/** Depth of each node id: the longest chain of links leading to it. */
export function depths(prompt) {
  const memo = {};
  const visit = (id, stack) => {
    if (memo[id] !== undefined) return memo[id];
    if (stack.has(id)) return 0;
    stack.add(id);
    let d = 0;
    for (const v of Object.values(prompt[id]?.inputs || {})) {
      if (Array.isArray(v) && v.length === 2 && prompt[String(v[0])]) d = Math.max(d, visit(String(v[0]), stack) + 1);
    }
    stack.delete(id);
    memo[id] = d;
    return d;
  };
  for (const id of Object.keys(prompt)) visit(id, new Set());
  return memo;
}

/**
 * Adds the nodes of an API prompt to a litegraph graph. Unknown types throw; links to
 * missing nodes are skipped.
 */
export function buildFromPrompt(graph, prompt, defs, LiteGraph) {
  const d = depths(prompt);
  const rows = {};
  const nodes = {};
  const ids = Object.keys(prompt).sort((a, b) => d[a] - d[b] || Number(a) - Number(b) || a.localeCompare(b));
  for (const id of ids) {
    const p = prompt[id];
    const node = LiteGraph.createNode(p.class_type);
    if (!node) throw new Error(`node type ${p.class_type} is not available`);
    if (/^\d+$/.test(id)) node.id = Number(id);
    if (p._meta?.title) node.title = p._meta.title;
    const col = d[id];
    rows[col] = (rows[col] ?? 0);
    node.pos = [60 + col * 320, 60 + rows[col]];
    rows[col] += node.size[1] + 80;
    for (const [name, v] of Object.entries(p.inputs || {})) {
      if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string') continue;
      const w = node.widgets?.find((x) => x.name === name);
      if (!w) continue;
      w.value = v && typeof v === 'object' && '__value__' in v ? v.__value__ : v;
    }
    graph.add(node);
    nodes[id] = node;
  }
  for (const id of ids) {
    for (const [name, v] of Object.entries(prompt[id].inputs || {})) {
      if (!(Array.isArray(v) && v.length === 2 && typeof v[0] === 'string')) continue;
      const src = nodes[v[0]];
      const dst = nodes[id];
      const slot = dst.inputs.findIndex((s) => s.name === name);
      if (src && slot >= 0) src.connect(v[1], dst, slot);
    }
  }
  return nodes;
}
