// Hosts: health and facts, maintenance on/off (operator), confirming a
// failed host off when its fence device cannot act (admin), and the fencing
// set-up per host with a Test button (admin): fence devices, and each
// host's levels. Per host, "What if it fails" and "What if maintenance"
// ask the manager's core what would happen (GET /api/v1/whatif), changing
// nothing. The cluster policy panel shows the policy (fencing, shutdown,
// quorum loss, preemption, admission control, rebalancing, hold) and the
// effective capacity (vCPU overcommit, host reserves, guest overhead, CPU
// model), which admins edit (PUT /api/v1/policy with the fields of each
// form); others see them read-only.
import {h, fill, fmtBytes, fmtTime, fmtAgo} from '../dom.js';
import * as api from '../api.js';
import {state, can, onChange} from '../state.js';
import {toast, refresh} from '../app.js';
import {row, showError, clearErrors} from './form.js';
import {fmtSize, fmtDur} from './guests.js';

export function hosts(main) {
  const table = h('tbody');
  const fencing = h('div#fencing');
  const whatif = h('div#whatif');
  const policy = h('div#policy');
  const notifyEl = h('div#notify');
  const tests = new Map(); // node -> last test outcome element
  fill(main, h('h1', 'Hosts & fencing'),
    h('div.tablewrap', h('table#host-table',
      h('thead', h('tr', h('th', 'Host'), h('th', 'State'), h('th', 'Role'), h('th.num', 'Memory'), h('th.num', 'CPUs'), h('th', 'Hypervisor'), h('th', 'Agent'), h('th', 'Fencing levels'), h('th', ''))),
      table)),
    whatif,
    policy,
    notifyEl,
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
    fill(policy, h('h2', 'Cluster policy'), h('div.panel', policyForm(), capacityForm()));
  }

  // policyForm: fencing, shutdown, quorum loss, preemption, admission
  // control, rebalancing and hold, as `haven policy set` sets them; the
  // server checks the values (the message goes next to the field).
  function policyForm() {
    const admin = can('admin');
    const sel = (name, field, opts, value) => h('select', {name, 'data-field': field, disabled: !admin},
      opts.map(([v, label]) => h('option', {value: v, selected: v === value}, label)));
    const num = (name, field, value, attrs) => h('input', {name, 'data-field': field, type: 'number', value, disabled: !admin, autocomplete: 'off', ...attrs});
    const r = pol.reserve || {};
    const b = pol.balance || {};
    const f = {
      fencing: sel('fencing', 'fencing', [['agent', 'agent (fence devices)'], ['watchdog', 'watchdog (hosts self-fence)']], pol.fencing || 'agent'),
      shutdown_policy: sel('shutdown_policy', 'shutdown_policy', [['migrate', 'migrate'], ['stop', 'stop'], ['freeze', 'freeze']], pol.shutdown_policy || 'migrate'),
      quorum_loss: sel('quorum_loss', 'quorum_loss', [['stop', 'stop (self-fence)'], ['freeze', 'freeze (keep the guests)']], pol.quorum_loss || 'stop'),
      preemption: sel('preemption', 'preemption', [['off', 'off'], ['on', 'on']], pol.preemption ? 'on' : 'off'),
      reserve: sel('reserve', 'reserve', [['off', 'off'], ['hosts', 'hosts'], ['percent', 'percent']], r.hosts ? 'hosts' : r.percent ? 'percent' : 'off'),
      reserve_n: num('reserve_n', 'reserve.n', r.hosts || r.percent || 0, {min: 0}),
      balance: sel('balance', 'balance', [['off', 'off'], ['manual', 'manual (propose moves)'], ['auto', 'auto (live-migrate)']], b.mode || 'off'),
      threshold: num('threshold', 'balance.threshold', b.threshold || 0, {min: 0, max: 100}),
      max_moves: num('max_moves', 'balance.max_moves', b.max_moves || 0, {min: 0}),
      cooldown: h('input', {name: 'cooldown', 'data-field': 'balance.cooldown', value: fmtDur(b.cooldown || 0), disabled: !admin, autocomplete: 'off'}),
      hold: sel('hold', 'hold', [['off', 'off'], ['on', 'on: the manager takes no action']], pol.hold ? 'on' : 'off'),
    };
    const rules = (pol.rules || []).length;
    const form = h('form.grid#policy-form',
      ...row('Fencing', f.fencing, 'how a failed host is made safe before its guests run elsewhere'),
      ...row('Shutdown policy', f.shutdown_policy, 'what a host\'s graceful shutdown does to its guests'),
      ...row('Quorum loss', f.quorum_loss, 'what a host cut off from the quorate side does with its guests; freeze needs fencing agent'),
      ...row('Preemption', f.preemption, 'on: a guest short of room may stop guests of lower priority'),
      ...row('Admission control', f.reserve, 'refuse starts that would leave no room to restart every guest after losing N hosts, or P% of capacity'),
      ...row('Reserve', f.reserve_n, 'hosts N (0..) or percent P (0..100)'),
      ...row('Rebalancing', f.balance, 'even out hosts\' memory use'),
      ...row('Balance threshold', f.threshold, 'percentage points of difference between hosts (0: default 20)'),
      ...row('Balance max moves', f.max_moves, 'migrations in flight at once (0: default 1)'),
      ...row('Balance cool-down', f.cooldown, 'a guest is not moved again within it, such as 10m (0s: default 10m)'),
      ...row('Hold', f.hold, 'on: no fence, start, stop or move until off, for work on the cluster itself (needs fencing agent)'),
      h('div.muted', {style: {gridColumn: '1 / -1'}}, `${rules} affinity rule${rules === 1 ? '' : 's'} (haven policy rule add).`),
      admin ? [h('div'), h('div.actions', h('button.primary', {type: 'submit'}, 'Save policy'))] : null,
      h('div.form-error'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const n = Number(f.reserve_n.value);
      const cooldown = parseDur(f.cooldown.value);
      if (cooldown === null) {
        showError(form, {field: 'balance.cooldown', message: `"${f.cooldown.value.trim()}" is not a duration: give one such as 10m, 90s or 1h30m`});
        return;
      }
      const body = {
        fencing: f.fencing.value, shutdown_policy: f.shutdown_policy.value, quorum_loss: f.quorum_loss.value,
        preemption: f.preemption.value === 'on', hold: f.hold.value === 'on',
        reserve: {hosts: f.reserve.value === 'hosts' ? n : 0, percent: f.reserve.value === 'percent' ? n : 0},
        balance: {mode: f.balance.value, threshold: Number(f.threshold.value), max_moves: Number(f.max_moves.value), cooldown},
      };
      if (f.reserve.value !== 'off' && !(n > 0)) {
        showError(form, {field: 'reserve.n', message: `give the number of ${f.reserve.value}, at least 1 (or admission control off)`});
        return;
      }
      try {
        pol = await api.put('/api/v1/policy', body);
        toast('Policy saved');
        drawPolicy();
      } catch (e) {
        showError(form, e);
      }
    });
    return form;
  }

  function capacityForm() {
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
    const form = h('form.grid#capacity-form',
      h('h3', {style: {gridColumn: '1 / -1', margin: '14px 0 0'}}, 'Capacity'),
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
    return form;
  }

  // Notifications (admins): the webhooks and the mail receiver that hear
  // of fences, failed hosts and guests, admission warnings and quorum loss
  // (GET/PUT /api/v1/notify; secrets come back as ******** and are kept
  // when sent back so).
  let nc = null;
  async function loadNotify() {
    if (!can('admin')) return;
    try { nc = await api.get('/api/v1/notify'); } catch (e) { toast(e.message, true); return; }
    drawNotify();
  }

  function drawNotify() {
    const hooks = h('div#webhook-rows', {style: {display: 'contents'}});
    const hookRow = (w) => {
      const url = h('input', {name: 'webhook_url', 'data-field': 'webhooks', value: w.url || '', placeholder: 'the receiver\'s http(s) URL', autocomplete: 'off'});
      const classes = h('input', {name: 'webhook_classes', value: (w.classes || []).join(','), placeholder: 'all', autocomplete: 'off'});
      const auth = h('input', {name: 'webhook_auth', type: 'password', value: w.header || '', placeholder: 'Authorization header (optional)', autocomplete: 'off'});
      const el = h('div.webhook', {style: {gridColumn: '2 / -1', display: 'flex', gap: '6px'}}, url, classes, auth,
        h('button', {type: 'button', onclick: () => el.remove()}, 'Remove'));
      return el;
    };
    for (const w of nc.webhooks || []) hooks.append(hookRow(w));
    const m = nc.mail || {};
    const on = h('input', {type: 'checkbox', name: 'mail_on', checked: !!nc.mail});
    const inp = (name, value, attrs) => h('input', {name, 'data-field': 'mail', value: value || '', autocomplete: 'off', ...attrs});
    const f = {
      server: inp('mail_server', m.server, {placeholder: 'smtp.example.com:587'}),
      tls: h('select', {name: 'mail_tls'}, [['starttls', 'STARTTLS (587)'], ['tls', 'TLS (465)'], ['none', 'none (a local relay)']].map(([v, l]) => h('option', {value: v, selected: v === (m.tls || 'starttls')}, l))),
      user: inp('mail_user', m.user, {placeholder: 'optional'}),
      password: inp('mail_password', m.password, {type: 'password', placeholder: 'with a user'}),
      from: inp('mail_from', m.from, {placeholder: 'haven@example.com'}),
      to: inp('mail_to', (m.to || []).join(', '), {placeholder: 'ops@example.com, oncall@example.com'}),
      classes: inp('mail_classes', (m.classes || []).join(','), {placeholder: 'all'}),
    };
    const results = h('div#notify-results');
    const classHint = 'classes, comma-separated: fence, node-failed, guest-failed, admission, quorum; empty: all';
    const form = h('form.grid#notify-form',
      h('label', 'Webhooks'), h('div', h('button', {type: 'button', onclick: () => hooks.append(hookRow({}))}, 'Add webhook')),
      h('div', h('div.hint', 'URL, classes, Authorization header; ' + classHint), h('span.field-error', {'data-error-for': 'webhooks'})),
      hooks,
      ...row('Mail', on, 'send the notifications by mail (SMTP) too'),
      ...row('SMTP server', f.server, 'host:port of the relay'),
      ...row('TLS', f.tls, 'none only for a local relay, without a password'),
      ...row('SMTP user', f.user, 'PLAIN authentication, over TLS only'),
      ...row('SMTP password', f.password, 'sealed in the store, never shown'),
      ...row('From', f.from, 'the sender address'),
      ...row('To', f.to, 'the recipients, comma-separated'),
      ...row('Mail classes', f.classes, classHint),
      h('div'), h('div.actions', h('button.primary', {type: 'submit'}, 'Save notifications'),
        h('button#notify-test', {type: 'button', onclick: sendTest}, 'Send a test')),
      h('div.form-error'));
    const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const body = {webhooks: [...hooks.querySelectorAll('.webhook')].map((el) => {
        const w = {url: el.querySelector('[name=webhook_url]').value.trim(), classes: list(el.querySelector('[name=webhook_classes]').value)};
        const a = el.querySelector('[name=webhook_auth]').value;
        if (a) w.header = a;
        return w;
      })};
      if (on.checked) {
        body.mail = {server: f.server.value.trim(), tls: f.tls.value, user: f.user.value.trim(), password: f.password.value,
          from: f.from.value.trim(), to: list(f.to.value), classes: list(f.classes.value)};
      }
      try {
        nc = await api.put('/api/v1/notify', body);
        toast('Notifications saved');
        drawNotify();
      } catch (e) {
        showError(form, e);
      }
    });
    async function sendTest() {
      results.replaceChildren();
      try {
        const res = await api.post('/api/v1/notify/test');
        results.replaceChildren(...res.results.map((r) => h('div', {'data-target': r.url},
          h('span', {class: 'badge ' + (r.ok ? 'ok' : 'bad')}, r.ok ? 'received' : 'NOT received'), ' ', r.url, r.error ? h('span.muted', ' ' + r.error) : null)));
      } catch (e) {
        results.replaceChildren(h('div.form-error', e.message));
      }
    }
    fill(notifyEl, h('h2', 'Notifications'), h('div.panel', form, results));
  }

  render();
  loadFence();
  loadPolicy();
  loadNotify();
  const off = onChange((w) => {
    if (w === 'status') render();
    else if (w && w.event && w.event.kind === 'operator' && /cluster policy/.test(w.event.msg)) loadPolicy();
    else if (w && w.event && w.event.kind === 'operator' && /fencing configuration/.test(w.event.msg)) loadFence();
    else if (w && w.event && w.event.kind === 'operator' && /set notifications/.test(w.event.msg)) loadNotify();
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

// parseDur reads a duration such as 10m, 90s, 1h30m or 0 into
// nanoseconds (as the server's JSON has it); null when it is not one.
function parseDur(s) {
  s = s.trim();
  if (s === '0') return 0;
  const m = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(s);
  if (!s || !m) return null;
  return ((Number(m[1] || 0) * 60 + Number(m[2] || 0)) * 60 + Number(m[3] || 0)) * 1e9;
}
