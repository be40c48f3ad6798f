const D = WS.data, cards = Array.from(document.querySelectorAll('.card[data-layer]'));
const fmt = w => Math.abs(w) >= 0.01 ? w.toFixed(2) : w.toPrecision(1);
const nSides = D.sides.length;
WS.searchers.push(q => {  // every concept holding q, each with all the directions it explains (see search_index)
  const out = [];
  D.concepts.forEach((c, k) => { if (!c.toLowerCase().includes(q)) return;
    const h = D.hits[k]; let code = 0;
    for (let i = 0; i < h.length; i += 2) { code += h[i];
      const sign = code % 2 ? '+' : '-', rest = Math.floor(code / 2), index = rest % D.n_index,
            hs = Math.floor(rest / D.n_index), side = D.sides[hs % nSides], [l, hd] = D.heads[Math.floor(hs / nSides)];
      out.push({label: `${c} (${fmt(h[i + 1] / 1000)}): layer ${l}, head ${hd}, ${side} ${index}${sign}`,
                href: `#head-${l}-${hd}`}); } });
  return out;
});
const sortSel = document.getElementById('ws-sort'), themeSel = document.getElementById('ws-theme'),
      layerSel = document.getElementById('ws-layer'), count = document.getElementById('ws-count');
function apply() {
  const key = sortSel.value, box = document.querySelector('.cards');
  const order = cards.slice();
  if (key === 'theme') order.sort((a, b) => a.dataset.theme.localeCompare(b.dataset.theme));
  if (key === 'sigma' || key === 'fidelity') order.sort((a, b) => b.dataset[key] - a.dataset[key]);
  let shown = 0;
  order.forEach(c => { const ok = (!themeSel.value || c.dataset.theme === themeSel.value) &&
      (!layerSel.value || c.dataset.layer === layerSel.value);
    c.style.display = ok ? '' : 'none'; shown += ok; box.appendChild(c); });
  count.textContent = `${shown} of ${cards.length} heads shown`;
}
[sortSel, themeSel, layerSel].forEach(s => s.addEventListener('change', apply));
apply();
