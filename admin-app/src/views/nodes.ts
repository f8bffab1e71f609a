// Nodes: the cluster as the node registry in Redis shows it (GET /api/cluster),
// refreshed every second while shown: per node alive, heartbeat age, sessions,
// users, rates, memory, version; cluster-wide users and sessions. On a single
// node, that node alone.

import { ApiError } from '../api';
import type { Ctx, View } from '../context';
import { clear, fmtInt, fmtRate, fmtSince, h, setText } from '../dom';
import type { ClusterInfo, ClusterNode } from '../types';

const REFRESH_MS = 1000;

function fmtBytes(n: number | null | undefined): string {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  if (n < 1024 * 1024) return `${Math.round(n / 1024)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

function fmtAge(ms: number): string {
  return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : fmtSince(Date.now() - ms);
}

const COLUMNS = [
  ['Node', ''],
  ['State', ''],
  ['Heartbeat', 'num'],
  ['Sessions', 'num'],
  ['Users', 'num'],
  ['Publish/s', 'num'],
  ['Deliver/s', 'num'],
  ['Memory', 'num'],
  ['Up', 'num'],
  ['Version', ''],
] as const;

function row(n: ClusterNode): HTMLTableRowElement {
  const cell = (testid: string, text: string, cls = 'num') => h('td', { class: cls, 'data-testid': testid }, text);
  return h(
    'tr',
    { 'data-node': n.name, 'data-alive': String(n.alive), class: n.alive ? '' : 'dead' },
    h(
      'td',
      { 'data-testid': 'node-cell-name' },
      h('span', { class: 'node-id' }, n.name),
      n.this ? h('span', { class: 'badge', title: 'the node this console talks to' }, 'this') : null,
      n.address ? h('div', { class: 'muted small' }, n.address) : null,
    ),
    h(
      'td',
      { 'data-testid': 'node-cell-state' },
      h('span', { class: `dot ${n.alive ? 'p-online' : 'p-offline'}` }),
      n.alive ? ' alive' : ' dead',
    ),
    cell('node-cell-age', fmtAge(n.heartbeat_age_ms)),
    cell('node-cell-sessions', fmtInt(n.sessions)),
    cell('node-cell-users', fmtInt(n.users)),
    cell('node-cell-publish', fmtRate(n.publish_rate)),
    cell('node-cell-deliver', fmtRate(n.deliver_rate)),
    cell('node-cell-memory', fmtBytes(n.rss_bytes)),
    cell('node-cell-up', n.started_ms ? fmtSince(n.started_ms) : '–'),
    cell('node-cell-version', n.version || '–', ''),
  );
}

export function mountNodes(ctx: Ctx): View {
  const { api } = ctx;
  const stat = (key: string, label: string) => {
    const v = h('div', { class: 'stat-value', 'data-testid': key }, '–');
    return [v, h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), v)] as const;
  };
  const [alive, aliveCard] = stat('cluster-nodes-alive', 'Nodes alive');
  const [users, usersCard] = stat('cluster-users-online', 'Users online');
  const [sessions, sessionsCard] = stat('cluster-sessions', 'Sessions');
  const [queues, queuesCard] = stat('cluster-queues', 'Queues (this node)');
  const mode = h('span', { class: 'count', 'data-testid': 'cluster-mode' }, '…');
  const errorEl = h('div', { class: 'inline-error', hidden: true, 'data-testid': 'nodes-error' });
  const body = h('tbody', { 'data-testid': 'nodes-list' });
  const el = h(
    'div',
    { class: 'nodes', 'data-testid': 'nodes-view' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Nodes'), mode),
    h('div', { class: 'stats stats-4' }, aliveCard, usersCard, sessionsCard, queuesCard),
    errorEl,
    h(
      'div',
      { class: 'panel' },
      h(
        'table',
        { class: 'nodes-table' },
        h('thead', {}, h('tr', {}, ...COLUMNS.map(([label, cls]) => h('th', { class: cls }, label)))),
        body,
      ),
    ),
    h(
      'p',
      { class: 'muted small' },
      'Numbers as of each node’s last heartbeat. A user with sessions on several nodes counts once per node.',
    ),
  );

  const render = (c: ClusterInfo) => {
    setText(
      mode,
      c.cluster ? `cluster · Redis ${c.redis ? 'connected' : 'disconnected'}` : 'single node (no [cluster])',
    );
    setText(alive, `${fmtInt(c.nodes_alive)} / ${fmtInt(c.nodes.length)}`);
    setText(users, fmtInt(c.users_online));
    setText(sessions, fmtInt(c.sessions));
    setText(queues, fmtInt(c.queues.queues));
    errorEl.hidden = !c.error;
    errorEl.textContent = c.error ?? '';
    clear(body);
    for (const n of c.nodes) body.append(row(n));
  };

  let stopped = false;
  let timer: number | undefined;
  const abort = new AbortController();
  const load = async () => {
    try {
      render(await api.cluster(abort.signal));
    } catch (e) {
      if (stopped) return;
      errorEl.hidden = false;
      errorEl.textContent = e instanceof ApiError ? e.describe() : String(e);
    }
    if (!stopped) timer = window.setTimeout(load, REFRESH_MS);
  };
  void load();
  return {
    el,
    destroy() {
      stopped = true;
      abort.abort();
      clearTimeout(timer);
    },
  };
}
