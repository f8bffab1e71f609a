// A virtualised list over a paged API: only the rows in view (plus a little
// overscan) exist in the DOM, and only the pages those rows fall on are fetched.
// 20,000 users are 200 pages of 100; scrolling fetches the pages it reaches,
// a live event refetches the visible ones. Rows have a fixed height, except
// rows the caller expands (their extra height is known up front).

import type { Page } from './types';

export interface VirtualListOptions<T> {
  viewport: HTMLElement; // the scrolling element
  rowHeight: number;
  perPage: number;
  fetchPage: (page: number, perPage: number, signal: AbortSignal) => Promise<Page<T>>;
  key: (item: T) => string;
  /** Fill `row` for `item` (undefined = not loaded yet). Called only when the item, index or version changed. */
  render: (row: HTMLElement, item: T | undefined, index: number) => void;
  /** Extra pixels below the row (an expanded row); only asked for keys in `expanded`. */
  extraHeight?: (item: T) => number;
  onTotal?: (total: number) => void;
  onError?: (e: Error) => void;
  onLoaded?: () => void;
  overscan?: number;
  maxCachedPages?: number;
}

interface CachedPage<T> {
  items: T[];
  stale: boolean;
  loading: AbortController | null;
  used: number; // last time it was in view (for eviction)
}

type RowEl = HTMLElement & { _item?: unknown; _ver?: number; _index?: number };

export class VirtualList<T> {
  readonly expanded = new Set<string>();
  total = 0;
  private readonly spacer: HTMLElement;
  private readonly rows = new Map<number, RowEl>();
  private pages = new Map<number, CachedPage<T>>();
  private extras: [number, number][] = []; // sorted (index, extra px) of expanded rows
  private gen = 0;
  private version = 0;
  private raf = 0;
  private fetchTimer: number | undefined;
  private loadedOnce = false;
  private destroyed = false;
  private readonly o: Required<Omit<VirtualListOptions<T>, 'extraHeight' | 'onTotal' | 'onError' | 'onLoaded'>> &
    VirtualListOptions<T>;

  constructor(opts: VirtualListOptions<T>) {
    this.o = { overscan: 8, maxCachedPages: 80, ...opts };
    this.spacer = document.createElement('div');
    this.spacer.className = 'vl-spacer';
    this.o.viewport.append(this.spacer);
    this.o.viewport.addEventListener('scroll', this.onScroll, { passive: true });
    window.addEventListener('resize', this.onScroll);
  }

  destroy(): void {
    this.destroyed = true;
    this.o.viewport.removeEventListener('scroll', this.onScroll);
    window.removeEventListener('resize', this.onScroll);
    cancelAnimationFrame(this.raf);
    clearTimeout(this.fetchTimer);
    for (const p of this.pages.values()) p.loading?.abort();
  }

  /** Filters changed: forget everything and start from the top. */
  reset(): void {
    this.gen++;
    for (const p of this.pages.values()) p.loading?.abort();
    this.pages.clear();
    this.extras = [];
    this.total = 0;
    this.loadedOnce = false;
    this.o.viewport.scrollTop = 0;
    this.version++;
    this.layout();
    this.fetchVisible(true);
  }

  /** Data changed on the server: cached pages become stale, visible ones are refetched now. */
  refresh(): void {
    for (const p of this.pages.values()) p.stale = true;
    this.fetchVisible(true);
  }

  /** Re-render visible rows (e.g. an expanded row, or "connected since" ticking). */
  redraw(): void {
    this.version++;
    this.recomputeExtras();
    this.layout();
  }

  toggle(key: string): void {
    if (this.expanded.has(key)) this.expanded.delete(key);
    else this.expanded.add(key);
    this.redraw();
  }

  itemAt(index: number): T | undefined {
    const p = this.pages.get(Math.floor(index / this.o.perPage) + 1);
    return p?.items[index % this.o.perPage];
  }

  /** Every loaded item (for tests and look-ups). */
  *loadedItems(): Iterable<T> {
    for (const p of this.pages.values()) yield* p.items;
  }

  private onScroll = (): void => {
    if (this.raf) return;
    this.raf = requestAnimationFrame(() => {
      this.raf = 0;
      this.layout();
      // fetch once scrolling pauses, not for every page flown over
      clearTimeout(this.fetchTimer);
      this.fetchTimer = window.setTimeout(() => this.fetchVisible(false), 80);
    });
  };

  private recomputeExtras(): void {
    this.extras = [];
    if (!this.expanded.size || !this.o.extraHeight) return;
    for (const [pageNo, p] of this.pages) {
      p.items.forEach((item, i) => {
        if (this.expanded.has(this.o.key(item))) {
          const ex = this.o.extraHeight!(item);
          if (ex > 0) this.extras.push([(pageNo - 1) * this.o.perPage + i, ex]);
        }
      });
    }
    this.extras.sort((a, b) => a[0] - b[0]);
  }

