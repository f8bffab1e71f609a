// Herald admin console: connect screen, then a shell with five screens
// (overview, users, queues, publish, nodes) under hash routes, fed by the REST API
// and the live SSE stream.

import 'uplot/dist/uPlot.min.css';
import './style.css';
import { Api, ApiError, normalizeBase } from './api';
import { Bus } from './bus';
import type { Ctx, Events, View } from './context';
import { clear, h } from './dom';
import { LiveStream, type StreamState } from './stream';
import { describeInvokeError, inTauri, profiles } from './tauri';
import type { Profile } from './types';
import { mountNodes } from './views/nodes';
import { mountOverview } from './views/overview';
import { mountPublish } from './views/publish';
import { mountQueues } from './views/queues';
import { mountUsers } from './views/users';

const SESSION_KEY = 'herald-admin.connection';
const MAX_SAMPLES = 900;

interface Connection {
  base: string;
  token: string;
  name: string;
}

const root = document.getElementById('app')!;
let stream: LiveStream | null = null;
let currentView: View | null = null;
let ctx: Ctx | null = null;
let refreshTimer: number | undefined;

/** The API base in a browser: the page's origin (served at /admin/), or `?api=<url>`. */
function browserBase(): string {
  const fromQuery = new URLSearchParams(location.search).get('api');
  if (fromQuery) return normalizeBase(fromQuery);
  // `vite dev` serves the page on its own port: talk to config/dev.toml's admin listener
  if (import.meta.env.DEV) return 'http://127.0.0.1:15672';
  return location.protocol.startsWith('http') ? location.origin : 'http://127.0.0.1:15672';
}

function saveConnection(c: Connection | null): void {
  if (c) sessionStorage.setItem(SESSION_KEY, JSON.stringify(c));
  else sessionStorage.removeItem(SESSION_KEY);
}

