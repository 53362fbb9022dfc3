// The guest list (filterable table) and the guest page (definition, where
// it runs, history, actions, live migration progress).
import {h, fill, fmtBytes, fmtTime, fmtAgo} from '../dom.js';
import * as api from '../api.js';
import {state, can, onChange, stateGroup, stateLabel} from '../state.js';
import {toast, refresh} from '../app.js';
import {row, showError, clearErrors} from './form.js';
import {openConsole, openDisplay} from './console.js';

const LIST_MAX = 500; // rows drawn at once; the filter narrows the rest

export function guestList(main) {
  const search = h('input', {type: 'search', placeholder: 'Filter by name, host, domain or state…', 'aria-label': 'filter'});
  const tagPick = h('select#tag-filter', {'aria-label': 'tag'});
  const count = h('span.muted');
  const body = h('tbody');
  const selected = new Set(); // names ticked for a bulk action
  const ops = can('operator');
  const all = ops ? h('input#select-all', {type: 'checkbox', 'aria-label': 'select every guest shown'}) : null;
  const bulk = h('div.toolbar#bulk', {hidden: true});
  const table = h('table#guest-table',
    h('thead', h('tr', ops ? h('th', all) : null, h('th', 'Guest'), h('th', 'State'), h('th', 'Host'), h('th', 'Domain'), h('th', 'Desired'), h('th.num', 'Memory'), h('th.num', 'vCPUs'), h('th', 'Tags'))),
    body);
  fill(main, h('h1', 'Guests', ops ? h('a.button', {href: '#/new'}, 'New guest') : null),
    h('div.toolbar', search, tagPick, count), bulk, h('div.tablewrap', table));
  let shownNames = [];

  function drawTags() {
    const tags = [...new Set(state.guests.flatMap((g) => g.tags || []))].sort();
    const cur = tagPick.value;
    tagPick.replaceChildren(h('option', {value: ''}, 'any tag'), ...tags.map((t) => h('option', {value: t}, t)));
    tagPick.value = tags.includes(cur) ? cur : '';
    tagPick.hidden = !tags.length;
  }

  function render() {
    drawTags();
    const q = search.value.trim().toLowerCase();
    const tag = tagPick.value;
    const rows = state.guests.filter((g) => (!tag || (g.tags || []).includes(tag)) && (!q ||
      [g.name, g.node, g.domain, stateLabel(g), ...(g.tags || [])].some((v) => v && v.toLowerCase().includes(q))));
    const shown = rows.slice(0, LIST_MAX);
    shownNames = shown.map((g) => g.name);
    for (const n of [...selected]) if (!shownNames.includes(n)) selected.delete(n);
    body.replaceChildren(...shown.map((g) => {
      let tick = null;
      if (ops) {
        tick = h('input', {type: 'checkbox', 'aria-label': 'select ' + g.name, 'data-select': g.name, checked: selected.has(g.name)});
        tick.addEventListener('change', () => { if (tick.checked) selected.add(g.name); else selected.delete(g.name); drawBulk(); });
      }
      return h('tr', {'data-guest': g.name},
        ops ? h('td', tick) : null,
        h('td', h('a', {href: '#/guest/' + encodeURIComponent(g.name)}, g.name)),
        h('td', h('span.badge.s-' + stateLabel(g), stateLabel(g)), g.wait ? h('div.muted.wait', {title: g.wait}, g.wait) : null),
        h('td', g.node || h('span.muted', '—')),
        h('td', g.domain || h('span.muted', 'any host')),
        h('td', g.desired),
        h('td.num', fmtBytes(g.memory)),
        h('td.num', String(g.vcpus || '')),
        h('td.tags', (g.tags || []).map((t) => h('span.badge.tag', t))));
    }));
    if (!rows.length) body.append(h('tr', h('td.empty', {colspan: ops ? 9 : 8}, state.guests.length ? 'No guest matches the filter.' : 'No guests yet.')));
    count.textContent = rows.length > LIST_MAX ? `showing ${LIST_MAX} of ${rows.length}; narrow the filter` : `${rows.length} of ${state.guests.length}`;
    drawBulk();
  }

  // Bulk actions on the ticked guests: each command is sent on its own;
  // the outcome of each is toasted.
  function drawBulk() {
    if (!ops) return;
    if (all) all.checked = shownNames.length > 0 && shownNames.every((n) => selected.has(n));
    bulk.hidden = !selected.size;
    if (!selected.size) { bulk.replaceChildren(); return; }
    const hosts = ((state.status && state.status.hosts) || []).filter((x) => x.state === 'online').map((x) => x.name);
    const pick = h('select#bulk-target', {'aria-label': 'target host'}, hosts.map((t) => h('option', {value: t}, t)));
    const btn = (label, fn) => {
      const b = h('button', {type: 'button', 'data-bulk': label.toLowerCase()}, label);
      b.addEventListener('click', fn);
      return b;
    };
    bulk.replaceChildren(h('span', `${selected.size} selected:`),
      btn('Start', () => run('start')), btn('Stop', () => run('stop')),
      hosts.length ? [btn('Migrate', () => run('migrate', pick.value)), 'to', pick] : null);
  }

  async function run(kind, node) {
    const names = [...selected].sort();
    const res = await Promise.allSettled(names.map((n) => api.post(`/api/v1/guests/${api.enc(n)}/${kind}`, node ? {node} : {})));
    const bad = res.map((r, i) => r.status === 'rejected' ? `${names[i]}: ${r.reason.message}` : null).filter(Boolean);
    if (bad.length) toast(`${kind}: ${bad.join('; ')}`, true);
    else toast(`${kind} sent for ${names.join(', ')}`);
    selected.clear();
    refresh();
    render();
  }

  if (all) all.addEventListener('change', () => { for (const n of shownNames) { if (all.checked) selected.add(n); else selected.delete(n); } render(); });
  search.addEventListener('input', render);
  tagPick.addEventListener('change', render);
  render();
  return {unmount: onChange((w) => { if (w === 'status') render(); })};
}

