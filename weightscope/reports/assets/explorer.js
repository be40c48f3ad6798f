(function(){
const WS = window.WS = window.WS || {};
const el = document.getElementById('ws-data');
WS.data = el ? JSON.parse(el.textContent) : null;
WS.searchers = WS.searchers || [];
WS.esc = s => String(s).replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
WS.tip = document.createElement('div'); WS.tip.className = 'tip'; document.body.appendChild(WS.tip);
WS.showTip = (ev, html) => { WS.tip.innerHTML = html; WS.tip.style.display = 'block';
  WS.tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - 300) + 'px'; WS.tip.style.top = (ev.clientY + 12) + 'px'; };
WS.hideTip = () => { WS.tip.style.display = 'none'; };
// sticky index of the page's sections and the search box
const nav = document.getElementById('ws-nav');
document.querySelectorAll('h2[id]').forEach(h => { const a = document.createElement('a'); a.href = '#' + h.id;
  a.textContent = h.dataset.short || h.textContent; nav.appendChild(a); });
const box = document.getElementById('ws-search'), res = document.getElementById('ws-results');
// rows of every table with an id are searchable too (each gets an anchor)
document.querySelectorAll('table[id] tbody tr').forEach((r, i) => { if (!r.id) r.id = r.closest('table').id + '-row-' + i; });
function defaultSearch(q) {  // elements marked data-search, and table rows, whose text holds the query
  const out = [];
  document.querySelectorAll('[data-search]').forEach(e => { if (e.textContent.toLowerCase().includes(q))
    out.push({label: e.dataset.search + ': ' + e.textContent.trim().slice(0, 120), href: '#' + e.id}); });
  document.querySelectorAll('table[id] tbody tr').forEach(r => { if (r.textContent.toLowerCase().includes(q))
    out.push({label: r.closest('table').dataset.name + ': ' +
      Array.from(r.cells).map(c => c.textContent.trim()).join(' | ').slice(0, 160), href: '#' + r.id}); });
  return out;
}
box.addEventListener('input', () => {
  const q = box.value.trim().toLowerCase();
  if (!q) { res.style.display = 'none'; return; }
  let hits = [];
  for (const f of WS.searchers.concat([defaultSearch])) hits = hits.concat(f(q));
  const shown = hits.slice(0, 300);
  res.innerHTML = `<div class="muted" style="padding:.2rem .5rem">${hits.length} match${hits.length === 1 ? '' : 'es'}` +
    (hits.length > shown.length ? `, first ${shown.length} shown` : '') + '</div>' +
    shown.map(h => `<a href="${h.href}" class="ws-hit">${WS.esc(h.label)}</a>`).join('');
  res.style.display = 'block';
});
document.addEventListener('click', e => { if (!res.contains(e.target) && e.target !== box) res.style.display = 'none'; });
// sortable tables: click a header; numbers sort as numbers, n/a and blanks last
WS.cellKey = td => { const t = td.textContent.trim(); const v = parseFloat(t.replace('%', ''));
  return /^[-+]?\d/.test(t) && !isNaN(v) ? v : t.toLowerCase(); };
document.querySelectorAll('table.sortable').forEach(tab => {
  tab.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
    const body = tab.tBodies[0], rows = Array.from(body.rows), dir = th.dataset.dir === 'desc' ? 1 : -1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    rows.sort((a, b) => { const x = WS.cellKey(a.cells[i]), y = WS.cellKey(b.cells[i]);
      if (typeof x !== typeof y) return typeof x === 'number' ? -1 : 1;
      return x < y ? -dir : x > y ? dir : 0; });
    rows.forEach(r => body.appendChild(r));
  }));
});
document.querySelectorAll('input[data-filter]').forEach(inp => inp.addEventListener('input', () => {
  const q = inp.value.trim().toLowerCase();
  document.querySelectorAll('#' + inp.dataset.filter + ' tbody tr').forEach(r =>
    r.style.display = !q || r.textContent.toLowerCase().includes(q) ? '' : 'none');
}));
})();
