// The event and audit log, updating live from the event stream.
import {h, fill, fmtTime} from '../dom.js';
import {state, onChange} from '../state.js';

const SHOW_MAX = 300;

export function events(main) {
  const search = h('input', {type: 'search', placeholder: 'Filter by text, guest, host or who…', 'aria-label': 'filter'});
  const kind = h('select', {'aria-label': 'kind'}, ['', 'manager', 'node', 'guest', 'fence', 'operator'].map((k) => h('option', {value: k}, k || 'all kinds')));
  const live = h('span.muted');
  const body = h('tbody');
  fill(main, h('h1', 'Events'), h('div.toolbar', search, kind, live),
    h('div.tablewrap', h('table.events#event-table',
      h('thead', h('tr', h('th', 'When'), h('th', 'Kind'), h('th', 'Host'), h('th', 'Guest'), h('th', 'What'), h('th', 'Who'))), body)));

  function matches(e) {
    const q = search.value.trim().toLowerCase();
    if (kind.value && e.kind !== kind.value) return false;
    return !q || [e.msg, e.guest, e.node, e.who].some((v) => v && v.toLowerCase().includes(q));
  }

  function line(e, fresh) {
    return h('tr' + (fresh ? '.fresh' : ''), {'data-seq': e.seq},
      h('td.at', fmtTime(e.at)), h('td.kind', h('span.k-' + e.kind, e.kind)),
      h('td', e.node || ''), h('td', e.guest ? h('a', {href: '#/guest/' + encodeURIComponent(e.guest)}, e.guest) : ''),
      h('td', e.msg), h('td.muted', e.who || ''));
  }

  function render() {
    const rows = state.events.filter(matches).slice(-SHOW_MAX).reverse();
    body.replaceChildren(...rows.map((e) => line(e, false)));
    if (!rows.length) body.append(h('tr', h('td.empty', {colspan: 6}, 'No events.')));
    live.textContent = state.live ? 'live' : 'reconnecting…';
  }

  search.addEventListener('input', render);
  kind.addEventListener('change', render);
  render();
  return {unmount: onChange((w) => {
    if (w === 'events') render();
    else if (w && w.event) {
      if (!matches(w.event)) return;
      const empty = body.querySelector('td.empty');
      if (empty) empty.parentNode.remove();
      body.prepend(line(w.event, true));
      while (body.children.length > SHOW_MAX) body.lastChild.remove();
    } else if (w === 'status') {
      live.textContent = state.live ? 'live' : 'reconnecting…';
    }
  })};
}
