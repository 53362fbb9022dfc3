// Failover domains: members with their order or priorities, restricted,
// nofailback; create, edit and delete (admin).
import {h, fill} from '../dom.js';
import * as api from '../api.js';
import {state, can, onChange} from '../state.js';
import {toast} from '../app.js';
import {row, showError, clearErrors} from './form.js';

export function domains(main) {
  const list = h('div#domain-list');
  const editor = h('div');
  const addBtn = can('admin') ? h('button.primary#new-domain', {type: 'button'}, 'New failover domain') : null;
  fill(main, h('h1', 'Failover domains', addBtn),
    h('p.muted', 'A domain lists the hosts a guest prefers. Ordered: the first member is most preferred, then the next. Otherwise higher priority wins. Restricted: never run outside the members. No failback: do not move back by itself when a preferred host returns.'),
    editor, list);
  if (addBtn) addBtn.addEventListener('click', () => edit(null));
  let data = [];

  async function load() {
    try {
      data = await api.get('/api/v1/domains');
      render();
    } catch (e) { toast(e.message, true); }
  }

  function render() {
    if (!data.length) {
      fill(list, h('div.panel.empty', 'No failover domains. Guests without a domain run on any host.'));
      return;
    }
    fill(list, h('div.tablewrap', h('table',
      h('thead', h('tr', h('th', 'Domain'), h('th', 'Members (most preferred first)'), h('th', 'Ordered'), h('th', 'Restricted'), h('th', 'No failback'), h('th', 'Guests'), can('admin') ? h('th', '') : null)),
      h('tbody', data.map((d) => {
        const members = [...d.members].sort((a, b) => d.ordered ? 0 : b.priority - a.priority);
        return h('tr', {'data-domain': d.name},
          h('td', h('b', d.name)),
          h('td', members.map((m, i) => h('span', i ? ', ' : '', m.node, d.ordered ? '' : h('span.muted', ` (${m.priority})`)))),
          h('td', d.ordered ? 'yes' : 'no'),
          h('td', d.restricted ? 'yes' : 'no'),
          h('td', d.nofailback ? 'yes' : 'no'),
          h('td', d.guests.length ? d.guests.slice(0, 8).map((g, i) => [i ? ', ' : '', h('a', {href: '#/guest/' + encodeURIComponent(g)}, g)]) : h('span.muted', 'none'), d.guests.length > 8 ? ` and ${d.guests.length - 8} more` : ''),
          can('admin') ? h('td', h('div.actions',
            h('button.small', {type: 'button', 'data-action': 'edit', onclick: () => edit(d)}, 'Edit'),
            h('button.small.danger', {type: 'button', 'data-action': 'delete', onclick: () => remove(d)}, 'Delete'))) : null);
      })))));
  }

  function edit(d) {
    const creating = !d;
    d = d || {name: '', members: [], ordered: true, restricted: false, nofailback: false};
    const hosts = ((state.status && state.status.hosts) || []).map((x) => x.name);
    for (const m of d.members) if (!hosts.includes(m.node)) hosts.push(m.node);
    // Members first, in their order, then the other hosts.
    const order = [...d.members.map((m) => m.node), ...hosts.filter((x) => !d.members.some((m) => m.node === x))];
    const name = h('input', {name: 'name', id: 'domain-name', value: d.name, required: true, disabled: !creating, placeholder: 'bias-n1'});
    const ordered = h('input', {type: 'checkbox', name: 'ordered', checked: d.ordered});
    const restricted = h('input', {type: 'checkbox', name: 'restricted', checked: d.restricted});
    const nofailback = h('input', {type: 'checkbox', name: 'nofailback', checked: d.nofailback});
    const mrows = h('tbody');
    const memberTable = h('table', {'data-field': 'members'}, h('thead', h('tr', h('th', 'Member'), h('th', 'Host'), h('th', 'Priority'), h('th', 'Order'))), mrows);
    const items = order.map((node) => {
      const m = d.members.find((x) => x.node === node);
      return {node, on: !!m, prio: m ? m.priority : 1};
    });
    function drawMembers() {
      mrows.replaceChildren(...items.map((it, i) => {
        const cb = h('input', {type: 'checkbox', 'data-member': it.node, checked: it.on, onchange: (e) => { it.on = e.target.checked; }});
        const pr = h('input', {type: 'number', min: 0, max: 1000, value: it.prio, style: {width: '80px'}, disabled: ordered.checked, onchange: (e) => { it.prio = Number(e.target.value); }});
        const up = h('button.small', {type: 'button', disabled: i === 0, onclick: () => { [items[i - 1], items[i]] = [items[i], items[i - 1]]; drawMembers(); }}, '↑');
        const down = h('button.small', {type: 'button', disabled: i === items.length - 1, onclick: () => { [items[i + 1], items[i]] = [items[i], items[i + 1]]; drawMembers(); }}, '↓');
        return h('tr', h('td', cb), h('td', it.node), h('td', pr), h('td', up, ' ', down));
      }));
    }
    ordered.addEventListener('change', drawMembers);
    drawMembers();
    const save = h('button.primary', {type: 'submit'}, creating ? 'Create domain' : 'Save changes');
    const cancel = h('button', {type: 'button', onclick: () => editor.replaceChildren()}, 'Cancel');
    const form = h('form.grid#domain-form',
      ...row('Name', name),
      ...row('Ordered', ordered, 'members are tiers in the order below'),
      ...row('Restricted', restricted, 'never run outside the members'),
      ...row('No failback', nofailback, 'do not move back to a more preferred member by itself'),
      ...row('Members', memberTable),
      h('div'), h('div.actions', save, cancel), h('div.form-error'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const members = items.filter((it) => it.on).map((it, i, all) => ({node: it.node, priority: ordered.checked ? all.length - i : it.prio}));
      const body = {name: name.value.trim(), members, ordered: ordered.checked, restricted: restricted.checked, nofailback: nofailback.checked};
      save.disabled = true;
      try {
        if (creating) await api.post('/api/v1/domains', body);
        else await api.put('/api/v1/domains/' + api.enc(d.name), body);
        toast(`${creating ? 'Created' : 'Saved'} failover domain ${body.name}`);
        editor.replaceChildren();
        load();
      } catch (e) {
        showError(form, e);
      } finally {
        save.disabled = false;
      }
    });
    fill(editor, h('div.panel', h('h2', {style: {marginTop: 0}}, creating ? 'New failover domain' : `Edit ${d.name}`), form));
    if (creating) name.focus();
  }

  async function remove(d) {
    if (!confirm(`Delete failover domain ${d.name}?`)) return;
    try {
      await api.del('/api/v1/domains/' + api.enc(d.name));
      toast(`Deleted failover domain ${d.name}`);
      load();
    } catch (e) { toast(e.message, true); }
  }

  load();
  return {unmount: onChange((w) => { if (w && w.event && /domain/.test(w.event.msg)) load(); })};
}