function loadConnection(): Connection | null {
  try {
    const c = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null') as Connection | null;
    return c?.base && c.token ? c : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Connect screen

async function boot(): Promise<void> {
  const saved = loadConnection();
  if (saved) {
    const err = await tryConnect(saved);
    if (!err) return;
    saveConnection(null);
    return showLogin(err);
  }
  if (inTauri()) {
    let startup: Profile | null = null;
    try {
      startup = await profiles.startup();
    } catch (e) {
      console.warn('startup_profile failed', e);
    }
    if (startup) {
      const err = await tryConnect({ base: normalizeBase(startup.url), token: startup.token, name: startup.name });
      if (!err) return;
      return showLogin(`${startup.name}: ${err}`);
    }
  }
  showLogin();
}

/** Checks the token with GET /api/overview; returns an error text, or null once the shell is up. */
async function tryConnect(c: Connection): Promise<string | null> {
  const api = new Api(c.base, c.token);
  let overview;
  try {
    overview = await api.overview();
  } catch (e) {
    if (e instanceof ApiError) {
      if (e.status === 401) return `401 Unauthorized — ${e.message || 'the server refused this token'}`;
      return e.describe();
    }
    return String(e);
  }
  saveConnection(c);
  startShell(c, api, overview);
  return null;
}

function showLogin(error?: string): void {
  teardown();
  clear(root);
  const errorBox = h(
    'div',
    { class: 'login-error', 'data-testid': 'login-error', role: 'alert', hidden: !error },
    error ?? '',
  );
  const setError = (msg: string | null) => {
    errorBox.hidden = !msg;
    errorBox.textContent = msg ?? '';
  };
  const body = inTauri() ? tauriLogin(setError) : browserLogin(setError);
  root.append(
    h(
      'div',
      { class: 'login-page' },
      h(
        'div',
        { class: 'login-card', 'data-testid': 'login' },
        h('div', { class: 'brand big' }, logo(), h('span', {}, 'Herald'), h('small', {}, 'admin')),
        errorBox,
        body,
      ),
    ),
  );
  (root.querySelector('input[autofocus]') as HTMLInputElement | null)?.focus();
}

function browserLogin(setError: (m: string | null) => void): HTMLElement {
  const base = browserBase();
  const token = h('input', {
    type: 'password',
    id: 'token',
    name: 'token',
    'data-testid': 'token-input',
    placeholder: 'admin token',
    autocomplete: 'current-password',
    autofocus: true,
    required: true,
  });
  const server = h('input', { type: 'url', id: 'server', 'data-testid': 'server-input', value: base });
  const submit = h('button', { class: 'btn primary wide', type: 'submit', 'data-testid': 'login-submit' }, 'Connect');
  return h(
    'form',
    {
      class: 'login-form',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        submit.disabled = true;
        submit.textContent = 'Connecting…';
        setError(null);
        const err = await tryConnect({
          base: normalizeBase(server.value || base),
          token: token.value.trim(),
          name: '',
        });
        if (err) {
          submit.disabled = false;
          submit.textContent = 'Connect';
          setError(err);
          token.select();
        }
      },
    },
    h(
      'label',
      { for: 'token' },
      'Bearer token',
      h('span', { class: 'hint' }, 'one of [admin] tokens in the server config'),
    ),
    token,
    h('details', { class: 'advanced' }, h('summary', {}, 'Server'), server),
    submit,
  );
}

function tauriLogin(setError: (m: string | null) => void): HTMLElement {
  const list = h('ul', { class: 'profiles', 'data-testid': 'profiles' });
  const name = h('input', { id: 'p-name', 'data-testid': 'profile-name', placeholder: 'production', required: true });
  const url = h('input', {
    id: 'p-url',
    'data-testid': 'profile-url',
    placeholder: 'http://127.0.0.1:15672',
    required: true,
    value: 'http://127.0.0.1:15672',
  });
  const token = h('input', {
    id: 'p-token',
    type: 'password',
    'data-testid': 'profile-token',
    placeholder: 'admin token',
    required: true,
  });
  const connectTo = async (p: Profile, btn?: HTMLButtonElement) => {
    setError(null);
    if (btn) btn.disabled = true;
    const err = await tryConnect({ base: normalizeBase(p.url), token: p.token, name: p.name });
    if (err) {
      if (btn) btn.disabled = false;
      setError(`${p.name}: ${err}`);
    }
  };
  const render = (ps: Profile[]) => {
    clear(list);
    if (!ps.length) list.append(h('li', { class: 'muted' }, 'No saved connections yet.'));
    for (const p of ps) {
      const go = h(
        'button',
        { class: 'btn primary small', 'data-testid': 'profile-connect', onclick: () => void connectTo(p, go) },
        'Connect',
      );
      list.append(
        h(
          'li',
          { 'data-profile': p.name },
          h('div', { class: 'profile-main' }, h('strong', {}, p.name), h('span', { class: 'muted' }, p.url)),
          h(
            'div',
            { class: 'profile-actions' },
            h(
              'button',
              {
                class: 'btn small',
                onclick: () => {
                  name.value = p.name;
                  url.value = p.url;
                  token.value = p.token;
                },
              },
              'Edit',
            ),
            h(
              'button',
              {
                class: 'btn small danger-text',
                'data-testid': 'profile-delete',
                onclick: async () => {
                  try {
                    render(await profiles.remove(p.name));
                  } catch (e) {
                    setError(describeInvokeError(e));
                  }
                },
              },
              'Delete',
            ),
            go,
          ),
        ),
      );
    }
  };
  profiles.list().then(render, (e) => setError(`profiles: ${describeInvokeError(e)}`));
  const form = h(
    'form',
    {
      class: 'login-form',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        setError(null);
        const p: Profile = { name: name.value.trim(), url: normalizeBase(url.value), token: token.value.trim() };
        try {
          render(await profiles.save(p));
        } catch (err) {
          setError(describeInvokeError(err));
          return;
        }
        if ((e as SubmitEvent).submitter?.dataset.connect) await connectTo(p);
      },
    },
    h('h3', {}, 'Add or edit a connection'),
    h('label', { for: 'p-name' }, 'Name'),
    name,
    h('label', { for: 'p-url' }, 'Admin API URL'),
    url,
    h('label', { for: 'p-token' }, 'Bearer token'),
    token,
    h(
      'div',
      { class: 'row-actions' },
      h('button', { class: 'btn', type: 'submit', 'data-testid': 'profile-save' }, 'Save'),
      h(
        'button',
        { class: 'btn primary', type: 'submit', 'data-connect': '1', 'data-testid': 'profile-save-connect' },
        'Save & connect',
      ),
    ),
  );
  return h('div', {}, h('h3', {}, 'Connections'), list, form);
}

function logo(): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'logo');
  svg.innerHTML =
    '<circle cx="12" cy="12" r="3.2" fill="currentColor"/><path d="M6.3 6.3a8 8 0 0 0 0 11.4M17.7 6.3a8 8 0 0 1 0 11.4M3.5 3.5a12 12 0 0 0 0 17M20.5 3.5a12 12 0 0 1 0 17" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round"/>';
  return svg;
}

// ---------------------------------------------------------------------------
// Shell

const ROUTES: Record<string, { title: string; mount: (ctx: Ctx) => View }> = {
  overview: { title: 'Overview', mount: mountOverview },
  users: { title: 'Online users', mount: mountUsers },
  queues: { title: 'Queues', mount: mountQueues },
  publish: { title: 'Publish', mount: mountPublish },
  nodes: { title: 'Nodes', mount: mountNodes },
};

function teardown(): void {
  stream?.stop();
  stream = null;
  currentView?.destroy();
  currentView = null;
  ctx = null;
  clearInterval(refreshTimer);
  window.removeEventListener('hashchange', route);
}

const STREAM_LABEL: Record<StreamState, string> = {
  connecting: 'connecting',
  live: 'live',
  offline: 'reconnecting',
  unauthorized: 'token refused',
};

