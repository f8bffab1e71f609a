// Queues: server-side sorted and filtered, paged into a virtual list, refreshed
// every second while the screen is shown; per-row publish/deliver sparklines
// from QueueInfo.history; purge with confirmation.

import { ApiError } from '../api';
import { sparkline } from '../charts';
import type { Ctx, View } from '../context';
import { clear, confirmDialog, debounce, fmtInt, fmtRate, h, plural, setText, toast } from '../dom';
import type { QueueInfo, QueueSort } from '../types';
import { VirtualList } from '../virtual-list';

const ROW_H = 40;
const PER_PAGE = 100;

const COLUMNS: { key: QueueSort | null; label: string; cls?: string; title?: string }[] = [
  { key: 'name', label: 'Name' },
  { key: null, label: 'Features', title: 'D durable · AD auto-delete · X exclusive' },
  { key: 'depth', label: 'Ready', cls: 'num', title: 'messages waiting (depth)' },
  { key: 'unacked', label: 'Unacked', cls: 'num' },
  { key: 'consumers', label: 'Consumers', cls: 'num' },
  { key: 'publish_rate', label: 'Publish/s', cls: 'num' },
  { key: 'deliver_rate', label: 'Deliver/s', cls: 'num' },
  { key: null, label: 'Rate history', title: 'publish (blue) and deliver (green)' },
  { key: null, label: '' },
];

