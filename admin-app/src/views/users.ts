// Online users: project filter, uid search, presence, sessions per user
// (expandable), kick a user or one session. A virtual list over GET /api/users
// pages, so 20,000 users cost what the ~20 visible rows cost; stream events
// refetch the visible pages (throttled).

import { ApiError } from '../api';
import type { Ctx, View } from '../context';
import { clear, confirmDialog, debounce, fmtInt, fmtSince, fmtTime, h, plural, setText, toast } from '../dom';
import type { OnlineUser, Project, Session } from '../types';
import { VirtualList } from '../virtual-list';

const ROW_H = 44;
const SESSION_H = 30;
const PER_PAGE = 100;

// `online` is the engine's name (docs/admin-api.md); `available`/`busy` are XMPP/older spellings.
const PRESENCE_CLASS: Record<string, string> = {
  online: 'p-online',
  available: 'p-online',
  busy: 'p-busy',
  chat: 'p-online',
  away: 'p-away',
  xa: 'p-away',
  dnd: 'p-busy',
  offline: 'p-offline',
};
const PRESENCE_LABEL: Record<string, string> = {
  available: 'available',
  online: 'available',
  busy: 'do not disturb',
  chat: 'free to chat',
  away: 'away',
  xa: 'extended away',
  dnd: 'do not disturb',
  offline: 'offline',
};

function count(v: number | string[] | undefined): number {
  return Array.isArray(v) ? v.length : Number(v) || 0;
}

