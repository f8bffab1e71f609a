// Overview: node counters, rates, sessions by protocol/transport, and two live
// charts seeded from /api/history and appended from the stream.

import { timeChart } from '../charts';
import type { Ctx, View } from '../context';
import { clear, fmtDuration, fmtInt, fmtRate, h, setText } from '../dom';
import type { Overview } from '../types';

const STATS: { key: string; label: string; get: (o: Overview) => string; hint?: string }[] = [
  { key: 'uptime', label: 'Uptime', get: (o) => fmtDuration(o.uptime_secs) },
  { key: 'sessions', label: 'Sessions', get: (o) => fmtInt(o.sessions) },
  { key: 'users-online', label: 'Users online', get: (o) => fmtInt(o.users_online) },
  { key: 'queues', label: 'Queues', get: (o) => fmtInt(o.queues) },
  { key: 'exchanges', label: 'Exchanges', get: (o) => fmtInt(o.exchanges) },
  { key: 'messages-ready', label: 'Messages ready', get: (o) => fmtInt(o.messages_ready), hint: 'waiting in queues' },
  {
    key: 'messages-unacked',
    label: 'Unacked',
    get: (o) => fmtInt(o.messages_unacked),
    hint: 'delivered, not yet acked',
  },
];

const RATES: { key: keyof Overview['rates']; label: string; total: keyof Overview['totals']; cls: string }[] = [
  { key: 'publish', label: 'Publish', total: 'published', cls: 'c-publish' },
  { key: 'deliver', label: 'Deliver', total: 'delivered', cls: 'c-deliver' },
  { key: 'ack', label: 'Ack', total: 'acked', cls: 'c-ack' },
  { key: 'drop', label: 'Dropped', total: 'dropped', cls: 'c-drop' },
];

export function mountOverview(ctx: Ctx): View {
  const values = new Map<string, HTMLElement>();
  const statCards = STATS.map((s) => {
    const v = h('div', { class: 'stat-value', 'data-testid': s.key }, '–');
    values.set(s.key, v);
    return h(
      'div',
      { class: 'stat' },
      h('div', { class: 'stat-label' }, s.label),
      v,
      s.hint ? h('div', { class: 'stat-hint' }, s.hint) : null,
    );
  });
  const rateCells = new Map<string, { rate: HTMLElement; total: HTMLElement }>();
  const rateRow = h(
    'div',
    { class: 'rates' },
    RATES.map((r) => {
      const rate = h('span', { class: 'rate-value', 'data-testid': `rate-${r.key}` }, '–');
      const total = h('span', { class: 'rate-total', 'data-testid': `total-${r.total}` }, '–');
      rateCells.set(r.key, { rate, total });
      return h(
        'div',
        { class: `rate ${r.cls}` },
        h('span', { class: 'rate-label' }, r.label),
        rate,
        h('span', { class: 'unit' }, '/s'),
        h('span', { class: 'muted' }, ' · total '),
        total,
      );
    }),
  );
  const byProtocol = h('div', { class: 'bars', 'data-testid': 'sessions-by-protocol' });
  const byTransport = h('div', { class: 'bars', 'data-testid': 'sessions-by-transport' });
  const ratesHost = h('div', { class: 'chart', 'data-testid': 'chart-rates' });
  const sessionsHost = h('div', { class: 'chart', 'data-testid': 'chart-sessions' });
  const nodeLine = h('div', { class: 'node-line', 'data-testid': 'overview-node' });

  const el = h(
    'div',
    { class: 'overview', 'data-testid': 'overview' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Overview'), nodeLine),
    h('div', { class: 'stats' }, statCards),
    h(
      'section',
      { class: 'panel' },
      h('div', { class: 'panel-head' }, h('h2', {}, 'Messages per second'), rateRow),
      ratesHost,
    ),
    h(
      'div',
      { class: 'grid-2' },
      h(
        'section',
        { class: 'panel' },
        h('div', { class: 'panel-head' }, h('h2', {}, 'Sessions and users online')),
        sessionsHost,
      ),
      h(
        'section',
        { class: 'panel' },
        h('div', { class: 'panel-head' }, h('h2', {}, 'Sessions by protocol')),
        byProtocol,
        h('div', { class: 'panel-head sub' }, h('h2', {}, 'by transport')),
        byTransport,
      ),
    ),
  );

  const renderBars = (host: HTMLElement, m: Record<string, number>, total: number) => {
    const entries = Object.entries(m || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const sig = JSON.stringify(entries);
    if (host.dataset.sig === sig) return;
    host.dataset.sig = sig;
    clear(host);
    if (!entries.length) host.append(h('div', { class: 'muted' }, 'no sessions'));
    for (const [k, n] of entries) {
      const pct = total > 0 ? Math.round((n / total) * 100) : 0;
      host.append(
        h(
          'div',
          { class: 'bar-row', 'data-key': k },
          h('span', { class: 'bar-label' }, k),
          h('span', { class: 'bar-track' }, h('span', { class: 'bar-fill', style: `width:${pct}%` })),
          h('span', { class: 'bar-value' }, fmtInt(n)),
        ),
      );
    }
  };

  const render = (o: Overview | null) => {
    if (!o) return;
    for (const s of STATS) setText(values.get(s.key)!, s.get(o));
    setText(nodeLine, `${o.node} · Herald ${o.version}`);
    for (const r of RATES) {
      const c = rateCells.get(r.key)!;
      setText(c.rate, fmtRate(o.rates?.[r.key]));
      setText(c.total, fmtInt(o.totals?.[r.total]));
    }
    renderBars(byProtocol, o.sessions_by_protocol, o.sessions);
    renderBars(byTransport, o.sessions_by_transport, o.sessions);
  };

  const rates = timeChart(
    ratesHost,
    [
      { label: 'publish', key: 'publish', color: '#2563eb', fill: true },
      { label: 'deliver', key: 'deliver', color: '#16a34a' },
      { label: 'ack', key: 'ack', color: '#9333ea' },
    ],
    { height: 190, unit: '/s' },
  );
  const sessions = timeChart(
    sessionsHost,
    [
      { label: 'sessions', key: 'sessions', color: '#0891b2', fill: true },
      { label: 'users online', key: 'users_online', color: '#ea580c' },
    ],
    { height: 180, integer: true },
  );

  // Charts redraw at most once per animation frame however many samples arrive.
  let raf = 0;
  const redrawCharts = () => {
    if (raf) return;
    raf = requestAnimationFrame(() => {
      raf = 0;
      rates.setSamples(ctx.samples);
      sessions.setSamples(ctx.samples);
    });
  };

  render(ctx.overview);
  redrawCharts();
  const offs = [
    ctx.bus.on('overview', render),
    ctx.bus.on('sample', redrawCharts),
    ctx.bus.on('samples', redrawCharts),
  ];

  return {
    el,
    destroy() {
      offs.forEach((f) => f());
      cancelAnimationFrame(raf);
      rates.destroy();
      sessions.destroy();
    },
  };
}
