// Haven web UI: login, header, router, and keeping the cluster state fresh
// from the event stream (debounced) with a slow poll as a fallback.
import {h, fill} from './dom.js';
import * as api from './api.js';
import {state, can, changed, addEvent} from './state.js';
import {overview} from './views/overview.js';
import {guestList, guestPage} from './views/guests.js';
import {domains} from './views/domains.js';
import {hosts} from './views/hosts.js';
import {events} from './views/events.js';
import {incidents} from './views/incidents.js';
import {newGuest} from './views/create.js';
import {join} from './views/join.js';
import {users} from './views/users.js';

const POLL_LIVE_MS = 30000;   // poll while the event stream is up
const POLL_DEAD_MS = 5000;    // poll while it is down
const REFRESH_DEBOUNCE_MS = 250;

const routes = [
  [/^#?\/?$/, overview, 'overview'],
  [/^#\/guests$/, guestList, 'guests'],
  [/^#\/guest\/(.+)$/, guestPage, 'guests'],
  [/^#\/domains$/, domains, 'domains'],
  [/^#\/hosts$/, hosts, 'hosts'],
  [/^#\/events$/, events, 'events'],
  [/^#\/incidents$/, incidents, 'incidents'],
  [/^#\/new$/, newGuest, 'new'],
  [/^#\/join$/, join, 'join'],
  [/^#\/users$/, users, 'users'],
];

const $ = (id) => document.getElementById(id);
let current = null;   // {view, unmount}
let es = null;        // EventSource
let pollTimer = null;

export function toast(msg, bad) {
  const t = h('div.toast' + (bad ? '.bad' : ''), msg);
  const box = $('toasts');
  box.append(t);
  while (box.children.length > 3) box.firstChild.remove();
  setTimeout(() => t.remove(), bad ? 8000 : 4000);
}

// refresh reloads the status (hosts and guests) and tells the views.
export async function refresh() {
  try {
    const st = await api.get('/api/v1/status');
    state.status = st;
    const rows = (st.guests && st.guests.guests) || [];
    state.guests = rows;
    state.guestByName = new Map(rows.map((g) => [g.name, g]));
    state.lastRefresh = Date.now();
    hostDown(false);
    renderHeader();
    changed('status');
  } catch (e) {
    if (e.status === 0) hostDown(true);
    else if (e.status !== 401) toast('Refresh failed: ' + e.message, true);
  }
}

// hostDown shows or hides the banner that says the host serving this page
// does not answer, with links to the cluster's other hosts (each serves
// the same UI; log in there).
function hostDown(down) {
  const box = $('hostdown');
  if (!down) { box.hidden = true; return; }
  const st = state.status || {};
  const me = st.node || location.host;
  const others = (st.hosts || []).filter((x) => x.name !== st.node && x.api_addr && x.state === 'online' && !x.unreachable);
  fill(box,
    h('b', `The host serving this page (${me}) does not answer.`), ' ',
    h('span', 'It may be down; the cluster goes on without it. '),
    others.length
      ? h('span', 'Open the UI on another host: ', ...others.flatMap((x, i) => [i ? ', ' : '', h('a', {href: x.api_addr + '/', 'data-host': x.name}, `${x.name} (${x.api_addr})`)]))
      : h('span', 'No other host is known to be up.'),
    h('span.muted', ' This page retries every 5 s.'));
  box.hidden = false;
}
// refreshSoon coalesces a burst of events into few refreshes: one refresh
// REFRESH_DEBOUNCE_MS after the first event, and one more after it if events
// arrived while it was being fetched. A steady stream of events thus
// refreshes about every REFRESH_DEBOUNCE_MS, never starves.
let phase = 'idle'; // idle, waiting, fetching
let again = false;
function refreshSoon() {
  if (phase === 'waiting') return;
  if (phase === 'fetching') { again = true; return; }
  phase = 'waiting';
  setTimeout(async () => {
    phase = 'fetching';
    await refresh();
    phase = 'idle';
    if (again) { again = false; refreshSoon(); }
  }, REFRESH_DEBOUNCE_MS);
}

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(async () => {
    await refresh();
    schedulePoll();
  }, state.live ? POLL_LIVE_MS : POLL_DEAD_MS);
}

function setLive(on) {
  if (state.live === on) return;
  state.live = on;
  const el = $('live');
  el.className = 'live ' + (on ? 'on' : 'off');
  el.title = on ? 'live: following the event stream' : 'event stream down: polling every 5 s';
  schedulePoll();
}

async function loadEvents() {
  try {
    const evs = await api.get('/api/v1/events?n=200');
    state.events = [];
    for (const e of evs || []) addEvent(e);
    changed('events');
  } catch (e) {
    if (e.status !== 401) toast('Loading events failed: ' + e.message, true);
  }
}

function connectStream() {
  if (es) es.close();
  // changes=1: also the changes of hosts' reports about guests (health
  // checks that pass or fail), which are not in the log.
  es = new EventSource('/api/v1/events/stream?changes=1');
  es.onopen = () => setLive(true);
  es.onerror = () => {
    setLive(false);
    // The browser reconnects by itself unless the answer was final (401).
    if (es.readyState === EventSource.CLOSED) {
      setTimeout(async () => {
        try {
          await api.get('/api/v1/whoami');
          connectStream();
        } catch { /* the 401 handler shows the login */ }
      }, 3000);
    }
  };
  const onEvent = (m) => {
    let e;
    try { e = JSON.parse(m.data); } catch { return; }
    if (addEvent(e)) changed({event: e});
    refreshSoon();
  };
  es.onmessage = onEvent;
  es.addEventListener('event', onEvent);
  es.addEventListener('change', (m) => {
    let c;
    try { c = JSON.parse(m.data); } catch { return; }
    changed({change: c});
    refreshSoon();
  });
}

function renderHeader() {
  const st = state.status;
  if (st) {
    $('cluster').textContent = `${st.cluster} · via ${st.node}`;
    const q = st.quorum || {};
    const qb = $('quorum');
    // Enough voters answer but the store did not: it is electing a
    // leader (a second or two after its leader's host died).
    const electing = !q.ok && q.needed > 0 && q.online >= q.needed;
    qb.textContent = q.ok ? `quorum ${q.online}/${q.voters}` : electing ? `NO STORE LEADER ${q.online}/${q.voters}` : `NO QUORUM ${q.online}/${q.voters}`;
    qb.className = 'badge ' + (q.ok ? 'ok' : 'bad');
    qb.title = q.ok ? 'the store accepts writes' : electing ? 'the store did not answer: its voters answer but have no leader yet (an election, usually a second or two)'
      : `the store needs ${q.needed} of ${q.voters} members online to accept changes`;
    $('manager').textContent = !st.manager ? 'manager: none (election in progress)'
      : st.manager_unreachable ? `manager: ${st.manager} UNREACHABLE (a new one is elected when its lease expires)` : `manager: ${st.manager}`;
    // The fence configuration kept in the clear for hosts of an older
    // release (docs/security.md).
    const ff = st.fence_form;
    const ub = $('unsealed');
    ub.hidden = !(ff && ff.clear);
    if (!ub.hidden) {
      const old = (ff.old_hosts || []).join(', ');
      ub.textContent = 'FENCE SECRETS UNSEALED';
      ub.title = `fence passwords are stored in the clear while ${old} may run a release that cannot open sealed secrets: upgrade or remove ${old}`;
    }
  }
  if (state.me) $('who').textContent = `${state.me.user} (${state.me.role})`;
  for (const a of document.querySelectorAll('#nav a[data-role]')) a.hidden = !can(a.dataset.role);
}

function route() {
  const hash = location.hash || '#/';
  if (current && current.unmount) current.unmount();
  current = null;
  const main = $('view');
  main.replaceChildren();
  for (const [re, view, nav] of routes) {
    const m = re.exec(hash);
    if (!m) continue;
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === nav);
    current = view(main, ...m.slice(1).map(decodeURIComponent)) || {};
    return;
  }
  fill(main, h('div.panel', 'No such page. ', h('a', {href: '#/'}, 'Back to the overview')));
}

function showLogin(message) {
  if (es) { es.close(); es = null; }
  clearTimeout(pollTimer);
  state.me = null;
  if (current && current.unmount) current.unmount();
  current = null;
  $('top').hidden = true;
  $('nav').hidden = true;
  const err = h('div.form-error', {role: 'alert'}, message || '');
  const user = h('input', {name: 'user', autocomplete: 'username', placeholder: 'user name', required: true});
  const pass = h('input', {name: 'password', type: 'password', autocomplete: 'current-password', placeholder: 'password'});
  const token = h('input', {name: 'token', autocomplete: 'off', placeholder: 'hvt.… API token', hidden: true});
  let useToken = false;
  const toggle = h('button.link', {type: 'button'}, 'Log in with an API token instead');
  toggle.addEventListener('click', () => {
    useToken = !useToken;
    user.hidden = pass.hidden = useToken;
    user.required = !useToken;
    token.hidden = !useToken;
    token.required = useToken;
    toggle.textContent = useToken ? 'Log in with a user name instead' : 'Log in with an API token instead';
  });
  const submit = h('button.primary', {type: 'submit'}, 'Log in');
  const form = h('form', {id: 'login'}, user, pass, token, submit, toggle, err);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    err.textContent = '';
    try {
      const body = useToken ? {token: token.value.trim()} : {user: user.value.trim(), password: pass.value};
      const me = await api.post('/api/v1/login', body);
      await start(me);
    } catch (e) {
      err.textContent = e.message;
      pass.value = '';
    } finally {
      submit.disabled = false;
    }
  });
  fill($('view'), h('div.login.panel', h('h1', 'Haven'), h('p.muted', 'Log in to manage this cluster.'), form));
  user.focus();
}

async function start(me) {
  state.me = me;
  api.setCSRF(me.csrf);
  $('top').hidden = false;
  $('nav').hidden = false;
  renderHeader();
  route();
  await Promise.all([refresh(), loadEvents()]);
  connectStream();
  schedulePoll();
}

async function boot() {
  api.setUnauthorizedHandler((e) => {
    if (state.me) showLogin('Your session ended (' + e.message + '). Log in again.');
  });
  window.addEventListener('hashchange', () => { if (state.me) route(); });
  $('logout').addEventListener('click', async () => {
    try { await api.post('/api/v1/logout'); } catch { /* ended anyway */ }
    showLogin('Logged out.');
  });
  try {
    const me = await api.get('/api/v1/whoami');
    if (me.via !== 'session') throw new Error('not a session');
    await start(me);
  } catch {
    showLogin();
  }
}

boot();
