// The board page. No build step: an ES module plus the UMD builds of
// @stomp/stompjs (window.StompJs) and sockjs-client (window.SockJS).
//
// 1. Sign in = a STOMP CONNECT to Herald with the typed username/password. Herald asks
//    the Express app's /auth/user; a wrong password comes back as a STOMP ERROR frame.
// 2. Subscribe (with receipts) to the project, its presence and my feed, then load the
//    board and who is online from the app's /api (HTTP Basic, same credentials).
// 3. Actions are POSTs to the app; what they change comes back as pushes from Herald.
// 4. A lost connection comes back by itself (stompjs reconnects); the page resubscribes
//    to the project and the feed from the last x-stream-offset + 1 and x-stream-epoch it
//    saw, so Herald replays what it missed, in order. Only when Herald says it could not
//    (RECEIPT x-recovered: false: away longer than the history keeps, or the history was
//    lost) does the board reload from the app. js-examples/public/recovery.html is the
//    same recipe on its own.

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...children.filter((c) => c != null));
  return e;
};

const COLORS = { alice: '#7c3aed', bob: '#0891b2', carol: '#db2777', dave: '#ea580c', eve: '#16a34a' };
const STATE_LABEL = {
  online: 'online',
  away: 'away',
  dnd: 'do not disturb',
  busy: 'busy',
  xa: 'away',
  chat: 'online',
  offline: 'offline',
};

// Everything the page knows; tests read it as window.demo.
const demo = (window.demo = {
  phase: 'login', // login | connecting | ready
  uid: null,
  transport: null,
  board: null,
  presence: {}, // uid → state ('offline' when absent)
  notifications: [],
  unread: 0,
  activity: [],
  errors: [],
  received: { project: 0, presence: 0, feed: 0 },
  positions: {}, // destination → { epoch, offset } of the last push seen (project, feed)
  resumes: [], // { destination, recovered } for every resubscribe after a reconnect
  boardLoads: 0, // GET /api/board calls: 1 at sign-in, +1 per failed recovery
});

let config = null;
let client = null;
let auth = null; // 'Basic …' for the app's /api

// ---------------------------------------------------------------- sign in

async function loadConfig() {
  config = await (await fetch('/api/config')).json();
  document.title = `${config.project.name} · Herald demo`;
}

$('#login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const uid = $('#login-user').value.trim();
  const password = $('#login-pass').value;
  const transport = $('#login-transport').value;
  showLoginError(null);
  $('#login-submit').disabled = true;
  $('#login-submit').textContent = 'Signing in…';
  try {
    if (!config) await loadConfig();
    await connect(uid, password, transport);
  } catch (err) {
    demo.phase = 'login';
    demo.errors.push(err.message);
    showLoginError(err.message);
    if (client) await client.deactivate().catch(() => {});
    client = null;
  } finally {
    $('#login-submit').disabled = false;
    $('#login-submit').textContent = 'Sign in';
  }
});

function showLoginError(text) {
  const p = $('#login-error');
  p.hidden = !text;
  p.textContent = text || '';
}

function connect(uid, password, transport) {
  demo.phase = 'connecting';
  const host = location.hostname;
  const port = config.herald.httpPort;
  const opts = {
    connectHeaders: { login: uid, passcode: password, host: '/' },
    // Ride out network blips. stompjs takes the delay for the next attempt when it
    // connects, before onConnect runs: setting it there would come too late, so it is
    // set here, and a refused sign-in deactivates the client (the submit handler) first.
    reconnectDelay: 3000,
    heartbeatIncoming: 10000,
    heartbeatOutgoing: 10000,
    debug: () => {},
  };
  if (transport === 'sockjs')
    opts.webSocketFactory = () => new SockJS(`http://${host}:${port}${config.herald.sockjsPath}`);
  else opts.brokerURL = `ws://${host}:${port}${config.herald.wsPath}`;
  client = new StompJs.Client(opts);

  return new Promise((resolve, reject) => {
    let signedIn = false;
    client.onConnect = async () => {
      try {
        await onConnected(uid, password, transport);
        if (!signedIn) {
          signedIn = true;
          resolve();
        }
      } catch (err) {
        if (!signedIn) reject(err);
        else toast(`Reconnect failed: ${err.message}`);
      }
    };
    client.onStompError = (frame) => {
      // Herald answers like RabbitMQ: message "Bad CONNECT", body "Access refused for user 'x'".
      const detail = (frame.body || '').trim();
      const msg = [frame.headers.message, detail].filter(Boolean).join(': ') || 'refused';
      if (!signedIn) {
        reject(
          new Error(
            /refused|denied/i.test(msg)
              ? `Sign-in refused — wrong username or password (${detail || msg})`
              : `Herald error: ${msg}`,
          ),
        );
      } else {
        demo.errors.push(msg);
        toast(`Herald: ${msg}`);
      }
    };
    client.onWebSocketClose = () => {
      setConn(false);
      if (!signedIn) reject(new Error(`Cannot reach Herald at ${host}:${port} (${transport})`));
    };
    client.activate();
  });
}