  private top(index: number): number {
    let acc = 0;
    for (const [i, ex] of this.extras) {
      if (i >= index) break;
      acc += ex;
    }
    return index * this.o.rowHeight + acc;
  }

  private indexAt(y: number): number {
    const H = this.o.rowHeight;
    let acc = 0;
    for (const [i, ex] of this.extras) {
      const t = i * H + acc;
      if (y < t) break;
      if (y < t + H + ex) return i;
      acc += ex;
    }
    return Math.floor((y - acc) / H);
  }

  private visibleRange(): [number, number] {
    const vp = this.o.viewport;
    if (!this.total) return [0, -1];
    const first = Math.max(0, this.indexAt(vp.scrollTop) - this.o.overscan);
    const last = Math.min(this.total - 1, this.indexAt(vp.scrollTop + vp.clientHeight) + this.o.overscan);
    return [first, last];
  }

  private layout(): void {
    if (this.destroyed) return;
    const H = this.o.rowHeight;
    const height = this.top(this.total);
    this.spacer.style.height = `${height}px`;
    const [first, last] = this.visibleRange();
    for (const [i, el] of this.rows) {
      if (i < first || i > last) {
        el.remove();
        this.rows.delete(i);
      }
    }
    const now = performance.now();
    for (let i = first; i <= last; i++) {
      let el = this.rows.get(i);
      if (!el) {
        el = document.createElement('div') as RowEl;
        el.className = 'vl-row';
        el.style.height = `${H}px`;
        this.rows.set(i, el);
        this.spacer.append(el);
      }
      const page = this.pages.get(Math.floor(i / this.o.perPage) + 1);
      if (page) page.used = now;
      const item = page?.items[i % this.o.perPage];
      const top = this.top(i);
      el.style.transform = `translateY(${top}px)`;
      el._index = i;
      if (el._item !== item || el._ver !== this.version || item === undefined) {
        el._item = item;
        el._ver = this.version;
        const ex =
          item !== undefined && this.o.extraHeight && this.expanded.has(this.o.key(item))
            ? this.o.extraHeight(item)
            : 0;
        el.style.height = `${H + ex}px`;
        el.classList.toggle('expanded', ex > 0);
        el.classList.toggle('loading', item === undefined);
        el.dataset.index = String(i);
        this.o.render(el, item, i);
      }
    }
  }

  private fetchVisible(force: boolean): void {
    if (this.destroyed) return;
    const [first, last] = this.loadedOnce ? this.visibleRange() : [0, 0];
    const fromPage = Math.floor(first / this.o.perPage) + 1;
    const toPage = Math.max(fromPage, Math.floor(Math.max(last, first) / this.o.perPage) + 1);
    for (let p = fromPage; p <= toPage; p++) {
      const c = this.pages.get(p);
      if (c?.loading) continue;
      if (c && !c.stale && !force) continue;
      void this.load(p);
    }
    this.evict(fromPage, toPage);
  }

  private evict(fromPage: number, toPage: number): void {
    if (this.pages.size <= this.o.maxCachedPages) return;
    const far = [...this.pages.entries()]
      .filter(([p]) => p < fromPage || p > toPage)
      .sort((a, b) => a[1].used - b[1].used);
    while (this.pages.size > this.o.maxCachedPages && far.length) {
      const [p, c] = far.shift()!;
      c.loading?.abort();
      this.pages.delete(p);
    }
  }

  private async load(pageNo: number): Promise<void> {
    const gen = this.gen;
    const ctrl = new AbortController();
    let c = this.pages.get(pageNo);
    if (!c) {
      c = { items: [], stale: true, loading: null, used: performance.now() };
      this.pages.set(pageNo, c);
    }
    c.loading = ctrl;
    try {
      const res = await this.o.fetchPage(pageNo, this.o.perPage, ctrl.signal);
      if (gen !== this.gen || this.destroyed) return;
      c.items = res.items;
      c.stale = false;
      const totalChanged = res.total !== this.total;
      this.total = res.total;
      // pages past the end are gone
      for (const p of [...this.pages.keys()])
        if ((p - 1) * this.o.perPage >= res.total && p !== 1) this.pages.delete(p);
      if (this.expanded.size) this.recomputeExtras();
      const first = !this.loadedOnce;
      this.loadedOnce = true;
      if (totalChanged || first) this.o.onTotal?.(res.total);
      this.layout();
      this.o.onLoaded?.();
      // the first page told us the total: now the real visible range is known
      if (first) this.fetchVisible(false);
    } catch (e) {
      if ((e as Error).name === 'AbortError' || gen !== this.gen) return;
      this.o.onError?.(e as Error);
    } finally {
      if (c.loading === ctrl) c.loading = null;
    }
  }
}
