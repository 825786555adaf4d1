// Helpers of the end-to-end suite that act on the shared page like a user: read the
// graph, add nodes from the search, drag links, set widgets, and check litegraph's
// menus in Chinese. get() returns the page the suite is driving.
import assert from 'node:assert/strict';
import { toScreen, screenshot, artefactDir } from './harness.js';

export function pageHelpers(get) {
  const graphSummary = () => get().evaluate(() => {
    const g = window.forgeflow.graph;
    return {
      nodes: g._nodes.map((n) => ({ id: n.id, type: n.type, widgets: Object.fromEntries((n.widgets || []).map((w) => [w.name, w.value])) })),
      links: [...g._links.values()].map((l) => [l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]),
    };
  });

  /** Removes a node the way a user's delete would: recorded in the undo history. */
  function removeNode(id) {
    return get().evaluate((n) => {
      const { graph, history } = window.forgeflow;
      graph.remove(graph.getNodeById(n));
      history.check();
    }, id);
  }

  async function nodeByType(type) {
    return get().evaluate((t) => window.forgeflow.graph._nodes.find((n) => n.type === t)?.id, type);
  }

  async function slotPos(nodeId, input, slot) {
    const p = await get().evaluate(([id, inp, s]) => window.forgeflow.graph.getNodeById(id).getConnectionPos(inp, s), [nodeId, input, slot]);
    return toScreen(get(), p[0], p[1]);
  }

  async function drag(from, to) {
    await get().mouse.move(from[0], from[1]);
    await get().mouse.down();
    await get().mouse.move((from[0] + to[0]) / 2, (from[1] + to[1]) / 2, { steps: 5 });
    await get().mouse.move(to[0], to[1], { steps: 5 });
    await get().mouse.up();
  }

  /** Adds a node by double-clicking the canvas at graph position (gx, gy) and searching. */
  async function addFromSearch(query, gx, gy, pick) {
    const [x, y] = await toScreen(get(), gx, gy);
    await get().mouse.dblclick(x, y);
    await get().waitForFunction(() => document.activeElement?.id === 'search-input', null, { timeout: 5000 }).catch(async (e) => {
      await get().screenshot({ path: `${artefactDir}/failed-search-${query}.png` });
      throw e;
    });
    await get().keyboard.type(query);
    const first = await get().getAttribute('#search-results li[aria-selected="true"]', 'data-type');
    assert.equal(first, pick, `first search result for "${query}"`);
    await get().keyboard.press('Enter');
    await get().waitForSelector('#search-dialog', { state: 'detached' });
    return get().evaluate(() => window.forgeflow.graph._nodes.at(-1).id);
  }

  /** Clicks the middle of a widget and types a value into litegraph's prompt dialog. */
  async function setWidget(nodeId, name, value, pg = get()) {
    const [x, y] = await widgetPos(nodeId, name, pg);
    await pg.mouse.click(x, y);
    const input = pg.locator('.graphdialog input.value');
    await input.waitFor();
    await input.fill(String(value));
    await input.press('Enter');
  }

  /** Screen position of the middle of a node's widget. */
  async function widgetPos(nodeId, name, pg = get()) {
    const p = await pg.evaluate(([id, n]) => {
      const node = window.forgeflow.graph.getNodeById(id);
      const w = node.widgets.find((x) => x.name === n);
      return [node.pos[0] + node.size[0] / 2, node.pos[1] + (w.y ?? w.last_y) + 10];
    }, [nodeId, name]);
    return toScreen(pg, p[0], p[1]);
  }

  /**
   * Texts of the open litegraph menus (entries and titles) that contain Latin letters,
   * other than node type names (a node menu's title is its type, from /object_info).
   */
  const latinInMenus = () => get().evaluate(() => [...document.querySelectorAll('.litecontextmenu .litemenu-entry, .litecontextmenu .litemenu-title')]
    .map((e) => e.textContent.trim()).filter((x) => /[A-Za-z]/.test(x) && !(x in window.forgeflow.defs)));

  async function closeMenus() {
    await get().keyboard.press('Escape');
    const [x, y] = await toScreen(get(), 1400, 900);
    await get().mouse.click(x, y);
    await get().waitForFunction(() => !document.querySelector('.litecontextmenu'));
  }

  // In Chinese, litegraph's canvas, node and link menus, their submenus and the "Value"
  // prompt show no English. (Node types and input names come from /object_info and are
  // not translated; none of the menus opened here lists them.)
  async function checkChineseMenus(mx, my) {
    await get().mouse.click(mx, my, { button: 'right' });
    await get().locator('.litecontextmenu .litemenu-entry').first().waitFor();
    assert.deepEqual(await latinInMenus(), [], 'canvas menu');
    await closeMenus();
    const invert = await nodeByType('ImageInvert');
    const save = await nodeByType('SaveImage');
    assert.ok(invert && save, 'the graph has ImageInvert → SaveImage');
    const title = await get().evaluate((id) => {
      const n = window.forgeflow.graph.getNodeById(id);
      return [n.pos[0] + 20, n.pos[1] - 10];
    }, invert);
    const [nx, ny] = await toScreen(get(), title[0], title[1]);
    await get().mouse.click(nx, ny, { button: 'right' });
    const nodeMenu = get().locator('.litecontextmenu').first();
    await nodeMenu.locator('.litemenu-entry').first().waitFor();
    assert.deepEqual(await latinInMenus(), [], 'node menu');
    for (const sub of ['模式', '颜色', '形状']) {
      await nodeMenu.locator('.litemenu-entry', { hasText: new RegExp(`^${sub}$`) }).click();
      await get().waitForFunction(() => document.querySelectorAll('.litecontextmenu').length === 2);
      assert.deepEqual(await latinInMenus(), [], `node menu › ${sub}`);
      if (sub === '模式') await screenshot(get(), '07b-chinese-node-menu');
      const subTexts = await get().locator('.litecontextmenu').nth(1).locator('.litemenu-entry').allTextContents();
      assert.ok(subTexts.length >= 3, `${sub} lists its choices: ${subTexts}`);
    }
    await closeMenus();
    const mid = await get().evaluate(([a, b]) => {
      const link = [...window.forgeflow.graph._links.values()].find((l) => l.origin_id === a && l.target_id === b);
      return link?._pos ? [link._pos[0], link._pos[1]] : null;
    }, [invert, save]);
    assert.ok(mid, 'the link has a centre marker');
    const [lx, ly] = await toScreen(get(), mid[0], mid[1]);
    await get().mouse.click(lx, ly);
    await get().locator('.litecontextmenu .litemenu-entry', { hasText: '添加中转点' }).waitFor();
    assert.deepEqual(await latinInMenus(), [], 'link menu');
    await get().locator('.litecontextmenu .litemenu-entry', { hasText: /^添加节点$/ }).click();
    await get().waitForFunction(() => document.querySelectorAll('.litecontextmenu').length >= 1);
    await closeMenus();
    // A combo widget's choices are data and stay as they are, even when one of them is
    // also a litegraph literal ("default", "red").
    const ks = await get().evaluate(() => {
      const { graph, LiteGraph } = window.forgeflow;
      const n = LiteGraph.createNode('KSampler');
      const va = window.forgeflow.canvas.visible_area;
      // Below the other nodes, so that it covers none of them.
    const bottom = Math.max(...graph._nodes.map((x) => x.pos[1] + x.size[1]));
    n.pos = [va[0] + 40, Math.max(va[1] + 60, bottom + 60)];
      graph.add(n);
      n.widgets.find((w) => w.name === 'sampler_name').options.values = ['euler', 'default', 'red'];
      window.forgeflow.canvas.setDirty(true, true);
      return n.id;
    });
    // Widget positions are known once the node has been drawn.
    await get().waitForFunction((id) => window.forgeflow.graph.getNodeById(id).widgets.find((w) => w.name === 'sampler_name').last_y !== undefined, ks);
    const [kx, ky] = await widgetPos(ks, 'sampler_name');
    await get().mouse.click(kx, ky);
    const combo = get().locator('.litecontextmenu.dark');
    await combo.locator('.litemenu-entry').first().waitFor();
    assert.deepEqual(await combo.locator('.litemenu-entry').allTextContents(), ['euler', 'default', 'red']);
    await closeMenus();
    await removeNode(ks);
    // litegraph hit-tests against the nodes of its last frame (visible_nodes).
    await get().waitForFunction((id) => !window.forgeflow.canvas.visible_nodes.some((x) => x.id === id), ks);
    // A number widget's value prompt.
    const empty = await nodeByType('EmptyImage');
    const p = await get().evaluate((id) => {
      const node = window.forgeflow.graph.getNodeById(id);
      const w = node.widgets.find((x) => x.name === 'width');
      return [node.pos[0] + node.size[0] / 2, node.pos[1] + (w.y ?? w.last_y) + 10];
    }, empty);
    const [wx, wy] = await toScreen(get(), p[0], p[1]);
    await get().mouse.click(wx, wy);
    const dialog = get().locator('.graphdialog');
    await dialog.waitFor();
    assert.equal((await dialog.locator('.name').textContent()).trim(), '值');
    assert.equal((await dialog.locator('button').textContent()).trim(), '确定');
    await dialog.locator('input.value').press('Escape');
    await dialog.waitFor({ state: 'detached' });
  }

  return { graphSummary, removeNode, nodeByType, slotPos, drag, addFromSearch, setWidget, widgetPos, latinInMenus, closeMenus, checkChineseMenus };
}