function transportsOf(u: OnlineUser): string[] {
  const m = new Map<string, number>();
  for (const s of u.sessions) {
    const k = `${s.protocol}/${s.transport}`;
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return [...m.entries()].map(([k, n]) => (n > 1 ? `${k} ×${n}` : k));
}

export function mountUsers(ctx: Ctx): View {
  const { api } = ctx;
  let project = '';
  let query = '';

  const projectSel = h(
    'select',
    { 'data-testid': 'project-filter', 'aria-label': 'project' },
    h('option', { value: '' }, 'All projects'),
  );
  const search = h('input', {
    type: 'search',
    placeholder: 'Search uid…',
    'data-testid': 'user-search',
    'aria-label': 'search uid',
  });
  const totalEl = h('span', { class: 'count', 'data-testid': 'users-total' }, '…');
  const errorEl = h('div', { class: 'inline-error', hidden: true, 'data-testid': 'users-error' });
  const viewport = h('div', { class: 'vl-viewport', 'data-testid': 'users-list' });
  const empty = h('div', { class: 'empty', hidden: true }, 'No users online.');

  const el = h(
    'div',
    { class: 'users list-page', 'data-testid': 'users-view' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Online users'), totalEl),
    h('div', { class: 'toolbar' }, projectSel, search, h('div', { class: 'spacer' }), legend()),
    errorEl,
    h(
      'div',
      { class: 'table users-table' },
      h(
        'div',
        { class: 'thead ucols' },
        h('span', {}),
        h('span', {}, 'User'),
        h('span', {}, 'Presence'),
        h('span', { class: 'num' }, 'Sessions'),
        h('span', {}, 'Protocol / transport'),
        h('span', {}, 'Connected for'),
        h('span', {}),
      ),
      viewport,
      empty,
    ),
  );

  const showError = (e: Error | null) => {
    errorEl.hidden = !e;
    errorEl.textContent = e ? (e instanceof ApiError ? e.describe() : e.message) : '';
  };

  const list: VirtualList<OnlineUser> = new VirtualList<OnlineUser>({
    viewport,
    rowHeight: ROW_H,
    perPage: PER_PAGE,
    key: (u) => u.uid,
    extraHeight: (u) => SESSION_H * (u.sessions.length + 1) + 12,
    fetchPage: async (page, per_page, signal) => {
      const r = await api.users({ project: project || undefined, q: query || undefined, page, per_page }, signal);
      showError(null);
      return r;
    },
    onTotal: (n) => {
      totalEl.textContent = `${fmtInt(n)} online`;
      empty.hidden = n > 0;
    },
    onError: showError,
    render: renderRow,
  });

  // Rows are updated in place (a live event must not swap a button out from
  // under a click); the sessions table is rebuilt only when the sessions change.
  type Refs = {
    uid: string;
    chev: HTMLElement;
    dot: HTMLElement;
    state: HTMLElement;
    status: HTMLElement;
    count: HTMLElement;
    chips: HTMLElement;
    since: HTMLElement;
    kick: HTMLButtonElement;
    sessions: HTMLElement;
  };
  type URow = HTMLElement & { _u?: OnlineUser; _refs?: Refs };

  function buildRow(row: URow, uid: string): Refs {
    clear(row);
    const kick = h(
      'button',
      {
        class: 'btn small danger',
        'data-testid': 'kick-user',
        'data-uid': uid,
        title: `close all of ${uid}'s sessions`,
      },
      'Kick',
    );
    kick.addEventListener('click', async (e) => {
      e.stopPropagation();
      const u = row._u;
      if (!u) return;
      const ok = await confirmDialog(
        `Kick ${u.uid}?`,
        u.sessions.length === 1
          ? `${u.uid}'s session will be closed.`
          : `All ${u.sessions.length} sessions of ${u.uid} will be closed.`,
        'Kick',
      );
      if (!ok) return;
      try {
        const r = await api.kickUser(u.uid);
        toast(`Kicked ${u.uid}: ${plural(r.kicked, 'session')} closed`);
      } catch (err) {
        toast(err instanceof ApiError ? err.describe() : String(err), 'error');
      }
      list.refresh();
    });
    const refs: Refs = {
      uid,
      chev: chevron(),
      dot: h('span', { class: 'dot', 'data-testid': 'presence-dot' }),
      state: h('span', { class: 'state' }),
      status: h('span', { class: 'status-text' }),
      count: h('span', { class: 'num', 'data-testid': 'session-count' }),
      chips: h('span', { class: 'chips' }),
      since: h('span', { class: 'muted' }),
      kick,
      sessions: h('div', { class: 'sessions', 'data-testid': 'user-sessions' }),
    };
    row.append(
      h(
        'div',
        { class: 'ucols main', title: 'show sessions', onclick: () => list.toggle(uid) },
        refs.chev,
        h('span', { class: 'uid' }, refs.dot, h('strong', {}, uid)),
        h('span', { class: 'presence' }, refs.state, refs.status),
        refs.count,
        refs.chips,
        refs.since,
        h('span', { class: 'actions' }, kick),
      ),
      refs.sessions,
    );
    return refs;
  }

  function renderRow(row: URow, u: OnlineUser | undefined): void {
    if (!u) {
      row._u = undefined;
      row._refs = undefined;
      delete row.dataset.uid;
      clear(row);
      row.append(
        h(
          'div',
          { class: 'ucols placeholder' },
          h('span', {}),
          h('span', { class: 'skeleton' }),
          h('span', { class: 'skeleton short' }),
        ),
      );
      return;
    }
    let r = row._refs;
    if (!r || r.uid !== u.uid) r = row._refs = buildRow(row, u.uid);
    row._u = u;
    row.dataset.uid = u.uid;
    const open = list.expanded.has(u.uid);
    const state = String(u.presence?.state ?? 'available');
    r.chev.classList.toggle('open', open);
    r.dot.className = `dot ${PRESENCE_CLASS[state] ?? 'p-online'}`;
    r.dot.dataset.state = state;
    r.dot.title = PRESENCE_LABEL[state] ?? state;
    row.dataset.presence = state;
    setText(r.state, PRESENCE_LABEL[state] ?? state);
    const status = u.presence?.status ? ` — ${u.presence.status}` : '';
    setText(r.status, status);
    r.status.title = u.presence?.status ?? '';
    setText(r.count, String(u.sessions.length));
    const chips = transportsOf(u);
    const csig = chips.join('|');
    if (r.chips.dataset.sig !== csig) {
      r.chips.dataset.sig = csig;
      clear(r.chips);
      r.chips.append(...chips.map((t) => h('span', { class: 'chip' }, t)));
    }
    const earliest = u.sessions.reduce((m, s) => (s.connected_at && s.connected_at < m ? s.connected_at : m), Infinity);
    setText(r.since, Number.isFinite(earliest) ? fmtSince(earliest) : '–');
    r.since.title = Number.isFinite(earliest) ? fmtTime(earliest) : '';
    r.sessions.hidden = !open;
    const ssig = open ? JSON.stringify(u.sessions) + Math.floor(Date.now() / 10000) : '';
    if (r.sessions.dataset.sig !== ssig) {
      r.sessions.dataset.sig = ssig;
      clear(r.sessions);
      if (open) fillSessions(r.sessions, u.sessions);
    }
  }

  function fillSessions(host: HTMLElement, sessions: Session[]): void {
    host.append(
      h(
        'div',
        { class: 'scols shead' },
        h('span', {}, 'Session'),
        h('span', {}, 'Protocol'),
        h('span', {}, 'Transport'),
        h('span', {}, 'Peer'),
        h('span', {}, 'Resource'),
        h('span', {}, 'Vhost'),
        h('span', {}, 'Connected'),
        h('span', {}),
      ),
      ...sessions.map((s) => {
        const kick = h(
          'button',
          { class: 'btn tiny danger-text', 'data-testid': 'kick-session', 'data-session': String(s.id) },
          'Kick session',
        );
        kick.addEventListener('click', async (e) => {
          e.stopPropagation();
          const ok = await confirmDialog(
            `Kick session ${s.id}?`,
            `${s.uid}'s ${s.protocol}/${s.transport} session${s.peer ? ` from ${s.peer}` : ''} will be closed.`,
            'Kick',
          );
          if (!ok) return;
          try {
            await api.kickSession(s.id);
            toast(`Session ${s.id} closed`);
          } catch (err) {
            toast(err instanceof ApiError ? err.describe() : String(err), 'error');
          }
          list.refresh();
        });
        return h(
          'div',
          { class: 'scols srow', 'data-session': String(s.id) },
          h('span', { class: 'mono' }, String(s.id)),
          h('span', {}, s.protocol),
          h('span', {}, s.transport),
          h('span', { class: 'mono' }, s.peer ?? '–'),
          h('span', {}, s.resource ?? '–'),
          h('span', { class: 'mono' }, s.vhost ?? '–'),
          h('span', { title: fmtTime(s.connected_at) }, fmtSince(s.connected_at)),
          h('span', { class: 'actions' }, kick),
        );
      }),
    );
  }

  // Live updates: at most one refetch of the visible pages per 300 ms.
  let pending: number | undefined;
  const refreshSoon = () => {
    if (pending !== undefined) return;
    pending = window.setTimeout(() => {
      pending = undefined;
      list.refresh();
    }, 300);
  };
  const offs = [
    ctx.bus.on('session', refreshSoon),
    ctx.bus.on('presence', refreshSoon),
    ctx.bus.on('lag', refreshSoon),
  ];
  // "connected for" ages; redraw the visible rows now and then
  const tick = window.setInterval(() => list.redraw(), 10000);

  const applySearch = debounce(() => {
    query = search.value.trim();
    list.reset();
  }, 200);
  search.addEventListener('input', applySearch);
  projectSel.addEventListener('change', () => {
    project = projectSel.value;
    list.reset();
  });

  const loadProjects = async () => {
    try {
      const ps: Project[] = await api.projects();
      const sig = JSON.stringify(ps.map((p) => [p.id, p.name, count(p.online), count(p.members)]));
      if (projectSel.dataset.sig === sig) return; // rebuilding would close an open dropdown
      projectSel.dataset.sig = sig;
      const cur = projectSel.value;
      clear(projectSel);
      projectSel.append(h('option', { value: '' }, 'All projects'));
      for (const p of ps) {
        const label = `${p.name && p.name !== p.id ? `${p.name} (${p.id})` : p.id} · ${count(p.online)}/${count(p.members)} online`;
        projectSel.append(h('option', { value: p.id }, label));
      }
      projectSel.value = cur;
    } catch (e) {
      console.warn('projects', e);
    }
  };
  void loadProjects();
  const projTimer = window.setInterval(loadProjects, 10000);

  list.reset();

  return {
    el,
    destroy() {
      offs.forEach((f) => f());
      clearTimeout(pending);
      clearInterval(tick);
      clearInterval(projTimer);
      applySearch.cancel();
      list.destroy();
    },
  };
}

function chevron(): HTMLElement {
  const el = h('span', { class: 'chev', 'aria-hidden': 'true' });
  el.innerHTML =
    '<svg viewBox="0 0 10 10" width="10" height="10"><path d="M3.5 1.5 7 5l-3.5 3.5" fill="none" stroke="currentColor" stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round"/></svg>';
  return el;
}

function legend(): HTMLElement {
  return h(
    'div',
    { class: 'legend' },
    [
      ['p-online', 'available'],
      ['p-away', 'away'],
      ['p-busy', 'busy'],
      ['p-offline', 'offline'],
    ].map(([c, l]) => h('span', {}, h('span', { class: `dot ${c}` }), l)),
  );
}
