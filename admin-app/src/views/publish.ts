// Test publish: POST /api/publish {destination, body, headers}.

import { ApiError } from '../api';
import type { Ctx, View } from '../context';
import { h } from '../dom';

/** `k=v` (or `k: v`) per line; blank lines and `#` comments ignored. */
export function parseHeaders(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const m = /^([^=:]+?)\s*[=:]\s*(.*)$/.exec(line);
    if (!m) throw new Error(`header line ${i + 1} is not k=v: ${line}`);
    out[m[1].trim()] = m[2];
  });
  return out;
}

export function mountPublish(ctx: Ctx): View {
  const dest = h('input', {
    id: 'pub-dest',
    'data-testid': 'publish-destination',
    list: 'pub-dests',
    placeholder: '/queue/orders',
    required: true,
    autocomplete: 'off',
  });
  const body = h('textarea', {
    id: 'pub-body',
    'data-testid': 'publish-body',
    rows: 6,
    placeholder: '{"hello": "world"}',
  });
  const headers = h('textarea', {
    id: 'pub-headers',
    'data-testid': 'publish-headers',
    rows: 3,
    placeholder: 'content-type=application/json\npersistent=true',
  });
  const submit = h('button', { class: 'btn primary', type: 'submit', 'data-testid': 'publish-submit' }, 'Publish');
  const result = h('div', { class: 'publish-result', 'data-testid': 'publish-result', role: 'status', hidden: true });
  const log = h('ol', { class: 'publish-log', 'data-testid': 'publish-log' });

  const show = (ok: boolean, text: string) => {
    result.hidden = false;
    result.className = `publish-result ${ok ? 'ok' : 'error'}`;
    result.dataset.state = ok ? 'ok' : 'error';
    result.textContent = text;
    log.prepend(
      h(
        'li',
        { class: ok ? 'ok' : 'error' },
        h('span', { class: 'muted' }, new Date().toLocaleTimeString()),
        ' ',
        h('code', {}, dest.value),
        ' → ',
        text,
      ),
    );
    while (log.children.length > 20) log.lastElementChild!.remove();
  };

  const form = h(
    'form',
    {
      class: 'publish-form panel',
      onsubmit: async (e: Event) => {
        e.preventDefault();
        let hdrs: Record<string, string>;
        try {
          hdrs = parseHeaders(headers.value);
        } catch (err) {
          show(false, (err as Error).message);
          return;
        }
        submit.disabled = true;
        try {
          const r = await ctx.api.publish(dest.value.trim(), body.value, hdrs);
          result.dataset.routed = String(r.routed);
          show(
            true,
            r.routed === 0
              ? 'Published, routed to 0 queues (no binding matched)'
              : `Routed to ${r.routed} queue${r.routed === 1 ? '' : 's'}`,
          );
        } catch (err) {
          delete result.dataset.routed;
          show(false, err instanceof ApiError ? err.describe() : String(err));
        } finally {
          submit.disabled = false;
        }
      },
    },
    h(
      'label',
      { for: 'pub-dest' },
      'Destination',
      h('span', { class: 'hint' }, 'a STOMP destination: /queue/q, /topic/key, /exchange/feed/uid, /amq/queue/q'),
    ),
    dest,
    h(
      'datalist',
      { id: 'pub-dests' },
      ['/queue/', '/topic/', '/exchange/feed/', '/exchange/project/', '/amq/queue/'].map((v) =>
        h('option', { value: v }),
      ),
    ),
    h('label', { for: 'pub-body' }, 'Body'),
    body,
    h('label', { for: 'pub-headers' }, 'Headers', h('span', { class: 'hint' }, 'one k=v per line')),
    headers,
    h('div', { class: 'row-actions' }, submit),
    result,
  );

  const el = h(
    'div',
    { class: 'publish', 'data-testid': 'publish-view' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Publish a test message')),
    h(
      'div',
      { class: 'grid-publish' },
      form,
      h('section', { class: 'panel' }, h('div', { class: 'panel-head' }, h('h2', {}, 'Recent')), log),
    ),
  );
  return { el, destroy() {} };
}
