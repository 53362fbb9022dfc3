// Form helpers: show the server's message next to the field at fault.
import {h} from '../dom.js';

// row is one labelled line of a form.grid: label, control, error slot.
export function row(label, control, hint) {
  const field = control.dataset.field || control.name;
  const err = h('span.field-error', {'data-error-for': field});
  return [h('label', {for: control.id || undefined}, label), control, h('div', hint ? h('div.hint', hint) : null, err)];
}

export function clearErrors(form) {
  for (const e of form.querySelectorAll('.field-error')) e.textContent = '';
  for (const e of form.querySelectorAll('.bad')) e.classList.remove('bad');
  const top = form.querySelector('.form-error');
  if (top) top.textContent = '';
}

// showError puts err.message next to the field it names (the longest
// field name that prefixes err.field: "disks[0].format" falls back to
// "disks[0]" and then "disks"), or at the top of the form.
export function showError(form, err) {
  clearErrors(form);
  let f = err.field || '';
  while (f) {
    const slot = form.querySelector(`[data-error-for="${CSS.escape(f)}"]`);
    if (slot) {
      slot.textContent = err.message;
      const ctl = form.querySelector(`[data-field="${CSS.escape(f)}"], [name="${CSS.escape(f)}"]`);
      if (ctl) { ctl.classList.add('bad'); ctl.focus(); }
      return;
    }
    const cut = Math.max(f.lastIndexOf('.'), f.lastIndexOf('['));
    f = cut > 0 ? f.slice(0, cut) : '';
  }
  const top = form.querySelector('.form-error');
  if (top) top.textContent = err.message;
}
