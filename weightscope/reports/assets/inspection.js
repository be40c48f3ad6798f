const D = WS.data, cards = Array.from(document.querySelectorAll('.card[data-layer]'));
const fmt = w => Math.abs(w) >= 0.01 ? w.toFixed(2) : w.toPrecision(2);
WS.searchers.push(q => {
  const out = [];
  D.concepts.forEach((c, k) => { if (!c.toLowerCase().includes(q)) return;
    const h = D.hits[k];
    for (let i = 0; i < h.length; i += 5) { const [l, hd] = D.heads[h[i]];
      out.push({label: `${c} (${fmt(h[i + 4])}): layer ${l}, head ${hd}, ${D.sides[h[i + 1]]} ${h[i + 2]}${h[i + 3] > 0 ? '+' : '-'}`,
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
