// The cluster as the UI last saw it, and who is looking. Views read it and
// re-render on change; app.js keeps it fresh (event stream + slow poll).

export const state = {
  me: null,          // whoami: {user, role, via, csrf}
  status: null,      // GET /api/v1/status
  guests: [],        // GuestRow[] from the status
  guestByName: new Map(),
  events: [],        // recent events, oldest first (bounded)
  live: false,       // the event stream is connected
  lastRefresh: 0,
};

const rank = {viewer: 1, operator: 2, admin: 3};

// can reports whether the logged-in role is at least role.
export function can(role) {
  return !!state.me && (rank[state.me.role] || 0) >= (rank[role] || 0);
}

const listeners = new Set();
export function onChange(fn) { listeners.add(fn); return () => listeners.delete(fn); }
export function changed(what) { for (const fn of listeners) fn(what); }

// The colour group of a guest state: g green, a amber, r red, x grey.
export function stateGroup(row) {
  if (!row) return 'x';
  const op = row.op && row.op.kind;
  switch (row.state) {
    case 'started':
      if (op === 'migrate' || op === 'start' || op === 'stop') return 'a';
      return row.running === false ? 'a' : 'g';
    case 'recovering': case 'fencing': case 'frozen': return 'a';
    // Not taken in by the manager yet: amber only if it should run.
    case 'pending': return row.desired === 'started' ? 'a' : 'x';
    case 'failed': return 'r';
    default: return 'x';
  }
}

// stateLabel is the word shown for a guest's state.
export function stateLabel(row) {
  if (!row) return 'unknown';
  if (row.op && row.op.kind === 'migrate') return 'migrating';
  if (row.state === 'started') {
    if (row.op && row.op.kind === 'start') return 'starting';
    if (row.op && row.op.kind === 'stop') return 'stopping';
    return row.running === false ? 'starting' : 'running';
  }
  return row.state || 'unknown';
}

export const EVENT_KEEP = 500;

export function addEvent(e) {
  const evs = state.events;
  if (e.seq && evs.length && evs[evs.length - 1].seq >= e.seq && evs.some((x) => x.seq === e.seq)) return false;
  evs.push(e);
  if (evs.length > EVENT_KEEP) evs.splice(0, evs.length - EVENT_KEEP);
  return true;
}
