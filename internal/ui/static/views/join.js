// Join a host: a fresh join token and the exact command to run on the new
// host.
import {h, fill, fmtTime} from '../dom.js';
import * as api from '../api.js';
import {state, can} from '../state.js';

export function join(main) {
  if (!can('admin')) {
    fill(main, h('h1', 'Join a host'), h('div.panel', 'Join tokens are made by admins: ask one, or run ', h('code', 'haven token create --role join'), ' on a host of the cluster.'));
    return {};
  }
  const node = h('input', {id: 'join-node', value: 'n4', 'aria-label': 'new host name'});
  const addr = h('input', {id: 'join-addr', value: '192.0.2.14', 'aria-label': 'new host address'});
  const ttl = h('select', {id: 'join-ttl'}, ['1h', '24h', '168h'].map((t) => h('option', {value: t, selected: t === '24h'}, t)));
  const out = h('div#join-out');
  const btn = h('button.primary#join-token', {type: 'button'}, 'Create join token');
  let token = null;
  fill(main, h('h1', 'Join a host'),
    h('div.panel',
      h('p', 'On the new host, install haven and run the command below. It authenticates this cluster by the CA fingerprint in the token, sends a certificate request, and comes up as a member. No root password travels over the network.'),
      h('div.toolbar', h('label', 'New host name ', node), h('label', 'its address ', addr), h('label', 'token valid ', ttl), btn),
      out));

  function apiURL() {
    const st = state.status;
    const self = st && (st.hosts || []).find((x) => x.name === st.node);
    return (self && self.api_addr) || location.origin;
  }

  function draw() {
    if (!token) return;
    const a = addr.value.trim() || 'HOST';
    const cmd = `haven agent --node ${node.value.trim() || 'NAME'} --listen ${a}:7400 --peer-listen ${a}:7401 --join ${apiURL()} --token ${token.token}`;
    const copy = h('button', {type: 'button'}, 'Copy');
    copy.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(cmd); copy.textContent = 'Copied'; } catch { copy.textContent = 'Select and copy'; }
    });
    fill(out, h('div.cmd', h('pre#join-cmd', cmd), copy),
      h('p.muted', `Token ${token.id}, role join, valid until ${fmtTime(token.expires)}. Anyone holding it can join a host until then; revoke it with `, h('code', `haven token revoke ${token.id}`), '.'));
  }
  node.addEventListener('input', draw);
  addr.addEventListener('input', draw);
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    try {
      token = await api.post('/api/v1/tokens', {role: 'join', name: 'web UI join ' + (node.value.trim() || ''), ttl: ttl.value});
      draw();
    } catch (e) {
      fill(out, h('div.form-error', e.message));
    } finally {
      btn.disabled = false;
    }
  });
  return {};
}