async function onConnected(uid, password, transport) {
  demo.uid = uid;
  demo.transport = transport;
  auth = `Basic ${btoa(unescape(encodeURIComponent(`${uid}:${password}`)))}`;
  const p = config.project.id;
  if (!config.project.members.includes(uid)) throw new Error(`${uid} is not a member of ${config.project.name}`);
  // Subscribe first, wait for Herald's receipts, then load the state: nothing is missed.
  // After a reconnect the project and the feed resume where they stopped (see 4. above).
  const [project, , feed] = await Promise.all([
    subscribe(`/exchange/project/${p}`, onProjectEvent),
    subscribe(`/exchange/presence/${p}.*`, onPresenceEvent, false),
    subscribe(`/exchange/feed/${uid}`, onFeed),
  ]);
  if (feed.resumed && !feed.recovered) toast('Reconnected: notifications sent meanwhile may be missing');
  // Presence has no history: who is online now always comes from the app.
  const [board, online] = await Promise.all([
    project.recovered ? null : api('GET', '/api/board'),
    api('GET', '/api/online'),
  ]);
  if (board) {
    demo.board = board;
    demo.boardLoads++;
    // The board has everything published before it was asked for: resume from there.
    advance(`/exchange/project/${p}`, project.top);
  }
  if (!feed.resumed) advance(`/exchange/feed/${uid}`, feed.top); // `next`: nothing to replay
  demo.presence = { ...online.states };
  for (const u of online.online) demo.presence[u] = demo.presence[u] || 'online';
  showApp();
  setConn(true);
  demo.phase = 'ready';
}

// Resolves on Herald's receipt with { resumed, recovered, top }: resumed when the page
// had a position in this stream and asked to continue from it; recovered when Herald
// replays everything since (x-recovered: true), so the page's state needs no reload;
// top: where the stream is now. The first time, `x-stream-offset: next` (live from now
// on) gets that position. Presence has no history: a plain SUBSCRIBE.
function subscribe(destination, handler, stream = true) {
  return new Promise((resolve, reject) => {
    const receipt = `sub-${Math.random().toString(36).slice(2)}`;
    const pos = demo.positions[destination];
    const headers = { receipt };
    if (stream) headers['x-stream-offset'] = pos ? String(pos.offset + 1) : 'next';
    if (pos) headers['x-stream-epoch'] = pos.epoch;
    const timer = setTimeout(() => reject(new Error(`no receipt for ${destination}`)), 8000);
    client.watchForReceipt(receipt, (frame) => {
      clearTimeout(timer);
      const recovered = !!pos && frame.headers['x-recovered'] === 'true';
      if (pos) demo.resumes.push({ destination, recovered });
      const top = { epoch: frame.headers['x-stream-epoch'], offset: Number(frame.headers['x-stream-offset']) };
      resolve({ resumed: !!pos, recovered, top });
    });
    client.subscribe(
      destination,
      (m) => {
        advance(destination, { epoch: m.headers['x-stream-epoch'], offset: Number(m.headers['x-stream-offset']) });
        try {
          handler(JSON.parse(m.body), m);
        } catch (err) {
          console.warn('bad push on', destination, err, m.body);
        }
      },
      headers,
    );
  });
}

// Positions only move forward within an epoch (after a failed recovery Herald also
// replays what it still has, which may be older than what a reload brought).
function advance(destination, at) {
  if (!Number.isInteger(at.offset) || !at.epoch) return;
  const pos = demo.positions[destination];
  if (!pos || pos.epoch !== at.epoch || at.offset > pos.offset) demo.positions[destination] = at;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { authorization: auth, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || `${method} ${path}: ${res.status}`);
  return data;
}

