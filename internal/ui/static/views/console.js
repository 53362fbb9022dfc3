// console.js: a guest's serial console in its page, live, with the
// vendored xterm.js (static/vendor/xterm, loaded on first use) over the
// console WebSocket (GET /api/v1/guests/NAME/console, the user's session
// cookie; operators and admins only, every session audited).

import {h} from '../dom.js';

let loading = null;

// loadXterm adds xterm.js and its stylesheet once.
function loadXterm() {
  if (window.Terminal) return Promise.resolve();
  if (loading) return loading;
  loading = new Promise((resolve, reject) => {
    const css = document.createElement('link');
    css.rel = 'stylesheet';
    css.href = '/ui/vendor/xterm/xterm.css';
    document.head.append(css);
    const s = document.createElement('script');
    s.src = '/ui/vendor/xterm/xterm.js';
    s.onload = () => resolve();
    s.onerror = () => { loading = null; reject(new Error('could not load the terminal (xterm.js)')); };
    document.head.append(s);
  });
  return loading;
}

// openStyled opens term inside el under the page's policy, which forbids
// inline styles (style-src 'self'): xterm.js writes the rules that size its
// rows and colour its text into <style> elements it makes, which the
// browser would block. While it opens, the style elements it asks for are
// inert <xterm-style> elements (hidden by style.css), and their rules are
// carried, whenever xterm rewrites them, into constructed style sheets,
// which the policy allows (they are CSSOM, not inline markup). It returns a
// function that drops those sheets.
function openStyled(term, el) {
  const doc = document;
  const made = [];
  const create = doc.createElement;
  doc.createElement = function (tag, ...rest) {
    if (String(tag).toLowerCase() !== 'style') return create.call(this, tag, ...rest);
    const e = create.call(this, 'xterm-style');
    made.push(e);
    return e;
  };
  try {
    term.open(el);
  } finally {
    delete doc.createElement;
  }
  const sheets = made.map(() => new CSSStyleSheet());
  const sync = () => made.forEach((e, i) => sheets[i].replaceSync(e.textContent));
  sync();
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, ...sheets];
  const mo = new MutationObserver(sync);
  for (const e of made) mo.observe(e, {childList: true, characterData: true, subtree: true});
  return () => {
    mo.disconnect();
    doc.adoptedStyleSheets = doc.adoptedStyleSheets.filter((s) => !sheets.includes(s));
  };
}

// openConsole attaches the console of guest name inside el; it returns a
// function that closes the session.
export function openConsole(el, name, onEnd) {
  const status = h('div.muted#console-status', 'Connecting…');
  const screen = h('div#console-screen', {style: {height: '360px'}});
  el.replaceChildren(status, screen);
  let ws = null;
  let term = null;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    if (ws) ws.close();
    if (term) term.dispose();
  };
  loadXterm().then(() => {
    if (closed) return;
    term = new window.Terminal({cursorBlink: true, convertEol: false, fontSize: 13, scrollback: 2000});
    const unstyle = openStyled(term, screen);
    const dispose = term.dispose.bind(term);
    term.dispose = () => { unstyle(); dispose(); };
    term.focus();
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    ws = new WebSocket(`${proto}//${location.host}/api/v1/guests/${encodeURIComponent(name)}/console`);
    ws.binaryType = 'arraybuffer';
    const enc = new TextEncoder();
    ws.onopen = () => { status.textContent = `Connected to the serial console of ${name}. Everything typed here goes to the guest.`; };
    ws.onmessage = (m) => term.write(new Uint8Array(m.data));
    ws.onclose = (e) => {
      status.textContent = e.code === 1000 ? 'The console session ended.' : `The console is closed (${e.code}${e.reason ? ': ' + e.reason : ''}).`;
      if (onEnd) onEnd();
    };
    term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
  }).catch((e) => { status.textContent = e.message; });
  return close;
}

let loadingVNC = null;

// loadNoVNC adds the vendored noVNC bundle (window.RFB) once.
function loadNoVNC() {
  if (window.RFB) return Promise.resolve();
  if (loadingVNC) return loadingVNC;
  loadingVNC = new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = '/ui/vendor/novnc/novnc-rfb.js';
    s.onload = () => resolve();
    s.onerror = () => { loadingVNC = null; reject(new Error('could not load the display client (noVNC)')); };
    document.head.append(s);
  });
  return loadingVNC;
}

// openDisplay shows the graphical display of guest name inside el through
// noVNC over the display WebSocket (GET /api/v1/guests/NAME/vnc); it
// returns a function that closes the session.
export function openDisplay(el, name) {
  const status = h('div.muted#display-status', 'Connecting…');
  const screen = h('div#display-screen', {style: {height: '480px', background: '#000'}});
  el.replaceChildren(status, screen);
  let rfb = null;
  let closed = false;
  loadNoVNC().then(() => {
    if (closed) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    rfb = new window.RFB(screen, `${proto}//${location.host}/api/v1/guests/${encodeURIComponent(name)}/vnc`);
    rfb.scaleViewport = true;
    rfb.addEventListener('connect', () => { status.textContent = `Connected to the display of ${name}. Keys and mouse go to the guest.`; });
    rfb.addEventListener('disconnect', (e) => {
      status.textContent = e.detail && e.detail.clean ? 'The display session ended.' : 'The display is closed (the guest stopped, or the connection failed).';
    });
  }).catch((e) => { status.textContent = e.message; });
  return () => {
    if (closed) return;
    closed = true;
    if (rfb) rfb.disconnect();
  };
}
