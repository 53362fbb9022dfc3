// Hosts: health and facts, maintenance on/off (operator), confirming a
// failed host off when its fence device cannot act (admin), and the fencing
// set-up per host with a Test button (admin): fence devices, and each
// host's levels. Per host, "What if it fails" and "What if maintenance"
// ask the manager's core what would happen (GET /api/v1/whatif), changing
// nothing. The cluster policy panel shows the policy and the effective
// capacity (vCPU overcommit, host reserves, guest overhead, CPU model),
// which admins edit (PUT /api/v1/policy with a partial capacity object).
import {h, fill, fmtBytes, fmtTime, fmtAgo} from '../dom.js';
import * as api from '../api.js';
import {state, can, onChange} from '../state.js';
import {toast, refresh} from '../app.js';
import {row, showError, clearErrors} from './form.js';
import {fmtSize} from './guests.js';

export function hosts(main) {
  const table = h('tbody');
  const fencing = h('div#fencing');
  const whatif = h('div#whatif');
  const policy = h('div#policy');
  const tests = new Map(); // node -> last test outcome element
  fill(main, h('h1', 'Hosts & fencing'),
    h('div.tablewrap', h('table#host-table',
      h('thead', h('tr', h('th', 'Host'), h('th', 'State'), h('th', 'Role'), h('th.num', 'Memory'), h('th.num', 'CPUs'), h('th', 'Hypervisor'), h('th', 'Agent'), h('th', 'Fencing levels'), h('th', ''))),
      table)),
    whatif,
    policy,
    fencing);
  let fc = null; // redacted fence configuration (admin only)

  function levelsText(node) {
    if (!fc) return h('span.muted', can('admin') ? '…' : 'admins only');
    const lv = (fc.levels || {})[node];
    if (!lv || !lv.length) return h('span.badge.warn', 'none');
    return lv.map((l, i) => h('div', h('span.muted', `${i + 1}: `), l.devices.join(' + ')));
  }

  function render() {
    const hs = (state.status && state.status.hosts) || [];
    table.replaceChildren(...hs.map((x) => {
      const f = x.facts || {};
      const acts = h('div.actions');
      if (can('operator')) {
        acts.append(x.maintenance
          ? h('button.small', {type: 'button', 'data-action': 'maintenance-off', title: 'let guests run here again; the guests maintenance moved away come back', onclick: () => maintenance(x.name, false)}, 'End maintenance')
          : h('button.small', {type: 'button', 'data-action': 'maintenance-on', title: 'move its guests away and keep new ones off', onclick: () => maintenance(x.name, true)}, 'Maintenance on'));
      }
      if (can('admin') && x.ha === 'failed') {
        acts.append(h('button.small.danger', {type: 'button', 'data-action': 'confirm-off', title: 'its fence device cannot act and you have checked that it is powered off: its guests start elsewhere now', onclick: () => confirmOff(x.name)}, 'Confirm off'));
      }
      if (can('admin') && fc && (fc.levels || {})[x.name]) {
        acts.append(h('button.small', {type: 'button', 'data-action': 'fence-test', title: 'ask each fence device for the power state, without fencing', onclick: () => test(x.name)}, 'Test fencing'));
      }
      if (x.state === 'online' || x.maintenance) {
        if (x.state === 'online') acts.append(h('button.small', {type: 'button', 'data-action': 'whatif-down', title: 'what the manager would do if this host failed now (nothing changes)', onclick: () => whatIf(x.name, false)}, 'What if it fails'));
        if (!x.maintenance) acts.append(h('button.small', {type: 'button', 'data-action': 'whatif-maintenance', title: 'would an evacuation succeed, and where would each guest go (nothing changes)', onclick: () => whatIf(x.name, true)}, 'What if maintenance'));
      }
      const out = tests.get(x.name);
      return h('tr', {'data-host': x.name},
        h('td', h('b', x.name), x.api_addr ? h('div.muted.mono', x.api_addr) : null),
        h('td', h('span.badge.s-' + (x.unreachable ? 'unreachable' : x.state), x.unreachable ? 'unreachable' : x.state), x.maintenance ? [' ', h('span.badge.warn', 'maintenance')] : null,
          x.ha === 'failed' ? [' ', h('span.badge.bad', 'being fenced')] : x.ha === 'fenced' ? [' ', h('span.badge.warn', 'fenced')] : null,
          x.since ? h('div.muted', `since ${fmtAgo(x.since)}`) : null),
        h('td', x.manager ? h('span.badge.ok', 'manager') : null, ' ', x.store_role ? h('span.muted', `store ${x.store_role}`) : h('span.muted', 'store client')),
        h('td.num', f.memory ? fmtBytes(f.memory) : '—'),
        h('td.num', f.cpus ? String(f.cpus) : '—'),
        h('td', f.hypervisor || '—'),
        h('td', f.agent_version || '—'),
        h('td', levelsText(x.name)),
        h('td', acts, out || null));
    }));
  }

  async function maintenance(node, on) {
    try {
      const res = await api.post(`/api/v1/nodes/${api.enc(node)}/maintenance`, {on});
      const what = `Maintenance ${on ? 'on' : 'off'} for ${node}`;
      toast(res && res._accepted ? `${what}: sent; the manager is working on it` : what);
      refresh();
    } catch (e) { toast(`maintenance ${node}: ${e.message}`, true); }
  }

  // whatIf shows what the manager's core would do if node failed (or went
  // into maintenance) now.
  async function whatIf(node, maint) {
    const what = maint ? `went into maintenance` : `failed`;
    fill(whatif, h('div.panel', h('h2', {style: {marginTop: 0}}, `What if ${node} ${what} now`), h('p.muted', 'asking the manager…')));
    let w;
    try {
      w = await api.get(`/api/v1/whatif?${maint ? 'maintenance' : 'down'}=${api.enc(node)}`);
    } catch (e) {
      fill(whatif, h('div.panel', h('h2', {style: {marginTop: 0}}, `What if ${node} ${what} now`), h('div.field-error', e.message)));
      return;
    }
    const secs = (ns) => (ns ? `${(ns / 1e9).toFixed(1)} s` : '—');
    const guests = w.guests || [];
    const rows = guests.map((g) => h('tr', {'data-guest': g.guest},
      h('td', h('a', {href: '#/guest/' + encodeURIComponent(g.guest)}, g.guest)),
      h('td', g.from || '—'),
      h('td', g.to ? h('b', g.to) : h('span.muted', 'nowhere')),
      h('td', h('span.badge.s-' + g.state, g.state)),
      h('td.num', g.after ? secs(g.after) + (g.moved ? ' (live)' : '') : '—'),
      h('td', g.wait || '')));
    const a = w.admission || {};
    const reserve = a.reserve || {};
    const admission = !(reserve.hosts || reserve.percent) ? 'off'
      : a.short > 0 ? `would NOT hold: short by ${fmtBytes(a.short)}` : 'would still hold';
    const verdict = maint
      ? (w.evacuated ? h('span.badge.ok', 'evacuation succeeds') : h('span.badge.bad', 'evacuation does NOT succeed: guests stay'))
      : h('span', `Every stopped guest runs again ${secs(w.recovered)} after the failure`, w.waiting ? [', but ', h('span.badge.bad', `${w.waiting} would wait`)] : '');
    fill(whatif, h('div.panel#whatif-result', {'data-node': node},
      h('h2', {style: {marginTop: 0}}, `What if ${node} ${what} now `, h('button.small', {type: 'button', onclick: () => whatif.replaceChildren()}, 'Close')),
      h('p', verdict),
      guests.length ? h('div.tablewrap', h('table#whatif-table', h('thead', h('tr', h('th', 'Guest'), h('th', 'From'), h('th', 'To'), h('th', 'State'), h('th.num', 'Runs after'), h('th', 'Why it waits'))), h('tbody', rows)))
        : h('p.muted', 'No guest is affected.'),
      h('p', `Admission control: ${admission}.`),
      (w.violations || []).map((v) => h('p', h('span.badge.warn', `rule ${v.rule}`), ' ', v.what)),
      h('p.muted', 'Assumes every fence, start and migration succeeds (fence 2 s, start 2 s, migration 5 s). Nothing was changed.')));
  }

  async function confirmOff(node) {
    if (!confirm(`Confirm that ${node} is powered off?\n\nIts guests start on other hosts at once. If ${node} still runs them, they run twice and their disks are corrupted: check its power light or PDU outlet first.`)) return;
    try {
      const res = await api.post(`/api/v1/nodes/${api.enc(node)}/confirm-off`);
      toast(res && res._accepted ? `${node} confirmed off: sent; the manager is working on it` : `${node} confirmed off: its guests recover`);
      refresh();
    } catch (e) { toast(`confirm ${node} off: ${e.message}`, true); }
  }

  async function test(node) {
    const slot = h('div.muted', 'testing…');
    tests.set(node, slot);
    render();
    try {
      const res = await api.post(`/api/v1/fence/test/${api.enc(node)}`);
      const devs = (res.result && res.result.devices) || [];
      fill(slot, h('span.badge.' + (res.ok ? 'ok' : 'bad'), res.ok ? 'fencing OK' : 'fencing FAILED'),
        devs.map((d) => h('div', `${d.device}: power ${d.power}${d.error ? ' — ' + d.error : ''}`)),
        res.error ? h('div.field-error', res.error) : null);
    } catch (e) {
      fill(slot, h('span.field-error', e.message));
    }
  }

  async function loadFence() {
    if (!can('admin')) {
      fill(fencing, h('div.panel.muted', 'The fencing configuration holds secrets: only admins see and change it.'));
      return;
    }
    let next;
    try {
      next = await api.get('/api/v1/fence/config');
      next.devices = next.devices || [];
      next.levels = next.levels || {};
    } catch (e) { toast(e.message, true); return; }
    // Redraw (losing what is being typed) only when it really changed,
    // not for the echo of our own save.
    if (fc && JSON.stringify(next) === JSON.stringify(fc)) return;
    fc = next;
    render();
    drawFencing();
  }

  function drawFencing() {
    const devRows = fc.devices.map((d) => h('tr', {'data-device': d.name},
      h('td', h('b', d.name)), h('td.mono', d.agent),
      h('td.mono', Object.entries(d.params || {}).map(([k, v]) => h('div', `${k}=${v}`))),
      h('td.mono', Object.entries(d.plugs || {}).map(([k, v]) => h('div', `${k} → ${v}`))),
      h('td', h('div.actions', h('button.small', {type: 'button', onclick: () => editDevice(d)}, 'Edit'),
        h('button.small.danger', {type: 'button', onclick: () => removeDevice(d)}, 'Delete')))));
    const levelEditor = h('div');
    fill(fencing,
      h('h2', 'Fence devices ', h('button.small', {type: 'button', id: 'new-device', onclick: () => editDevice(null)}, 'Add device')),
      h('div#device-editor'),
      fc.devices.length ? h('div.tablewrap', h('table', h('thead', h('tr', h('th', 'Device'), h('th', 'Agent'), h('th', 'Parameters (secrets hidden)'), h('th', 'Plugs per host'), h('th', ''))), h('tbody', devRows)))
        : h('div.panel.empty', 'No fence devices yet. Add one (fence_ipmilan, fence_redfish, fence_virsh, …), then give each host its levels.'),
      h('h2', 'Fencing levels per host'), levelEditor);
    drawLevels(levelEditor);
  }

  function drawLevels(el) {
    const hs = ((state.status && state.status.hosts) || []).map((x) => x.name);
    for (const n of Object.keys(fc.levels)) if (!hs.includes(n)) hs.push(n);
    const inputs = new Map();
    const form = h('form.grid#levels-form',
      h('div.muted', {style: {gridColumn: '1 / -1'}}, `Per host: devices of level 1 (all must succeed), then level 2 if level 1 failed. Device names separated by "+". Action: ${fc.action || 'off'}.`),
      ...hs.flatMap((n) => {
        const lv = fc.levels[n] || [];
        const l1 = h('input', {name: `levels.${n}`, 'data-field': `levels.${n}`, value: lv[0] ? lv[0].devices.join(' + ') : '', placeholder: 'level 1: ipmi-' + n});
        const l2 = h('input', {value: lv[1] ? lv[1].devices.join(' + ') : '', placeholder: 'level 2 (optional)'});
        inputs.set(n, [l1, l2]);
        return row(n, h('div.actions', l1, l2));
      }),
      h('div'), h('div.actions', h('button.primary', {type: 'submit'}, 'Save levels')), h('div.form-error'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const levels = {};
      for (const [n, ins] of inputs) {
        const lv = ins.map((i) => i.value.split('+').map((s) => s.trim()).filter(Boolean)).filter((d) => d.length).map((devices) => ({devices}));
        if (lv.length) levels[n] = lv;
      }
      await saveConfig({...fc, levels}, form);
    });
    fill(el, h('div.panel', form));
  }

  async function saveConfig(cfg, form) {
    try {
      fc = await api.put('/api/v1/fence/config', cfg);
      fc.devices = fc.devices || [];
      fc.levels = fc.levels || {};
      toast('Fencing configuration saved');
      render();
      drawFencing();
      return true;
    } catch (e) {
      if (form) showError(form, e); else toast(e.message, true);
      return false;
    }
  }

  function editDevice(d) {
    const creating = !d;
    d = d || {name: '', agent: 'fence_ipmilan', params: {}, plugs: {}};
    const kv = (m) => Object.entries(m || {}).map(([k, v]) => `${k}=${v}`).join('\n');
    const name = h('input', {name: 'name', 'data-field': 'devices', value: d.name, required: true, disabled: !creating});
    const agent = h('input', {name: 'agent', value: d.agent, required: true});
    const params = h('textarea', {name: 'params', rows: 4, style: {minHeight: '80px'}}, kv(d.params));
    const plugs = h('textarea', {name: 'plugs', rows: 3, style: {minHeight: '60px'}}, kv(d.plugs));
    const form = h('form.grid#device-form',
      ...row('Name', name),
      ...row('Agent', agent, 'a fence_* agent on every host'),
      ...row('Parameters', params, 'one name=value per line, as on the agent\'s stdin (ip, username, password…). Secrets show as ******: leave them to keep them.'),
      ...row('Plugs', plugs, 'host=plug per line (outlet, VM name, port)'),
      h('div'), h('div.actions', h('button.primary', {type: 'submit'}, 'Save device'), h('button', {type: 'button', onclick: () => form.remove()}, 'Cancel')), h('div.form-error'));
    const parse = (text) => Object.fromEntries(text.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
      const i = l.indexOf('=');
      return i < 0 ? [l, ''] : [l.slice(0, i).trim(), l.slice(i + 1).trim()];
    }));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const dev = {...d, name: name.value.trim(), agent: agent.value.trim(), params: parse(params.value), plugs: parse(plugs.value)};
      const devices = creating ? [...fc.devices, dev] : fc.devices.map((x) => (x.name === d.name ? dev : x));
      await saveConfig({...fc, devices}, form);
    });
    fill(document.getElementById('device-editor'), h('div.panel', h('h2', {style: {marginTop: 0}}, creating ? 'New fence device' : `Edit ${d.name}`), form));
  }

  async function removeDevice(d) {
    if (!confirm(`Delete fence device ${d.name}? Levels that use it must be changed first.`)) return;
    await saveConfig({...fc, devices: fc.devices.filter((x) => x.name !== d.name)});
  }

  let pol = null; // the cluster policy as last drawn

  async function loadPolicy() {
    let next;
    try { next = await api.get('/api/v1/policy'); } catch (e) { toast(e.message, true); return; }
    if (pol && JSON.stringify(next) === JSON.stringify(pol)) return; // keep what is being typed
    pol = next;
    drawPolicy();
  }

  function drawPolicy() {
    const c = pol.capacity || {};
    const admin = can('admin');
    const inp = (name, value, attrs) => h('input', {name, 'data-field': 'capacity.' + name, value, disabled: !admin, autocomplete: 'off', ...attrs});
    const f = {
      cpu_overcommit: inp('cpu_overcommit', c.cpu_overcommit || 0, {type: 'number', step: 'any'}),
      cpu_reserve: inp('cpu_reserve', c.cpu_reserve || 0, {type: 'number'}),
      memory_reserve: inp('memory_reserve', fmtSize(c.memory_reserve || 0)),
      guest_overhead: inp('guest_overhead', fmtSize(c.guest_overhead || 0)),
      cpu_model: inp('cpu_model', c.cpu_model || 'auto'),
    };
    const reserve = pol.reserve && pol.reserve.hosts ? `hosts ${pol.reserve.hosts}` : pol.reserve && pol.reserve.percent ? `percent ${pol.reserve.percent}` : 'off';
    const form = h('form.grid#capacity-form',
      h('div.muted', {style: {gridColumn: '1 / -1'}}, `Fencing ${pol.fencing || 'agent'}, shutdown policy ${pol.shutdown_policy || 'migrate'}, quorum loss ${pol.quorum_loss || 'stop'}, preemption ${pol.preemption ? 'on' : 'off'}, reserve ${reserve}${pol.hold ? ', HOLD on' : ''}. Capacity (haven policy set changes the rest):`),
      ...row('vCPU overcommit', f.cpu_overcommit, 'guest vCPUs per host CPU, such as 4 or 1.5; 0: vCPUs are not counted'),
      ...row('vCPUs reserved', f.cpu_reserve, 'of each host\'s vCPU capacity, kept for the host'),
      ...row('Memory reserve', f.memory_reserve, 'of each host, kept for its OS, such as 1GiB; 0 for none'),
      ...row('Guest overhead', f.guest_overhead, 'counted per guest for QEMU itself, such as 64MiB; 0 for none'),
      ...row('CPU model', f.cpu_model, 'auto (the newest x86-64 level every host offers), host, or a model such as x86-64-v2'),
      admin ? [h('div'), h('div.actions', h('button.primary', {type: 'submit'}, 'Save capacity'))] : null,
      h('div.form-error'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const capacity = {cpu_overcommit: Number(f.cpu_overcommit.value), cpu_reserve: Number(f.cpu_reserve.value), cpu_model: f.cpu_model.value.trim()};
      for (const k of ['memory_reserve', 'guest_overhead']) {
        const n = parseSize(f[k].value);
        if (n === null) {
          showError(form, {field: 'capacity.' + k, message: `"${f[k].value.trim()}" is not a size: give one such as 1GiB or 64MiB, or 0`});
          return;
        }
        capacity[k] = n;
      }
      try {
        pol = await api.put('/api/v1/policy', {capacity});
        toast('Capacity saved');
        drawPolicy();
      } catch (e) {
        // The server names the capacity field at the start of its message.
        const m = e.field === 'capacity' && /^capacity: (\w+):/.exec(e.message);
        showError(form, m ? {field: 'capacity.' + m[1], message: e.message} : e);
      }
    });
    fill(policy, h('h2', 'Cluster policy'), h('div.panel', form));
  }

  render();
  loadFence();
  loadPolicy();
  const off = onChange((w) => {
    if (w === 'status') render();
    else if (w && w.event && w.event.kind === 'operator' && /cluster policy/.test(w.event.msg)) loadPolicy();
    else if (w && w.event && w.event.kind === 'operator' && /fencing configuration/.test(w.event.msg)) loadFence();
  });
  return {unmount: off};
}

// parseSize reads a size as the server writes it (1GiB, 64MiB, 512KiB, or
// bytes); null when it is not one.
function parseSize(s) {
  const m = /^(\d+)\s*(|B|KiB|MiB|GiB|TiB)$/.exec(s.trim());
  if (!m) return null;
  return Number(m[1]) * {'': 1, B: 1, KiB: 1 << 10, MiB: 1 << 20, GiB: 1 << 30, TiB: 2 ** 40}[m[2]];
}