$('#logout').addEventListener('click', async () => {
  if (client) await client.deactivate().catch(() => {});
  client = null;
  location.reload();
});

// ---------------------------------------------------------------- pushes

function onProjectEvent(ev) {
  demo.received.project++;
  if (!demo.board) return;
  if (ev.type === 'card-moved' || ev.type === 'card-added') {
    upsertCard(ev.card);
    if (ev.version) demo.board.version = Math.max(demo.board.version, ev.version);
    const text =
      ev.type === 'card-moved'
        ? `${ev.by} moved “${ev.card.title}” ${columnTitle(ev.from)} → ${columnTitle(ev.to)}`
        : `${ev.by} added “${ev.card.title}”`;
    addActivity(text);
    renderBoard(ev.card.id);
  } else {
    addActivity(typeof ev.text === 'string' ? ev.text : JSON.stringify(ev));
  }
}

function onPresenceEvent(ev) {
  demo.received.presence++;
  if (!ev.uid) return;
  if (ev.state === 'offline') delete demo.presence[ev.uid];
  else demo.presence[ev.uid] = ev.state;
  renderMembers();
}

function onFeed(ev) {
  demo.received.feed++;
  const n = {
    type: ev.type || 'message',
    from: ev.from || null,
    text: ev.text || JSON.stringify(ev),
    at: ev.at || new Date().toISOString(),
  };
  demo.notifications.unshift(n);
  demo.unread++;
  renderNotifications();
  toast(n.text);
}

function upsertCard(card) {
  const cards = demo.board.cards;
  const i = cards.findIndex((c) => c.id === card.id);
  if (i >= 0) cards.splice(i, 1);
  cards.push(card);
}

// ---------------------------------------------------------------- actions

async function moveCard(id, column) {
  try {
    const { card } = await api('POST', `/api/cards/${encodeURIComponent(id)}/move`, { column });
    upsertCard(card); // the push confirms it for everyone (and for us)
    renderBoard();
  } catch (err) {
    toast(`Could not move the card: ${err.message}`);
  }
}

$('#my-presence').addEventListener('change', async (e) => {
  try {
    await api('POST', '/api/presence', { state: e.target.value });
  } catch (err) {
    toast(`Could not change status: ${err.message}`);
  }
});

$('#new-card').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    await api('POST', '/api/cards', { title: $('#new-title').value, assignee: $('#new-assignee').value || null });
    $('#new-title').value = '';
  } catch (err) {
    toast(`Could not add the card: ${err.message}`);
  }
});

async function poke(to) {
  try {
    const { delivered } = await api('POST', '/api/poke', { to });
    toast(delivered ? `Poked ${to}` : `${to} is not connected; nobody got the poke`);
  } catch (err) {
    toast(`Could not poke ${to}: ${err.message}`);
  }
}

$('#bell').addEventListener('click', () => {
  const panel = $('#notifications');
  panel.hidden = !panel.hidden;
  if (!panel.hidden) {
    demo.unread = 0;
    renderNotifications();
  }
});

// ---------------------------------------------------------------- rendering

function showApp() {
  $('#login-screen').hidden = true;
  $('#app-screen').hidden = false;
  $('#project-name').textContent = config.project.name;
  $('#me').textContent = demo.uid;
  $('#feed-dest').textContent = `/exchange/feed/${demo.uid}`;
  const sel = $('#new-assignee');
  sel.replaceChildren(
    el('option', { value: '' }, 'Unassigned'),
    ...config.project.members.map((m) => el('option', { value: m, selected: m === demo.uid }, m)),
  );
  renderBoard();
  renderMembers();
  renderNotifications();
}

function avatar(uid) {
  return el(
    'span',
    { class: 'avatar', style: `background:${COLORS[uid] || '#64748b'}`, title: uid },
    uid ? uid[0] : '?',
  );
}

function columnTitle(id) {
  const c = demo.board?.columns.find((x) => x.id === id);
  return c ? c.title : id;
}

