// Overview: every host as a compact card (health, memory use, its guests
// as chips coloured by state), updated in place on every refresh so that
// 64 hosts and 2,000 guests stay cheap: one small element per guest, moved
// or recoloured only when it changes.
import {h, fill, fmtBytes, fmtAgo} from '../dom.js';
import {state, onChange, stateGroup, stateLabel} from '../state.js';

const GROUP_NAMES = {g: 'running', a: 'in transition', r: 'failed', x: 'stopped / disabled'};

export function overview(main) {
  const search = h('input', {type: 'search', id: 'filter', placeholder: 'Filter hosts and guests…', 'aria-label': 'filter'});
  const show = h('select', {id: 'show', 'aria-label': 'show guests'},
    h('option', {value: ''}, 'all guests'),
    h('option', {value: 'g'}, 'running'),
    h('option', {value: 'a'}, 'in transition'),
    h('option', {value: 'r'}, 'failed'),
    h('option', {value: 'x'}, 'stopped / disabled'),
    h('option', {value: 'ar'}, 'needing attention'));
  const dense = h('button#dense', {type: 'button', title: 'show guests as small squares (names on hover) or as names'}, 'Compact');
  const summary = h('div.summary');
  const grid = h('div.hosts', {id: 'hosts'});
  const unplacedChips = h('div.chips');
  const unplaced = h('div.panel.unplaced', {hidden: true}, h('h2', {style: {marginTop: 0}}, 'Not placed on a host'), unplacedChips);
  const legend = h('div.legend',
    h('span.chip.g', 'running'), h('span.chip.a', 'recovering / migrating / fencing'),
    h('span.chip.r', 'failed'), h('span.chip.x', 'stopped / disabled'));
  fill(main, h('h1', 'Overview'), h('div.toolbar', search, show, dense, legend), h('div.panel', summary), grid, unplaced);

  const cards = new Map();   // host name -> card parts
  const chips = new Map();   // guest name -> {el, key}

  function card(name) {
    let c = cards.get(name);
    if (c) return c;
    const title = h('a.name', {href: '#/hosts'}, name);
    const badge = h('span.badge');
    const mgr = h('span.badge', {hidden: true, title: 'this host runs the manager'}, 'manager');
    const meta = h('div.meta');
    const barFill = h('span');
    const bar = h('div.bar', barFill);
    const list = h('div.chips');
    const el = h('div.host', {'data-host': name}, h('div.head', title, badge, mgr), meta, bar, list);
    c = {el, badge, mgr, meta, bar, barFill, list, key: ''};
    cards.set(name, c);
    return c;
  }

  function render() {
    const st = state.status;
    if (!st) return;
    const hosts = st.hosts || [];
    const now = Date.now();
    // Memory committed per host (guests that should run there).
    const used = new Map();
    const count = new Map();
    for (const g of state.guests) {
      if (!g.node) continue;
      count.set(g.node, (count.get(g.node) || 0) + 1);
      if (g.state === 'started' || g.running) used.set(g.node, (used.get(g.node) || 0) + (g.memory || 0));
    }
    const seen = new Set();
    let prev = null;
    for (const host of hosts) {
      seen.add(host.name);
      const c = card(host.name);
      // The manager's word wins: a host in maintenance, or failed and being
      // fenced, says so.
      const health = host.unreachable ? 'unreachable' : host.maintenance ? 'maintenance' : host.ha === 'failed' || host.ha === 'fenced' ? host.ha : (host.state || 'unknown');
      // Up or down is the host's own state: a host in maintenance is up.
      const up = host.state === 'online' && !host.unreachable;
      const mem = (host.facts && host.facts.memory) || 0;
      const u = used.get(host.name) || 0;
      const key = [health, up, host.manager, mem, u, count.get(host.name) || 0, host.facts && host.facts.cpus, fmtAgo(host.since, now)].join('|');
      if (key !== c.key) {
        c.key = key;
        c.el.className = 'host ' + health;
        c.badge.className = 'badge s-' + health;
        c.badge.textContent = health;
        c.mgr.hidden = !host.manager;
        const pct = mem ? Math.min(100, Math.round((u / mem) * 100)) : 0;
        c.barFill.style.width = pct + '%';
        c.bar.className = 'bar' + (pct >= 95 ? ' full' : pct >= 80 ? ' high' : '');
        c.bar.title = `memory: ${fmtBytes(u)} of ${fmtBytes(mem)} committed to guests (${pct}%)`;
        fill(c.meta,
          h('span', `${count.get(host.name) || 0} guests`),
          h('span', `mem ${fmtBytes(u)} / ${mem ? fmtBytes(mem) : '?'}`),
          host.facts ? h('span', `${host.facts.cpus} CPUs`) : null,
          host.since ? h('span.updown', `${up ? 'up' : 'down'} ${fmtAgo(host.since, now)}`) : null);
      }
      // Keep the cards in the status order (by name).
      if (prev ? prev.nextSibling !== c.el : grid.firstChild !== c.el) {
        if (prev) prev.after(c.el); else grid.prepend(c.el);
      }
      prev = c.el;
    }
    for (const [name, c] of cards) {
      if (!seen.has(name)) { c.el.remove(); cards.delete(name); }
    }

    // Guests: create, recolour or move only what changed.
    const alive = new Set();
    const byGroup = {g: 0, a: 0, r: 0, x: 0};
    let anyUnplaced = false;
    for (const g of state.guests) {
      alive.add(g.name);
      const grp = stateGroup(g);
      byGroup[grp]++;
      const home = g.node && cards.has(g.node) ? cards.get(g.node).list : unplacedChips;
      if (home === unplacedChips) anyUnplaced = true;
      let ch = chips.get(g.name);
      if (!ch) {
        ch = {el: h('a.chip', {href: '#/guest/' + encodeURIComponent(g.name), 'data-guest': g.name}, g.name), key: ''};
        chips.set(g.name, ch);
      }
      const key = grp + '|' + stateLabel(g) + '|' + (g.node || '');
      if (ch.key !== key) {
        ch.key = key;
        ch.el.className = 'chip ' + grp;
        ch.el.dataset.group = grp;
        ch.el.title = `${g.name}: ${stateLabel(g)}${g.node ? ' on ' + g.node : ''}`;
      }
      if (ch.el.parentNode !== home) insertSorted(home, ch.el);
    }
    for (const [name, ch] of chips) {
      if (!alive.has(name)) { ch.el.remove(); chips.delete(name); }
    }
    unplaced.hidden = !anyUnplaced;

    const online = hosts.filter((x) => x.state === 'online').length;
    fill(summary,
      h('span', h('span.n', String(online)), `of ${hosts.length} hosts online`),
      h('span', h('span.n', String(state.guests.length)), 'guests:'),
      ...Object.entries(byGroup).map(([grp, n]) => h('span', h('span.chip.' + grp, String(n)), ' ', GROUP_NAMES[grp])),
      st.manager ? h('span.muted', `manager ${st.manager}`) : h('span.badge.bad', 'no manager'));
    if (denseOn === null && state.guests.length) setDense(state.guests.length > 400);
    applyFilter();
  }

  function applyFilter() {
    const q = search.value.trim().toLowerCase();
    const groups = show.value;
    for (const [name, ch] of chips) {
      const hide = (q && !name.toLowerCase().includes(q) && !hostMatches(ch.el, q)) || (groups && !groups.includes(ch.el.dataset.group));
      ch.el.classList.toggle('hide', !!hide);
    }
    for (const [name, c] of cards) {
      let show = true;
      if (q || groups) {
        const hostHit = q && name.toLowerCase().includes(q);
        show = hostHit || c.list.querySelector('.chip:not(.hide)') !== null;
      }
      c.el.classList.toggle('hide', !show);
    }
  }

  function hostMatches(chipEl, q) {
    const card = chipEl.closest('.host');
    return card && card.dataset.host.toLowerCase().includes(q);
  }

  // Compact chips by default once names would make the page long.
  let denseOn = null;
  function setDense(on) {
    denseOn = on;
    grid.classList.toggle('dense', on);
    dense.classList.toggle('active', on);
    dense.textContent = on ? 'Show names' : 'Compact';
  }
  dense.addEventListener('click', () => setDense(!denseOn));
  search.addEventListener('input', applyFilter);
  show.addEventListener('change', applyFilter);
  render();
  const off = onChange((what) => { if (what === 'status') render(); });
  return {unmount: off};
}

// insertSorted puts a chip among its siblings in name order.
function insertSorted(list, el) {
  const name = el.dataset.guest;
  for (const c of list.children) {
    if (c.dataset.guest > name) { list.insertBefore(el, c); return; }
  }
  list.append(el);
}
