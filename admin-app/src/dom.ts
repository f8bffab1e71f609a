// A tiny DOM builder and formatting helpers (no framework: the UI is small and
// its hot paths — virtual lists — update nodes in place).

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v as EventListener);
    else if (k === 'class') el.className = String(v);
    else if (k === 'value' && 'value' in el) (el as HTMLInputElement).value = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el: Element, children: (Child | Child[])[]): void {
  for (const c of children) {
    if (Array.isArray(c)) append(el, c);
    else if (c === null || c === undefined || c === false) continue;
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

/** Sets text only when it changed (keeps layout work down on 1 s refreshes). */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

const intFmt = new Intl.NumberFormat('en-US');
export function fmtInt(n: number | null | undefined): string {
  return typeof n === 'number' && Number.isFinite(n) ? intFmt.format(Math.round(n)) : '–';
}

export function fmtRate(n: number | null | undefined): string {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  if (n === 0) return '0';
  if (n < 10) return n.toFixed(1);
  return intFmt.format(Math.round(n));
}

export function fmtDuration(secs: number): string {
  if (!Number.isFinite(secs)) return '–';
  const s = Math.floor(secs);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  if (d) return `${d}d ${hh}h ${mm}m`;
  if (hh) return `${hh}h ${mm}m ${ss}s`;
  if (mm) return `${mm}m ${ss}s`;
  return `${ss}s`;
}

export function fmtSince(ms: number): string {
  if (!ms) return '–';
  const secs = Math.max(0, (Date.now() - ms) / 1000);
  return fmtDuration(secs);
}

export function fmtTime(ms: number): string {
  return ms ? new Date(ms).toLocaleString() : '–';
}

export function debounce<A extends unknown[]>(
  fn: (...a: A) => void,
  ms: number,
): ((...a: A) => void) & { cancel(): void } {
  let t: number | undefined;
  const d = (...a: A) => {
    clearTimeout(t);
    t = window.setTimeout(() => fn(...a), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

/** In-app confirmation (native confirm() is not reliable in every webview). */
export function confirmDialog(title: string, text: string, okLabel = 'Confirm', danger = true): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (v: boolean) => {
      document.removeEventListener('keydown', onKey, true);
      overlay.remove();
      resolve(v);
    };
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape') done(false);
      if (e.key === 'Enter') done(true);
    };
    const ok = h(
      'button',
      { class: danger ? 'btn danger' : 'btn primary', 'data-testid': 'confirm-ok', onclick: () => done(true) },
      okLabel,
    );
    const overlay = h(
      'div',
      {
        class: 'modal-overlay',
        'data-testid': 'confirm-dialog',
        onclick: (e: Event) => e.target === overlay && done(false),
      },
      h(
        'div',
        { class: 'modal', role: 'dialog', 'aria-modal': 'true' },
        h('h3', {}, title),
        h('p', {}, text),
        h(
          'div',
          { class: 'modal-actions' },
          h('button', { class: 'btn', 'data-testid': 'confirm-cancel', onclick: () => done(false) }, 'Cancel'),
          ok,
        ),
      ),
    );
    document.addEventListener('keydown', onKey, true);
    document.body.append(overlay);
    ok.focus();
  });
}

let toastHost: HTMLElement | null = null;
export function toast(text: string, kind: 'ok' | 'error' = 'ok'): void {
  if (!toastHost) {
    toastHost = h('div', { class: 'toasts', 'data-testid': 'toasts' });
    document.body.append(toastHost);
  }
  const t = h('div', { class: `toast ${kind}`, role: 'status' }, text);
  toastHost.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 6000 : 3000);
}

/** `1 session`, `3 sessions`. */
export function plural(n: number, word: string): string {
  return `${fmtInt(n)} ${word}${n === 1 ? '' : 's'}`;
}