function startShell(conn: Connection, api: Api, overview: import('./types').Overview): void {
  teardown();
  const bus = new Bus<Events>();
  const c: Ctx = { api, bus, overview, samples: [], historyIntervalMs: 1000, streamState: 'connecting' };
  ctx = c;

  const statusDot = h('span', { class: 'status-dot' });
  const statusText = h('span', {}, 'connecting');
  const status = h(
    'div',
    { class: 'stream-status', 'data-testid': 'stream-status', 'data-state': 'connecting', title: 'live stream' },
    statusDot,
    statusText,
  );
  const nodeLabel = h('span', { class: 'node-name', 'data-testid': 'node-name' }, overview.node);
  const nav = h('nav', { class: 'tabs' });
  for (const [key, r] of Object.entries(ROUTES))
    nav.append(h('a', { href: `#/${key}`, 'data-route': key, 'data-testid': `nav-${key}` }, r.title));
  const main = h('main', { class: 'view', id: 'view' });
  clear(root);
  root.append(
    h(
      'div',
      { class: 'shell' },
      h(
        'header',
        { class: 'topbar' },
        h('div', { class: 'brand' }, logo(), h('span', {}, 'Herald')),
        nodeLabel,
        nav,
        h('div', { class: 'spacer' }),
        status,
        h('span', { class: 'conn-label muted', title: conn.base }, conn.name || conn.base.replace(/^https?:\/\//, '')),
        h('button', { class: 'btn small', 'data-testid': 'logout', onclick: () => logout() }, 'Disconnect'),
      ),
      main,
    ),
  );

  let wasOffline = false;
  stream = new LiveStream(api, {
    overview: (e) => {
      c.overview = e.overview;
      bus.emit('overview', e.overview);
      if (e.sample && (!c.samples.length || e.sample.t > c.samples[c.samples.length - 1].t)) {
        c.samples.push(e.sample);
        if (c.samples.length > MAX_SAMPLES) c.samples.splice(0, c.samples.length - MAX_SAMPLES);
        bus.emit('sample', e.sample);
      }
      setNode(e.overview.node);
    },
    session: (e) => bus.emit('session', e),
    presence: (e) => bus.emit('presence', e),
    lag: (n) => bus.emit('lag', n),
    state: (s, detail) => {
      c.streamState = s;
      status.dataset.state = s;
      statusText.textContent = STREAM_LABEL[s];
      status.title = detail ? `live stream: ${detail}` : 'live stream';
      if (s === 'unauthorized') {
        saveConnection(null);
        showLogin('401 Unauthorized — the server no longer accepts this token');
        return;
      }
      if (s === 'offline') wasOffline = true;
      if (s === 'live' && wasOffline) {
        wasOffline = false;
        void loadHistory(c); // fill the gap the outage left in the charts
        bus.emit('lag', 0); // and make lists refetch
      }
      bus.emit('stream', s);
    },
  });
  stream.start();
  void loadHistory(c);

  // Without the stream, keep the numbers fresh by polling.
  refreshTimer = window.setInterval(async () => {
    if (c.streamState === 'live' || ctx !== c) return;
    try {
      c.overview = await api.overview();
      bus.emit('overview', c.overview);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401)
        showLogin('401 Unauthorized — the server no longer accepts this token');
    }
  }, 2000);

  function setNode(n: string) {
    if (nodeLabel.textContent !== n) nodeLabel.textContent = n;
  }

  window.addEventListener('hashchange', route);
  if (!ROUTES[routeName()]) location.hash = '#/overview';
  route();
}

async function loadHistory(c: Ctx): Promise<void> {
  try {
    const hist = await c.api.history();
    if (ctx !== c) return;
    c.historyIntervalMs = hist.interval_ms || 1000;
    const last = hist.samples.length ? hist.samples[hist.samples.length - 1].t : 0;
    // keep live samples newer than the history answer
    const newer = c.samples.filter((s) => s.t > last);
    c.samples = [...hist.samples, ...newer].slice(-MAX_SAMPLES);
    c.bus.emit('samples', c.samples);
  } catch (e) {
    console.warn('history', e);
  }
}

function routeName(): string {
  return location.hash.replace(/^#\/?/, '').split(/[/?]/)[0] || 'overview';
}

function route(): void {
  if (!ctx) return;
  const name = ROUTES[routeName()] ? routeName() : 'overview';
  currentView?.destroy();
  const main = document.getElementById('view')!;
  clear(main);
  for (const a of document.querySelectorAll<HTMLAnchorElement>('nav.tabs a'))
    a.classList.toggle('active', a.dataset.route === name);
  document.title = `${ROUTES[name].title} · Herald admin`;
  currentView = ROUTES[name].mount(ctx);
  main.dataset.view = name;
  main.append(currentView.el);
}

function logout(): void {
  saveConnection(null);
  showLogin();
}

void boot();
