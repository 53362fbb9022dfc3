// New guest: a form (policy and definition), or an import of a libvirt
// domain XML or a Xen config. The server validates; its message shows next
// to the field at fault.
import {h, fill} from '../dom.js';
import * as api from '../api.js';
import {state, can} from '../state.js';
import {toast, refresh} from '../app.js';
import {row, showError, clearErrors} from './form.js';
import {parseTags, TAGS_HINT, CPU_MODEL_HINT} from './guests.js';

export function newGuest(main) {
  if (!can('operator')) {
    fill(main, h('div.panel', 'Creating guests needs the operator role.'));
    return {};
  }
  const hosts = ((state.status && state.status.hosts) || []).map((x) => x.name);
  const domainSel = h('select', {name: 'domain', id: 'g-domain'}, h('option', {value: ''}, 'none: any host'));
  api.get('/api/v1/domains').then((ds) => {
    for (const d of ds || []) domainSel.append(h('option', {value: d.name}, d.name));
  }).catch(() => {});
  const mode = {v: 'form'};
  const inp = (name, attrs) => h('input', {name, id: 'g-' + name.replace(/[^\w]/g, '-'), 'data-field': name, ...attrs});
  const sel = (name, opts, value) => h('select', {name, id: 'g-' + name, 'data-field': name}, opts.map((o) => h('option', {value: o, selected: o === value}, o)));

  const f = {
    name: inp('name', {required: true, placeholder: 'web1', autocomplete: 'off'}),
    memory: inp('memory', {value: '1GiB'}),
    vcpus: inp('vcpus', {type: 'number', min: 1, value: 1}),
    state: sel('state', ['started', 'stopped'], 'started'),
    node: h('select', {name: 'node', id: 'g-node', 'data-field': 'node'}, h('option', {value: ''}, 'let the manager choose'), hosts.map((x) => h('option', {value: x}, x))),
    recovery: sel('recovery', ['restart', 'relocate', 'disable'], 'restart'),
    max_restarts: inp('max_restarts', {type: 'number', min: 0, value: 1}),
    restart_window: inp('restart_window', {value: '10m'}),
    max_relocations: inp('max_relocations', {type: 'number', min: 0, value: 1}),
    migratable: h('input', {type: 'checkbox', name: 'migratable', 'data-field': 'migratable', checked: true}),
    priority: inp('priority', {type: 'number', min: 0, max: 1000, value: 0}),
    tags: inp('tags', {placeholder: 'prod web (optional)', autocomplete: 'off'}),
    cpu_model: inp('cpu_model', {placeholder: 'empty: the cluster\'s model', autocomplete: 'off'}),
    disk: inp('disks[0].path', {placeholder: '/guest_roots/web1.qcow2'}),
    diskFormat: sel('disks[0].format', ['qcow2', 'raw'], 'qcow2'),
    bridge: inp('nics[0].bridge', {placeholder: 'br0 (empty: no network)'}),
    mac: inp('nics[0].mac', {placeholder: 'auto'}),
    kernel: inp('boot.kernel', {placeholder: 'direct kernel boot (optional)'}),
    initrd: inp('boot.initrd', {placeholder: 'initrd (optional)'}),
    cmdline: inp('boot.cmdline', {placeholder: 'console=ttyS0'}),
  };
  f.domain = domainSel;
  domainSel.dataset.field = 'domain';
  const config = h('textarea', {name: 'config', id: 'g-config', 'data-field': 'config', placeholder: ''});

  const policy = [
    ...row('Failover domain', domainSel, 'which hosts it prefers (Failover domains page)'),
    ...row('Recovery', f.recovery, 'after a crash: restart in place, relocate, or disable'),
    ...row('Max restarts', f.max_restarts, 'in the restart window, then relocate'),
    ...row('Restart window', f.restart_window, 'such as 10m'),
    ...row('Max relocations', f.max_relocations),
    ...row('Live migration', f.migratable, 'allow moving it while it runs'),
    ...row('Priority', f.priority, '0..1000: placed first when hosts are short; with preemption on, may stop lower ones'),
    ...row('Desired state', f.state),
    ...row('Tags', f.tags, TAGS_HINT),
    ...row('CPU model', f.cpu_model, CPU_MODEL_HINT),
  ];
  const formPart = h('div', {style: {display: 'contents'}},
    ...row('Memory', f.memory, 'such as 512MiB or 2GiB'),
    ...row('vCPUs', f.vcpus),
    ...row('First host', f.node),
    ...row('Disk', f.disk, 'on shared storage seen by every host'),
    ...row('Disk format', f.diskFormat),
    ...row('Bridge', f.bridge),
    ...row('MAC address', f.mac),
    ...row('Kernel', f.kernel),
    ...row('Initrd', f.initrd),
    ...row('Kernel command line', f.cmdline));
  const importPart = h('div', {style: {display: 'contents'}, hidden: true},
    ...row('Configuration', config, ''),
  );
  const nameRow = row('Name', f.name, 'letters, digits, . _ -; unique in the cluster');
  const submit = h('button.primary', {type: 'submit'}, 'Create guest');
  const form = h('form.grid#guest-form', ...nameRow, formPart, importPart, ...policy,
    h('div'), h('div.actions', submit, h('a', {href: '#/guests'}, 'Cancel')), h('div.form-error', {role: 'alert'}));

  const tabs = h('div.tabs', [['form', 'Form'], ['libvirt', 'Import libvirt XML'], ['xen', 'Import Xen config']].map(([v, label]) => {
    const b = h('button', {type: 'button', 'data-tab': v, class: v === 'form' ? 'active' : ''}, label);
    b.addEventListener('click', () => {
      mode.v = v;
      for (const x of tabs.children) x.classList.toggle('active', x === b);
      formPart.hidden = v !== 'form';
      importPart.hidden = v === 'form';
      f.name.required = v === 'form';
      f.name.placeholder = v === 'form' ? 'web1' : 'from the configuration';
      config.placeholder = v === 'libvirt' ? "<domain type='kvm'>\n  <name>guest1</name>\n  …" : "name = 'guest1'\nmemory = 1024\nvcpus = 1\ndisk = ['file:/guest_roots/guest1.img,xvda,w']\nvif = ['bridge=xenbr0']";
      clearErrors(form);
    });
    return b;
  }));
  fill(main, h('h1', 'New guest'), tabs, h('div.panel', form));

  const num = (el) => (el.value === '' ? undefined : Number(el.value));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const body = {
      domain: domainSel.value, recovery: f.recovery.value, max_restarts: num(f.max_restarts),
      restart_window: f.restart_window.value.trim() || undefined, max_relocations: num(f.max_relocations),
      migratable: f.migratable.checked, state: f.state.value, priority: num(f.priority),
    };
    if (f.name.value.trim()) body.name = f.name.value.trim();
    const tags = parseTags(f.tags.value);
    if (tags.length) body.tags = tags;
    if (f.cpu_model.value.trim()) body.cpu_model = f.cpu_model.value.trim();
    if (mode.v === 'form') {
      Object.assign(body, {memory: f.memory.value.trim(), vcpus: num(f.vcpus), node: f.node.value || undefined});
      if (f.disk.value.trim()) body.disks = [{path: f.disk.value.trim(), format: f.diskFormat.value}];
      else body.disks = [];
      body.nics = f.bridge.value.trim() ? [{bridge: f.bridge.value.trim(), mac: f.mac.value.trim() || undefined}] : [];
      const boot = {kernel: f.kernel.value.trim(), initrd: f.initrd.value.trim(), cmdline: f.cmdline.value.trim()};
      body.boot = Object.fromEntries(Object.entries(boot).filter(([, v]) => v));
    } else {
      body.format = mode.v;
      body.config = config.value;
    }
    submit.disabled = true;
    try {
      const g = await api.post('/api/v1/guests', body);
      toast(`Created guest ${g.name}`);
      await refresh();
      location.hash = '#/guest/' + encodeURIComponent(g.name);
    } catch (e) {
      showError(form, e);
    } finally {
      submit.disabled = false;
    }
  });
  f.name.focus();
  return {};
}
