const D = WS.data, names = D.classes, sub = D.subsumer_names || {};
const depths = [];
Object.values(D.methods).forEach(m => { depths.push(...m.edge_depths, ...(m.confusion_edge_depths || [])); });
const lo = depths.length ? Math.min(...depths) : 1, hi = depths.length ? Math.max(...depths) : 2;
const colour = d3.scaleSequential(d3.interpolateViridis).domain([lo, Math.max(hi, lo + 1)]);
const charW = 6.6, rowH = 18;

// depth histograms: one small chart per method, integer depths on a band axis, integer counts
function histogram(div, m) {
  const M = D.methods[m], ks = d3.range(lo, hi + 1);
  const series = [['similarity', M.edge_depths, '#4c78a8']];
  if (M.confusion_edge_depths) series.push(['confusion', M.confusion_edge_depths, '#e45756']);
  const counts = series.map(([k, ds, c]) => [k, ks.map(x => ds.filter(y => y === x).length), c]);
  const w = 300, h = 190, mg = {l: 40, r: 8, t: 24, b: 40};
  const x = d3.scaleBand().domain(ks).range([mg.l, w - mg.r]).padding(0.15);
  const xi = d3.scaleBand().domain(series.map(s => s[0])).range([0, x.bandwidth()]).padding(0.05);
  const ymax = Math.max(1, ...counts.flatMap(c => c[1]));
  const y = d3.scaleLinear().domain([0, ymax]).nice().range([h - mg.b, mg.t]);
  const svg = d3.select(div).append('svg').attr('class', 'chart hist').attr('width', w).attr('height', h);
  svg.append('text').attr('x', mg.l).attr('y', 14).attr('font-size', 12).attr('font-weight', 600)
     .text(`${m} (${M.n_clusters} cluster${M.n_clusters === 1 ? '' : 's'})`);
  const every = Math.ceil(ks.length / 12);
  svg.append('g').attr('transform', `translate(0,${h - mg.b})`).call(d3.axisBottom(x).tickValues(ks.filter((k, i) => i % every === 0)))
     .selectAll('text').attr('class', 'tick-label');
  svg.append('g').attr('transform', `translate(${mg.l},0)`)
     .call(d3.axisLeft(y).ticks(Math.min(5, ymax)).tickFormat(d3.format('d')).tickValues(y.ticks(Math.min(5, ymax)).filter(Number.isInteger)))
     .selectAll('text').attr('class', 'tick-label');
  svg.append('text').attr('x', (w + mg.l) / 2).attr('y', h - 6).attr('text-anchor', 'middle').attr('font-size', 10)
     .text('WordNet depth of the edge');
  counts.forEach(([k, cs, c]) => svg.append('g').selectAll('rect').data(ks).join('rect')
     .attr('x', d => x(d) + xi(k)).attr('width', xi.bandwidth()).attr('y', (d, i) => y(cs[i]))
     .attr('height', (d, i) => y(0) - y(cs[i])).attr('fill', c)
     .on('mousemove', (ev, d) => WS.showTip(ev, `${k} tree edges at depth ${d}: ${cs[ks.indexOf(d)]}`)).on('mouseout', WS.hideTip));
}
const hdiv = document.getElementById('histograms');
Object.keys(D.methods).forEach(m => { const d = document.createElement('div'); hdiv.appendChild(d); histogram(d, m); });

// colour legend of the WordNet depth
(function legend() {
  const w = 320, svg = d3.select('#legend').append('svg').attr('class', 'chart').attr('width', w + 40).attr('height', 52);
  const grad = svg.append('defs').append('linearGradient').attr('id', 'depth-grad');
  d3.range(0, 1.01, 0.1).forEach(t => grad.append('stop').attr('offset', t).attr('stop-color', colour(lo + t * (Math.max(hi, lo + 1) - lo))));
  svg.append('rect').attr('x', 10).attr('y', 4).attr('width', w).attr('height', 12).attr('fill', 'url(#depth-grad)');
  const x = d3.scaleLinear().domain([lo, Math.max(hi, lo + 1)]).range([10, 10 + w]);
  svg.append('g').attr('transform', 'translate(0,16)').call(d3.axisBottom(x).tickValues(d3.range(lo, Math.max(hi, lo + 1) + 1, Math.ceil((hi - lo + 1) / 12))).tickFormat(d3.format('d')))
     .selectAll('text').attr('class', 'tick-label');
  svg.append('text').attr('x', 10).attr('y', 48).attr('font-size', 10).text('edge colour: WordNet depth of the lowest common hypernym');
})();