function renderBoard(flashId) {
  const { columns, cards } = demo.board;
  const root = $('#board');
  root.replaceChildren(
    ...columns.map((col, ci) => {
      const mine = cards.filter((c) => c.column === col.id);
      const list = el(
        'div',
        { class: 'cards' },
        ...mine.map((card) =>
          el(
            'article',
            {
              class: `card${card.assignee === demo.uid ? ' mine' : ''}${card.id === flashId ? ' flash' : ''}`,
              draggable: 'true',
              dataset: { card: card.id },
              ondragstart: (e) => e.dataTransfer.setData('text/plain', card.id),
            },
            el('div', { class: 'card-title' }, card.title),
            el(
              'div',
              { class: 'card-foot' },
              card.assignee ? avatar(card.assignee) : null,
              el('span', { class: 'who' }, card.assignee || 'unassigned'),
              el(
                'button',
                {
                  class: 'move-left',
                  type: 'button',
                  title: `Move to ${columns[ci - 1]?.title}`,
                  disabled: ci === 0,
                  onclick: () => moveCard(card.id, columns[ci - 1].id),
                },
                '‹',
              ),
              el(
                'button',
                {
                  class: 'move-right',
                  type: 'button',
                  title: `Move to ${columns[ci + 1]?.title}`,
                  disabled: ci === columns.length - 1,
                  onclick: () => moveCard(card.id, columns[ci + 1].id),
                },
                '›',
              ),
            ),
          ),
        ),
      );
      return el(
        'section',
        {
          class: 'column',
          dataset: { column: col.id },
          ondragover: (e) => {
            e.preventDefault();
            e.currentTarget.classList.add('drop');
          },
          ondragleave: (e) => e.currentTarget.classList.remove('drop'),
          ondrop: (e) => {
            e.preventDefault();
            e.currentTarget.classList.remove('drop');
            const id = e.dataTransfer.getData('text/plain');
            const card = demo.board.cards.find((c) => c.id === id);
            if (card && card.column !== col.id) moveCard(id, col.id);
          },
        },
        el(
          'div',
          { class: 'column-head' },
          el('span', {}, col.title),
          el('span', { class: 'count' }, String(mine.length)),
        ),
        list,
      );
    }),
  );
}

function stateOf(uid) {
  return demo.presence[uid] || 'offline';
}

function renderMembers() {
  const members = config.project.members;
  $('#members').replaceChildren(
    ...members.map((uid) =>
      el(
        'li',
        {
          class: 'member',
          dataset: { uid, state: stateOf(uid) },
          title: `${uid} — ${STATE_LABEL[stateOf(uid)] || stateOf(uid)}`,
        },
        avatar(uid),
        el('span', { class: `dot ${stateOf(uid)}` }),
      ),
    ),
  );
  $('#team').replaceChildren(
    ...members.map((uid) =>
      el(
        'li',
        { dataset: { uid, state: stateOf(uid) } },
        el('span', { class: `dot ${stateOf(uid)}` }),
        el('span', { class: 'name' }, uid === demo.uid ? `${uid} (you)` : uid),
        el('span', { class: 'state' }, STATE_LABEL[stateOf(uid)] || stateOf(uid)),
        uid === demo.uid
          ? null
          : el('button', { class: 'poke', type: 'button', dataset: { uid }, onclick: () => poke(uid) }, 'Poke'),
      ),
    ),
  );
  const mine = stateOf(demo.uid);
  $('#my-dot').className = `dot ${mine}`;
  if (['online', 'away', 'dnd'].includes(mine)) $('#my-presence').value = mine;
}

function renderNotifications() {
  const badge = $('#badge');
  badge.hidden = demo.unread === 0;
  badge.textContent = String(demo.unread);
  const list = $('#notification-list');
  if (!demo.notifications.length) list.replaceChildren(el('li', { class: 'empty' }, 'Nothing yet'));
  else
    list.replaceChildren(
      ...demo.notifications.map((n) => el('li', {}, n.text, el('time', {}, new Date(n.at).toLocaleTimeString()))),
    );
}

function addActivity(text) {
  demo.activity.unshift({ text, at: new Date().toISOString() });
  demo.activity.length = Math.min(demo.activity.length, 50);
  $('#activity').replaceChildren(
    ...demo.activity.map((a) => el('li', {}, el('time', {}, new Date(a.at).toLocaleTimeString()), a.text)),
  );
}

function setConn(up) {
  const s = $('#conn-state');
  s.className = `conn ${up ? 'up' : 'down'}`;
  s.textContent = up
    ? `connected to Herald as ${demo.uid} (${demo.transport === 'sockjs' ? 'SockJS' : 'WebSocket'})`
    : 'disconnected — reconnecting…';
}

function toast(text) {
  const t = el('div', { class: 'toast' }, text);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), 4000);
}

loadConfig().catch((err) => showLoginError(`Cannot load the app config: ${err.message}`));