export function guestPage(main, name) {
  let info = null;
  let busy = false;
  let timer = null;
  let gone = false;
  let target = '';  // the host picked for migrate/relocate, kept across reloads
  const title = h('span', name);
  const badge = h('span.badge');
  const where = h('div');
  const actions = h('div.actions');
  const progress = h('div', {hidden: true});
  const def = h('div');
  const editor = h('div');
  let editing = false;
  const hist = h('tbody');
  // The serial console, drawn once and kept across reloads of the page.
  const consoleBox = h('div.panel#console', {hidden: true});
  let closeConsole = null;
  // The graphical display (noVNC), likewise.
  const displayBox = h('div.panel#display', {hidden: true});
  let closeDisplay = null;
  const toggleDisplay = () => {
    if (closeDisplay) {
      closeDisplay();
      closeDisplay = null;
      displayBox.hidden = true;
      displayBox.replaceChildren();
    } else {
      displayBox.hidden = false;
      closeDisplay = openDisplay(displayBox, name);
    }
    render();
  };
  const toggleConsole = () => {
    if (closeConsole) {
      closeConsole();
      closeConsole = null;
      consoleBox.hidden = true;
      consoleBox.replaceChildren();
    } else {
      consoleBox.hidden = false;
      closeConsole = openConsole(consoleBox, name);
    }
    render();
  };
  fill(main,
    h('h1', h('a', {href: '#/guests'}, 'Guests'), '›', title, badge),
    h('div.panel', where, progress, actions),
    consoleBox,
    displayBox,
    editor,
    h('div.cols',
      h('div.panel', h('h2', {style: {marginTop: 0}}, 'Definition'), def),
      h('div.panel', h('h2', {style: {marginTop: 0}}, 'History'),
        h('div.tablewrap', {style: {maxHeight: '420px'}}, h('table.events', h('thead', h('tr', h('th', 'When'), h('th', 'What'))), hist)))));

  async function load() {
    try {
      info = await api.get('/api/v1/guests/' + api.enc(name));
      render();
    } catch (e) {
      if (e.status === 404) {
        fill(where, h('p', `There is no guest named ${name} (any more). `, h('a', {href: '#/guests'}, 'All guests')));
        actions.replaceChildren();
        progress.hidden = true;
        gone = true;
        return;
      }
      toast(e.message, true);
    }
  }

  function hostsFor(info) {
    const hosts = (state.status && state.status.hosts) || [];
    return hosts.filter((x) => x.state === 'online' && x.name !== info.runtime.node).map((x) => x.name);
  }

  function render() {
    const rt = info.runtime || {};
    const sp = info.spec;
    const row = {state: rt.state, running: rt.running, op: rt.op};
    const label = stateLabel(row);
    badge.className = 'badge s-' + label;
    badge.textContent = label;
    badge.dataset.group = stateGroup(row);
    badge.id = 'guest-state';
    fill(where, h('dl.kv',
      h('dt', 'Runs on'), h('dd#guest-node', rt.node ? h('b', rt.node) : h('span.muted', 'no host')),
      h('dt', 'Desired'), h('dd', sp.state),
      h('dt', 'Running since'), h('dd', rt.running_since ? `${fmtTime(rt.running_since)} (${fmtAgo(rt.running_since)})` : '—'),
      h('dt', 'Restarts / moves'), h('dd', `${rt.restarts || 0} / ${rt.moves || 0}`),
      sp.after && sp.after.length ? [h('dt', 'Starts after'), h('dd', sp.after.join(', '))] : null,
      sp.tags && sp.tags.length ? [h('dt', 'Tags'), h('dd#guest-tags', sp.tags.map((t) => h('span.badge.tag', t)))] : null,
      rt.cpu_model ? [h('dt', 'CPU model'), h('dd#guest-cpu-model', rt.cpu_model, h('span.muted', sp.cpu_model ? ' (set for this guest)' : ' (the cluster\'s)'))] : null,
      rt.wait ? [h('dt', 'Waits'), h('dd#guest-wait', h('span.badge.warn', 'waiting'), ' ', rt.wait)] : null));

    // Live migration (or any operation in flight).
    if (rt.op) {
      progress.hidden = false;
      const op = rt.op;
      const text = op.kind === 'migrate' ? [h('span', op.node), h('span', '→'), h('span', op.target)]
        : [h('span', `${op.kind} on ${op.node}`), op.target ? h('span', `then start on ${op.target}`) : null];
      fill(progress, h('div.flow#op', h('span.badge.warn', op.kind === 'migrate' ? 'live migration' : op.kind), ...text, h('span.muted', `(${op.purpose})`)),
        h('div.progress.indeterminate', h('span')));
    } else {
      progress.hidden = true;
    }

    actions.replaceChildren();
    if (can('operator')) {
      const btn = (label, cls, fn, title) => {
        const b = h('button' + cls, {type: 'button', 'data-action': label.toLowerCase(), title}, label);
        b.disabled = busy;
        b.addEventListener('click', fn);
        return b;
      };
      if (sp.state !== 'started' || rt.state === 'failed') actions.append(btn('Start', '.primary', () => command('start')));
      if (sp.state === 'started') actions.append(btn('Stop', '', () => command('stop'), 'stop the guest (the manager will not restart it)'));
      if (sp.state !== 'disabled') actions.append(btn('Disable', '', () => command('disable'), 'stop the guest and keep it from starting anywhere'));
      const targets = hostsFor(info);
      if (rt.running && targets.length) {
        const pick = h('select#target', {'aria-label': 'target host'}, targets.map((t) => h('option', {value: t}, t)));
        if (targets.includes(target)) pick.value = target;
        pick.addEventListener('change', () => { target = pick.value; });
        const err = h('span.field-error#target-error');
        actions.append(h('span.actions', 'to', pick,
          btn('Migrate', '', () => command('migrate', pick.value, err), 'live migration: the guest keeps running'),
          btn('Relocate', '', () => command('relocate', pick.value, err), 'stop here, start there'), err));
      }
      if ((rt.running && (info.definition || {}).display === 'vnc') || closeDisplay) actions.append(btn(closeDisplay ? 'Close display' : 'Display', '', toggleDisplay, 'the guest\'s graphical display (VNC through the agent; the session is in the audit log)'));
      if (rt.running || closeConsole) actions.append(btn(closeConsole ? 'Close console' : 'Console', '', toggleConsole, 'the guest\'s serial console, live (the session is in the audit log)'));
      actions.append(btn('Edit', '', () => { editing = !editing; drawEditor(); }, 'change memory, vCPUs, domain, recovery policy, tags and CPU model'));
      if (sp.state !== 'started' && !rt.running) actions.append(btn('Delete', '.danger', remove));
    }

    const d = info.definition || {};
    fill(def, h('dl.kv',
      h('dt', 'Memory'), h('dd', fmtBytes(sp.memory)),
      h('dt', 'vCPUs'), h('dd', String(sp.cpus)),
      h('dt', 'Failover domain'), h('dd', sp.domain ? h('a', {href: '#/domains'}, sp.domain) : h('span.muted', 'none (any host)')),
      h('dt', 'Recovery'), h('dd', `${sp.recovery}, max ${sp.max_restarts} restarts in ${fmtDur(sp.restart_window)}, max ${sp.max_relocations} relocations`),
      h('dt', 'Live migration'), h('dd', sp.migratable ? 'allowed' : 'not allowed (relocate instead)'),
      h('dt', 'Priority'), h('dd', String(sp.priority || 0)),
      h('dt', 'Disks'), h('dd', (d.disks || []).length ? (d.disks || []).map((k) => h('div.mono', (k.path || `${k.pool}/${k.volume}`) + (k.format ? ` (${k.format})` : '') + (k.readonly ? ' ro' : ''))) : h('span.muted', 'none')),
      h('dt', 'Network'), h('dd', (d.nics || []).length ? (d.nics || []).map((n) => h('div.mono', (n.bridge ? 'bridge ' + n.bridge : 'user networking') + (n.mac ? ' ' + n.mac : ''))) : h('span.muted', 'none')),
      h('dt', 'Health'), h('dd#guest-health', (d.health || []).length || d.guest_agent
        ? [d.guest_agent ? h('div', 'guest agent (heartbeat: a hung guest is a crash)') : null,
          ...(d.health || []).map((c) => h('div.mono', healthText(c)))]
        : h('span.muted', 'no checks (a crash or panic is still seen)')),
      (rt.health || []).length ? [h('dt', 'Health now'), h('dd#guest-health-now', rt.health.map((r) => h('div.health-now',
        h('span.badge.' + (r.ok ? 'ok' : r.failures ? 'bad' : 'warn'), r.ok ? 'pass' : 'fail'), ' ',
        h('span.mono', r.check), r.ok ? '' : ` ${r.failures} in a row${r.failures ? '' : ' (start grace)'}`,
        r.at ? h('span.muted', ' at ' + fmtTime(r.at)) : null,
        r.output ? h('div.mono.muted', r.output) : null)))] : null,
      d.boot && d.boot.kernel ? [h('dt', 'Kernel'), h('dd.mono', d.boot.kernel + (d.boot.cmdline ? ' ' + d.boot.cmdline : ''))] : null,
      h('dt', 'Created'), h('dd', fmtTime(info.created)),
      h('dt', 'Updated'), h('dd', fmtTime(info.updated))));

    const evs = info.history || [];
    hist.replaceChildren(...evs.slice().reverse().map((e) => h('tr', h('td.at', fmtTime(e.at)), h('td', e.msg, e.who ? h('span.muted', ` — ${e.who}`) : null))));
    if (!evs.length) hist.append(h('tr', h('td.empty', {colspan: 2}, 'Nothing yet.')));

    // Follow an operation in flight closely; otherwise the stream drives us.
    clearTimeout(timer);
    if (rt.op || rt.state === 'pending' || (sp.state === 'started' && !rt.running)) timer = setTimeout(load, 1000);
  }

  // drawEditor shows the guest's policy for editing; it is drawn once per
  // opening, so live reloads do not disturb what is being typed.
  function drawEditor() {
    if (!editing || !info) { editor.replaceChildren(); return; }
    const sp = info.spec;
    const rev = info.rev;
    const inp = (name, value, attrs) => h('input', {name, 'data-field': name, value, ...attrs});
    const f = {
      memory: inp('memory', fmtSize(sp.memory)),
      vcpus: inp('vcpus', sp.cpus, {type: 'number', min: 1}),
      domain: h('select', {name: 'domain', 'data-field': 'domain'}, h('option', {value: ''}, 'none: any host')),
      recovery: h('select', {name: 'recovery', 'data-field': 'recovery'}, ['restart', 'relocate', 'disable'].map((r) => h('option', {value: r, selected: r === sp.recovery}, r))),
      max_restarts: inp('max_restarts', sp.max_restarts, {type: 'number', min: 0}),
      restart_window: inp('restart_window', fmtDur(sp.restart_window)),
      max_relocations: inp('max_relocations', sp.max_relocations, {type: 'number', min: 0}),
      migratable: h('input', {type: 'checkbox', name: 'migratable', 'data-field': 'migratable', checked: sp.migratable}),
      priority: inp('priority', sp.priority || 0, {type: 'number', min: 0, max: 1000}),
      tags: inp('tags', (sp.tags || []).join(' '), {placeholder: 'prod web (none: no tags)', autocomplete: 'off'}),
      cpu_model: inp('cpu_model', sp.cpu_model || '', {placeholder: 'empty: the cluster\'s model', autocomplete: 'off'}),
    };
    api.get('/api/v1/domains').then((ds) => {
      for (const d of ds || []) f.domain.append(h('option', {value: d.name, selected: d.name === sp.domain}, d.name));
    }).catch(() => {});
    const save = h('button.primary', {type: 'submit'}, 'Save');
    const form = h('form.grid#guest-edit',
      ...row('Memory', f.memory, 'takes effect at the next start'), ...row('vCPUs', f.vcpus),
      ...row('Failover domain', f.domain), ...row('Recovery', f.recovery), ...row('Max restarts', f.max_restarts),
      ...row('Restart window', f.restart_window), ...row('Max relocations', f.max_relocations), ...row('Live migration', f.migratable),
      ...row('Priority', f.priority, '0..1000: placed first when hosts are short; with preemption on, may stop lower ones'),
      ...row('Tags', f.tags, TAGS_HINT),
      ...row('CPU model', f.cpu_model, CPU_MODEL_HINT),
      h('div'), h('div.actions', save, h('button', {type: 'button', onclick: () => { editing = false; drawEditor(); }}, 'Cancel')), h('div.form-error'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      save.disabled = true;
      try {
        await api.put('/api/v1/guests/' + api.enc(name), {
          rev, memory: f.memory.value.trim(), vcpus: Number(f.vcpus.value), domain: f.domain.value, recovery: f.recovery.value,
          max_restarts: Number(f.max_restarts.value), restart_window: f.restart_window.value.trim(),
          max_relocations: Number(f.max_relocations.value), migratable: f.migratable.checked,
          priority: Number(f.priority.value), tags: parseTags(f.tags.value), cpu_model: f.cpu_model.value.trim(),
        });
        toast(`Saved ${name}`);
        editing = false;
        drawEditor();
        load();
      } catch (e) {
        showError(form, e);
      } finally {
        save.disabled = false;
      }
    });
    fill(editor, h('div.panel', h('h2', {style: {marginTop: 0}}, `Edit ${name}`), form));
  }

  async function command(kind, node, errEl) {
    busy = true;
    if (errEl) errEl.textContent = '';
    render();
    try {
      const res = await api.post(`/api/v1/guests/${api.enc(name)}/${kind}`, node ? {node} : {});
      if (res && res._accepted) {
        toast(`${res.command}: sent; the manager is working on it`);
        followCommand(res.id);
      } else {
        toast(`${res.command}: done`);
      }
    } catch (e) {
      if (errEl && e.field === 'node') errEl.textContent = e.message;
      else toast(`${kind} ${name}: ${e.message}`, true);
    } finally {
      busy = false;
      await load();
      refresh();
    }
  }

  async function followCommand(id) {
    for (let i = 0; i < 120 && !gone; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      try {
        const c = await api.get('/api/v1/commands/' + api.enc(id));
        if (c.done) {
          if (c.error) toast(`${c.command}: refused: ${c.error}`, true);
          else toast(`${c.command}: done`);
          load();
          return;
        }
      } catch { return; }
    }
  }

  async function remove() {
    if (!confirm(`Delete guest ${name}? Its definition is removed from the cluster (disks are left alone).`)) return;
    try {
      await api.del('/api/v1/guests/' + api.enc(name));
      toast(`Deleted guest ${name}`);
      gone = true;
      await refresh();
      location.hash = '#/guests';
    } catch (e) {
      toast(e.message, true);
    }
  }

  load();
  const off = onChange((w) => {
    if (gone) return;
    if (w && w.event && (w.event.guest === name || w.event.kind === 'node' || w.event.kind === 'fence')) load();
    else if (w && w.change && w.change.guest === name) load();
  });
  return {unmount: () => { gone = true; off(); clearTimeout(timer); if (closeConsole) closeConsole(); if (closeDisplay) closeDisplay(); }};
}