// one cluster at a time: its maximum spanning tree, rooted at the tree's centre, drawn as a collapsible tidy tree
function treeOf(M, graph, members) {
  const adj = new Map(members.map(i => [i, []])), depthOf = new Map(), shared = new Set();
  const ds = graph === 'similarity' ? M.edge_depths : M.confusion_edge_depths;
  const subs = graph === 'similarity' ? M.edge_subsumers : null;
  const G = graph === 'similarity' ? M.similarity_graph : M.confusion_graph;
  const other = graph === 'similarity' ? M.confusion_graph : M.similarity_graph;
  if (other) other.edges.forEach(([i, j]) => shared.add(Math.min(i, j) + ',' + Math.max(i, j)));
  const set = new Set(members);
  G.edges.forEach(([i, j, w], k) => { if (!set.has(i)) return; adj.get(i).push(j); adj.get(j).push(i);
    depthOf.set(Math.min(i, j) + ',' + Math.max(i, j), {depth: ds[k], w, sub: subs ? subs[k] : null, k}); });
  const far = s => { const dist = new Map([[s, 0]]), prev = new Map(), q = [s]; let last = s;
    while (q.length) { const u = q.shift(); last = u; for (const v of adj.get(u)) if (!dist.has(v)) { dist.set(v, dist.get(u) + 1); prev.set(v, u); q.push(v); } }
    return [last, dist, prev]; };
  const [a] = far(Math.min(...members)), [b, , prev] = far(a);
  const path = [b]; while (path[path.length - 1] !== a) path.push(prev.get(path[path.length - 1]));
  const root = path[Math.floor(path.length / 2)];
  const fold = members.length > 150 ? 4 : Infinity;  // big clusters open folded below depth 4
  const build = (u, p, k) => ({id: u, _collapsed: k >= fold && adj.get(u).length > 1,
    children: adj.get(u).filter(v => v !== p).sort((x, y) => x - y).map(v => build(v, u, k + 1))});
  return {root: build(root, -1, 0), depthOf, shared};
}
const state = {};
function drawTree(m) {
  const M = D.methods[m], st = state[m], box = document.getElementById('tree-' + m);
  const G = st.graph === 'similarity' ? M.similarity_graph : M.confusion_graph;
  const members = G.clusters[st.cluster];
  box.innerHTML = '';
  if (members.length < 2) { box.textContent = `single class: ${names[members[0]]}`; return; }
  const T = st.tree || (st.tree = treeOf(M, st.graph, members));
  const h = d3.hierarchy(T.root, d => d._collapsed ? null : d.children);
  const label = i => { const n = names[i]; return n.length > 28 ? n.slice(0, 27) + '…' : n; };
  const colW = Math.max(...members.map(i => label(i).length)) * charW + 34;
  d3.tree().nodeSize([rowH, colW])(h);
  let y0 = Infinity, y1 = -Infinity; h.each(d => { y0 = Math.min(y0, d.x); y1 = Math.max(y1, d.x); });
  const width = (h.height + 1) * colW + 20, height = y1 - y0 + 2 * rowH;
  const svg = d3.select(box).append('svg').attr('class', 'chart tree').attr('width', width).attr('height', height);
  const g = svg.append('g').attr('transform', `translate(10,${rowH - y0})`);
  const key = (u, v) => Math.min(u, v) + ',' + Math.max(u, v);
  const size = n => 1 + n.children.reduce((a, c) => a + size(c), 0);
  const tw = d => label(d.data.id).length * charW + 12;  // links leave a parent after its label
  const link = l => d3.linkHorizontal().x(d => d.y).y(d => d.x)({source: {x: l.source.x, y: l.source.y + tw(l.source)}, target: l.target});
  const edges = g.append('g').selectAll('g').data(h.links()).join('g').attr('class', 'edge');
  const info = l => T.depthOf.get(key(l.source.data.id, l.target.data.id));
  edges.append('path').attr('d', link).attr('fill', 'none').attr('stroke', l => colour(info(l).depth))
       .attr('stroke-width', l => T.shared.has(key(l.source.data.id, l.target.data.id)) ? 4 : 2);
  edges.append('path').attr('d', link).attr('fill', 'none').attr('stroke', 'transparent').attr('stroke-width', 10)
       .on('mousemove', (ev, l) => { const e = info(l);
         WS.showTip(ev, `${WS.esc(names[l.source.data.id])} — ${WS.esc(names[l.target.data.id])}<br>WordNet depth ${e.depth}` +
           (e.sub ? ` (lowest common hypernym: ${WS.esc(sub[e.sub] || e.sub)})` : '') + `<br>affinity ${e.w.toPrecision(4)}` +
           (T.shared.has(key(l.source.data.id, l.target.data.id)) ? `<br>also a ${st.graph === 'similarity' ? 'confusion' : 'similarity'} tree edge` : '')); })
       .on('mouseout', WS.hideTip);
  const node = g.append('g').selectAll('g').data(h.descendants()).join('g').attr('transform', d => `translate(${d.y},${d.x})`);
  node.append('circle').attr('r', 4).attr('fill', d => d.data._collapsed ? '#d62728' : '#333').style('cursor', d => d.data.children.length ? 'pointer' : null)
      .on('click', (ev, d) => { if (d.data.children.length) { d.data._collapsed = !d.data._collapsed; drawTree(m); } });
  node.append('text').attr('class', 'node-label').attr('x', 7).attr('stroke', '#fff').attr('stroke-width', 3).attr('paint-order', 'stroke').attr('dy', '0.32em').attr('font-size', 11)
      .text(d => label(d.data.id) + (d.data._collapsed ? ` (+${size(d.data) - 1})` : ''))
      .on('mousemove', (ev, d) => WS.showTip(ev, WS.esc(names[d.data.id]) + (D.synset_names ? ` (${WS.esc(D.synset_names[d.data.id])})` : '')))
      .on('mouseout', WS.hideTip);
  if (st.hit !== undefined) node.filter(d => d.data.id === st.hit).select('text').attr('class', 'node-label hit').attr('font-weight', 700);
}
function clusterOptions(m) {
  const M = D.methods[m], st = state[m], G = st.graph === 'similarity' ? M.similarity_graph : M.confusion_graph;
  const sel = document.getElementById('cluster-' + m);
  const order = G.clusters.map((c, k) => k).sort((a, b) => G.clusters[b].length - G.clusters[a].length || a - b);
  sel.innerHTML = order.map(k => { const c = G.clusters[k];
    return `<option value="${k}">cluster ${k}${G.noise_cluster === k ? ' (noise)' : ''}: ${c.length} class${c.length === 1 ? '' : 'es'} — ` +
      WS.esc(c.slice(0, 4).map(i => names[i]).join(', ')) + (c.length > 4 ? ', …' : '') + '</option>'; }).join('');
  if (st.cluster === undefined) st.cluster = order[0];
  sel.value = st.cluster;
}
function select(m, graph, cluster, hit) {
  const st = state[m]; if (graph !== st.graph) { st.graph = graph; st.cluster = undefined; clusterOptions(m); }
  if (cluster !== undefined) st.cluster = cluster;
  st.tree = null; st.hit = hit; clusterOptions(m); drawTree(m);
}
Object.keys(D.methods).forEach(m => {
  state[m] = {graph: 'similarity'};
  clusterOptions(m);
  document.getElementById('cluster-' + m).addEventListener('change', e => select(m, state[m].graph, +e.target.value));
  const g = document.getElementById('graph-' + m);
  if (g) g.addEventListener('change', e => select(m, e.target.value));
  document.getElementById('step-' + m).querySelectorAll('button').forEach(b => b.addEventListener('click', () => {
    const sel = document.getElementById('cluster-' + m), i = sel.selectedIndex + (+b.dataset.step);
    if (i >= 0 && i < sel.options.length) select(m, state[m].graph, +sel.options[i].value); }));
  document.getElementById('expand-' + m).addEventListener('click', () => {
    const walk = n => { n._collapsed = false; n.children.forEach(walk); }; if (state[m].tree) walk(state[m].tree.root); drawTree(m); });
  drawTree(m);
});
WS.show = (m, graph, cluster, cls) => { select(m, graph, cluster, cls); document.getElementById('trees-' + m).scrollIntoView(); };
WS.searchers.push(q => {
  const out = [];
  names.forEach((n, i) => { if (!n.toLowerCase().includes(q) && !(D.synset_names && D.synset_names[i].toLowerCase().includes(q))) return;
    Object.keys(D.methods).forEach(m => { const c = D.methods[m].similarity_graph.clusters.findIndex(c => c.includes(i));
      out.push({label: `${n}: ${m}, cluster ${c} (${D.methods[m].similarity_graph.clusters[c].length} classes)`,
                href: `javascript:WS.show(${JSON.stringify(m)},'similarity',${c},${i})`}); }); });
  return out;
});