export function mountQueues(ctx: Ctx): View {
  const { api } = ctx;
  let sort: QueueSort = 'name';
  let order: 'asc' | 'desc' = 'asc';
  let query = '';
  let vhost = '';

  const filter = h('input', {
    type: 'search',
    placeholder: 'Filter by name…',
    'data-testid': 'queue-filter',
    'aria-label': 'filter queues',
  });
  const vhostIn = h('input', {
    type: 'search',
    placeholder: 'vhost (all)',
    class: 'narrow',
    'data-testid': 'queue-vhost',
    'aria-label': 'vhost',
  });
  const totalEl = h('span', { class: 'count', 'data-testid': 'queues-total' }, '…');
  const errorEl = h('div', { class: 'inline-error', hidden: true, 'data-testid': 'queues-error' });
  const viewport = h('div', { class: 'vl-viewport', 'data-testid': 'queues-list' });
  const empty = h('div', { class: 'empty', hidden: true }, 'No queues.');
  const head = h('div', { class: 'thead qcols' });

  const renderHead = () => {
    clear(head);
    for (const c of COLUMNS) {
      if (!c.key) {
        head.append(h('span', { class: c.cls ?? '', title: c.title ?? null }, c.label));
        continue;
      }
      const active = c.key === sort;
      head.append(
        h(
          'button',
          {
            class: `sort ${c.cls ?? ''} ${active ? 'active' : ''}`,
            'data-testid': `sort-${c.key}`,
            'aria-sort': active ? (order === 'asc' ? 'ascending' : 'descending') : 'none',
            title: c.title ?? `sort by ${c.label.toLowerCase()}`,
            onclick: () => {
              if (sort === c.key) order = order === 'asc' ? 'desc' : 'asc';
              else {
                sort = c.key!;
                order = c.key === 'name' ? 'asc' : 'desc';
              }
              renderHead();
              list.reset();
            },
          },
          c.label,
          h('span', { class: 'arrow' }, active ? (order === 'asc' ? '▲' : '▼') : ''),
        ),
      );
    }
  };

  const el = h(
    'div',
    { class: 'queues list-page', 'data-testid': 'queues-view' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Queues'), totalEl),
    h(
      'div',
      { class: 'toolbar' },
      filter,
      vhostIn,
      h('div', { class: 'spacer' }),
      h(
        'span',
        { class: 'legend' },
        h('span', { class: 'swatch c-publish' }),
        'publish',
        h('span', { class: 'swatch c-deliver' }),
        'deliver',
      ),
    ),
    errorEl,
    h('div', { class: 'table queues-table' }, head, viewport, empty),
  );

  const showError = (e: Error | null) => {
    errorEl.hidden = !e;
    errorEl.textContent = e ? (e instanceof ApiError ? e.describe() : e.message) : '';
  };

  const list: VirtualList<QueueInfo> = new VirtualList<QueueInfo>({
    viewport,
    rowHeight: ROW_H,
    perPage: PER_PAGE,
    key: (q) => `${q.vhost}\u0000${q.name}`,
    fetchPage: async (page, per_page, signal) => {
      const r = await api.queues(
        { q: query || undefined, vhost: vhost || undefined, sort, order, page, per_page },
        signal,
      );
      showError(null);
      return r;
    },
    onTotal: (n) => {
      totalEl.textContent = `${fmtInt(n)} queue${n === 1 ? '' : 's'}`;
      empty.hidden = n > 0;
    },
    onError: showError,
    render: renderRow,
  });

  // Rows are refreshed every second: cells are updated in place (never rebuilt)
  // so a click on Purge is not lost to a re-render between mousedown and mouseup.
  type Refs = {
    key: string;
    features: HTMLElement;
    depth: HTMLElement;
    unacked: HTMLElement;
    consumers: HTMLElement;
    pub: HTMLElement;
    del: HTMLElement;
    spark: HTMLElement;
    purge: HTMLButtonElement;
    name: HTMLElement;
  };
  type QRow = HTMLElement & { _q?: QueueInfo; _refs?: Refs };

  function buildRow(row: QRow, key: string): Refs {
    clear(row);
    const purge = h(
      'button',
      { class: 'btn small danger', 'data-testid': 'purge-queue', title: 'delete every ready message' },
      'Purge',
    );
    purge.addEventListener('click', async () => {
      const q = row._q;
      if (!q) return;
      const ok = await confirmDialog(
        `Purge ${q.name}?`,
        `${plural(q.depth, 'ready message')} in ${q.name} (vhost ${q.vhost}) will be deleted. Unacked messages stay.`,
        'Purge',
      );
      if (!ok) return;
      try {
        const r = await api.purge(q.vhost, q.name);
        toast(`Purged ${plural(r.purged, 'message')} from ${q.name}`);
      } catch (err) {
        toast(err instanceof ApiError ? err.describe() : String(err), 'error');
      }
      list.refresh();
    });
    const refs: Refs = {
      key,
      name: h('span', { class: 'qname' }),
      features: h('span', { class: 'features' }),
      depth: h('span', { class: 'num', 'data-testid': 'queue-depth' }),
      unacked: h('span', { class: 'num', 'data-testid': 'queue-unacked' }),
      consumers: h('span', { class: 'num', 'data-testid': 'queue-consumers' }),
      pub: h('span', { class: 'num', 'data-testid': 'queue-publish-rate' }),
      del: h('span', { class: 'num', 'data-testid': 'queue-deliver-rate' }),
      spark: h('span', { class: 'sparkcell' }),
      purge,
    };
    row.append(
      h(
        'div',
        { class: 'qcols main' },
        refs.name,
        refs.features,
        refs.depth,
        refs.unacked,
        refs.consumers,
        refs.pub,
        refs.del,
        refs.spark,
        h('span', { class: 'actions' }, purge),
      ),
    );
    return refs;
  }

  function renderRow(row: QRow, q: QueueInfo | undefined): void {
    if (!q) {
      row._q = undefined;
      row._refs = undefined;
      delete row.dataset.queue;
      delete row.dataset.vhost;
      clear(row);
      row.append(
        h(
          'div',
          { class: 'qcols placeholder' },
          h('span', { class: 'skeleton' }),
          h('span', { class: 'skeleton short' }),
        ),
      );
      return;
    }
    const key = `${q.vhost}\u0000${q.name}`;
    let r = row._refs;
    if (!r || r.key !== key) {
      r = row._refs = buildRow(row, key);
      clear(r.name);
      r.name.title = `${q.name} (vhost ${q.vhost})`;
      r.name.append(q.vhost !== '/' ? h('span', { class: 'vhost' }, `${q.vhost} `) : '', h('strong', {}, q.name));
      r.purge.dataset.queue = q.name;
    }
    row._q = q;
    row.dataset.queue = q.name;
    row.dataset.vhost = q.vhost;
    const features = [
      q.durable ? ['D', 'durable'] : null,
      q.auto_delete ? ['AD', 'auto-delete'] : null,
      q.exclusive ? ['X', 'exclusive'] : null,
    ].filter(Boolean) as string[][];
    const fsig = features.map((f) => f[0]).join(',');
    if (r.features.dataset.sig !== fsig) {
      r.features.dataset.sig = fsig;
      clear(r.features);
      r.features.append(...features.map(([k, t]) => h('span', { class: 'badge', title: t }, k)));
    }
    setText(r.depth, fmtInt(q.depth));
    r.depth.classList.toggle('hot', q.depth > 0);
    setText(r.unacked, fmtInt(q.unacked));
    setText(r.consumers, fmtInt(q.consumers));
    setText(r.pub, fmtRate(q.rates?.publish));
    setText(r.del, fmtRate(q.rates?.deliver));
    const pub = q.history?.publish ?? [];
    const del = q.history?.deliver ?? [];
    const ssig = `${pub.join(',')}|${del.join(',')}`;
    if (r.spark.dataset.sig !== ssig) {
      r.spark.dataset.sig = ssig;
      clear(r.spark);
      r.spark.append(sparkline(pub, del));
    }
    r.purge.disabled = q.depth === 0;
  }

  const applyFilter = debounce(() => {
    query = filter.value.trim();
    vhost = vhostIn.value.trim();
    list.reset();
  }, 200);
  filter.addEventListener('input', applyFilter);
  vhostIn.addEventListener('input', applyFilter);

  // Refresh every second while shown (and while the window is visible).
  const timer = window.setInterval(() => {
    if (document.visibilityState === 'visible') list.refresh();
  }, 1000);

  renderHead();
  list.reset();

  return {
    el,
    destroy() {
      clearInterval(timer);
      applyFilter.cancel();
      list.destroy();
    },
  };
}