// TAGS_HINT says how tags are typed in the guest forms.
export const TAGS_HINT = 'separated by spaces or commas; lower-case letters, digits, . _ -; at most 16 tags';

// CPU_MODEL_HINT says what the guest forms' CPU model field takes.
export const CPU_MODEL_HINT = 'such as x86-64-v2 or host; empty: the cluster\'s model (takes effect at the next start)';

// parseTags reads the tags typed in a form: words separated by spaces or
// commas (the server checks each).
export function parseTags(s) {
  return s.split(/[\s,]+/).filter(Boolean);
}

// healthText describes one health check (docs/guests.md).
function healthText(c) {
  const what = c.agent ? 'guest agent ping' : c.tcp ? `tcp ${c.tcp}` : c.http ? `http ${c.http} → ${c.status || 200}`
    : c.exec ? `exec ${c.exec.join(' ')} → ${c.exit_code || 0}` : '?';
  const t = [c.interval && `every ${c.interval}`, c.timeout && `timeout ${c.timeout}`, c.failures && `${c.failures} failures`, c.start_grace && `grace ${c.start_grace}`].filter(Boolean);
  return (c.name ? c.name + ': ' : '') + what + (t.length ? ` (${t.join(', ')})` : '');
}

// fmtSize writes bytes as the server reads them back (1GiB, 384MiB).
export function fmtSize(n) {
  const G = 1 << 30, M = 1 << 20;
  if (n && n % G === 0) return n / G + 'GiB';
  if (n && n % M === 0) return n / M + 'MiB';
  return String(n);
}

// fmtDur shows a Go duration (nanoseconds as a number, or a string).
export function fmtDur(v) {
  if (typeof v === 'string') return v;
  if (!v) return '0s';
  let s = Math.round(v / 1e9);
  const out = [];
  if (s >= 3600) { out.push(Math.floor(s / 3600) + 'h'); s %= 3600; }
  if (s >= 60) { out.push(Math.floor(s / 60) + 'm'); s %= 60; }
  if (s || !out.length) out.push(s + 's');
  return out.join('');
}
