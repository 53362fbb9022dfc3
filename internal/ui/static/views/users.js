// People who may log in to the web UI, with their roles (admin).
import {h, fill, fmtTime} from '../dom.js';
import * as api from '../api.js';
import {state, can} from '../state.js';
import {toast} from '../app.js';
import {row, showError, clearErrors} from './form.js';

const ROLES = ['viewer', 'operator', 'admin'];

export function users(main) {
  if (!can('admin')) {
    fill(main, h('h1', 'Users'), h('div.panel', 'Only admins manage users.'));
    return {};
  }
  const body = h('tbody');
  const name = h('input', {name: 'name', id: 'user-name', required: true, autocomplete: 'off'});
  const role = h('select', {name: 'role', id: 'user-role'}, ROLES.map((r) => h('option', {value: r}, r)));
  const pass = h('input', {name: 'password', id: 'user-password', type: 'password', autocomplete: 'new-password', required: true});
  const form = h('form.grid#user-form', ...row('User name', name), ...row('Role', role, 'viewer: look only; operator: run guests and hosts; admin: everything'),
    ...row('Password', pass, 'at least 8 characters'), h('div'), h('div.actions', h('button.primary', {type: 'submit'}, 'Add user')), h('div.form-error'));
  fill(main, h('h1', 'Users'),
    h('div.tablewrap', h('table', h('thead', h('tr', h('th', 'User'), h('th', 'Role'), h('th', 'Created'), h('th', ''))), body)),
    h('h2', 'Add a user'), h('div.panel', form),
    h('p.muted', 'From a shell: ', h('code', 'haven user add NAME --role operator'), '. API tokens of role viewer or above can log in too.'));

  async function load() {
    try {
      const us = await api.get('/api/v1/users');
      body.replaceChildren(...us.map((u) => {
        const sel = h('select', {'aria-label': 'role of ' + u.name}, ROLES.map((r) => h('option', {value: r, selected: r === u.role}, r)));
        sel.addEventListener('change', async () => {
          try { await api.put('/api/v1/users/' + api.enc(u.name), {role: sel.value}); toast(`${u.name} is now ${sel.value}`); } catch (e) { toast(e.message, true); load(); }
        });
        const del = h('button.small.danger', {type: 'button', disabled: state.me && state.me.user === u.name}, 'Delete');
        del.addEventListener('click', async () => {
          if (!confirm(`Delete user ${u.name}? Their sessions end at once.`)) return;
          try { await api.del('/api/v1/users/' + api.enc(u.name)); load(); } catch (e) { toast(e.message, true); }
        });
        return h('tr', {'data-user': u.name}, h('td', h('b', u.name)), h('td', sel), h('td', fmtTime(u.created)), h('td', del));
      }));
      if (!us.length) body.append(h('tr', h('td.empty', {colspan: 4}, 'No users yet: people log in with an API token until you add some.')));
    } catch (e) { toast(e.message, true); }
  }
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    try {
      await api.post('/api/v1/users', {name: name.value.trim(), role: role.value, password: pass.value});
      toast(`Added ${name.value.trim()}`);
      form.reset();
      load();
    } catch (e) { showError(form, e); }
  });
  load();
  return {};
}
