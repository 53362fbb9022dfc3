// Failovers: the event log read as incidents (the same grouping as
// `haven events --story`): a host failing, its fence, its guests running
// again, each step timed from the fault.
import {h, fill, fmtTime} from '../dom.js';
import {state, onChange} from '../state.js';

const STORY_MAX_MS = 15 * 60 * 1000;
// A host's fault: found dead by its peers (before its lease ends), failed,
// or back with a new boot.
const reNodeFailed = /^(?:node (\S+) (?:failed|reports a new boot)|(\S+) is dead: )/;
const reStart = /^start (\S+) on (\S+)/;
const reRunning = /^(\S+) is running on (\S+)/;
// The fence's own event, or the manager's (either may be missing).
const reFenced = /^(?:fenced (\S+):|node (\S+) is fenced$)/;

// stories groups events (oldest first) into incidents.
export function stories(evs) {
  const out = [];
  let open = [];
  for (const e of evs) {
    const at = Date.parse(e.at);
    const m = reNodeFailed.exec(e.msg);
    if (m) {
      const node = m[1] || m[2];
      // Found dead, then failed by the manager: one fault.
      const same = open.find((s) => s.node === node && at - s.start <= STORY_MAX_MS);
      if (same) { same.steps.push(e); continue; }
      const s = {node, start: at, steps: [e], fenced: 0, recovered: new Map(), pending: new Set()};
      out.push(s);
      open.push(s);
      continue;
    }
    open = open.filter((s) => {
      if (at - s.start > STORY_MAX_MS) return false;
      if (take(s, e, at)) s.steps.push(e);
      return !(s.fenced && s.recovered.size && !s.pending.size);
    });
  }
  return out;
}

function take(s, e, at) {
  const f = reFenced.exec(e.msg);
  if (f && (f[1] || f[2]) === s.node) { if (!s.fenced) s.fenced = at; return true; }
  const st = reStart.exec(e.msg);
  if (st && st[2] !== s.node) { s.pending.add(st[1]); return true; }
  const r = reRunning.exec(e.msg);
  if (r && s.pending.has(r[1])) { s.pending.delete(r[1]); s.recovered.set(r[1], at); return true; }
  for (const g of s.pending) if (e.guest === g || e.msg.startsWith(g + ' ')) return true;
  const padded = ' ' + e.msg + ' ';
  return e.node === s.node || [' ', ':', ';', ','].some((c) => padded.includes(' ' + s.node + c));
}

const secs = (ms) => (ms / 1000).toFixed(1) + ' s';

export function incidents(main) {
  const list = h('div#incidents');
  fill(main, h('h1', 'Failovers'),
    h('p.muted', 'Each incident from the event log: a host failing, its fence, and its guests running again, with the time of each step since the fault. The CLI shows the same with ', h('code', 'haven events --story'), '.'),
    list);

  function render() {
    const ss = stories(state.events).reverse();
    if (!ss.length) {
      fill(list, h('div.panel.muted', 'No failover in the recent events.'));
      return;
    }
    fill(list, ...ss.map((s) => {
      const last = Math.max(0, ...s.recovered.values());
      const sum = [];
      if (s.fenced) sum.push(`fenced after ${secs(s.fenced - s.start)}`);
      if (s.recovered.size) sum.push(`${s.recovered.size} guests running again after ${secs(last - s.start)}`);
      if (s.pending.size) sum.push(`not seen running yet: ${[...s.pending].join(', ')}`);
      return h('div.panel.incident', {'data-node': s.node},
        h('h2', `Host ${s.node} failed at ${fmtTime(new Date(s.start).toISOString())}`),
        h('ol.timeline', ...s.steps.map((e) => h('li',
          h('span.t.mono', '+' + secs(Date.parse(e.at) - s.start)), ' ',
          h('span.k-' + e.kind, e.kind), ' ', e.msg))),
        sum.length ? h('p.summary', sum.join('; ')) : null);
    }));
  }
  render();
  return {unmount: onChange((w) => { if (w === 'events' || (w && w.event)) render(); })};
}
