// GET /api/stream read with fetch() (EventSource cannot send Authorization),
// parsed as Server-Sent Events, reconnected with capped exponential backoff.

import type { Api } from './api';
import type { StreamOverview, StreamPresence, StreamSession } from './types';

export type StreamState = 'connecting' | 'live' | 'offline' | 'unauthorized';

export interface StreamHandlers {
  overview?: (e: StreamOverview) => void;
  session?: (e: StreamSession) => void;
  presence?: (e: StreamPresence) => void;
  /** `: lag n` — n change events were dropped; lists should be refetched. */
  lag?: (n: number) => void;
  state?: (s: StreamState, detail: string) => void;
}

/** Incremental SSE parser (WHATWG rules: `field: value` lines, blank line ends an event, `:` comments). */
export class SseParser {
  private buf = '';
  private event = '';
  private data: string[] = [];

  constructor(
    private readonly onEvent: (type: string, data: string) => void,
    private readonly onComment: (text: string) => void = () => {},
  ) {}

  feed(chunk: string): void {
    this.buf += chunk;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      // a lone \r at the end of the buffer may be the first half of \r\n
      if (m[0] === '\r' && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length) this.onEvent(this.event || 'message', this.data.join('\n'));
      this.event = '';
      this.data = [];
      return;
    }
    if (line[0] === ':') {
      this.onComment(line.slice(1).trim());
      return;
    }
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? '' : line.slice(i + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    // `id` and `retry` are not used by this API
  }
}

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10000;
/**
 * The server sends an `overview` event every `admin.stream_interval_ms` (1 s by default)
 * and a keep-alive comment every 15 s whatever the interval: silence this long means a
 * dead connection (a proxy or a sleeping laptop), so reconnect.
 */
const IDLE_TIMEOUT_MS = 20000;

export class LiveStream {
  private ctrl: AbortController | null = null;
  private stopped = false;
  private backoff = MIN_BACKOFF_MS;
  private retryTimer: number | undefined;
  private idleTimer: number | undefined;
  state: StreamState = 'connecting';

  constructor(
    private readonly api: Api,
    private readonly h: StreamHandlers,
  ) {}

  start(): void {
    this.stopped = false;
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.idleTimer);
    this.ctrl?.abort();
  }

  private setState(s: StreamState, detail = ''): void {
    this.state = s;
    this.h.state?.(s, detail);
  }

  private kickIdle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = window.setTimeout(() => this.ctrl?.abort(), IDLE_TIMEOUT_MS);
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    this.setState('connecting');
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    let detail = '';
    try {
      this.kickIdle();
      const res = await fetch(this.api.url('/api/stream'), {
        headers: { ...this.api.authHeaders(), Accept: 'text/event-stream' },
        signal: ctrl.signal,
        cache: 'no-store',
      });
      if (res.status === 401) {
        this.setState('unauthorized', 'token refused');
        this.stopped = true;
        return;
      }
      if (!res.ok || !res.body) {
        let msg = res.statusText;
        try {
          msg = ((await res.json()) as { message?: string }).message || msg;
        } catch {
          /* keep statusText */
        }
        throw new Error(`HTTP ${res.status}: ${msg}`);
      }
      this.setState('live');
      this.backoff = MIN_BACKOFF_MS;
      const parser = new SseParser(
        (type, data) => this.dispatch(type, data),
        (comment) => {
          const m = /^lag\s+(\d+)/.exec(comment);
          if (m) this.h.lag?.(Number(m[1]));
        },
      );
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.kickIdle();
        parser.feed(dec.decode(value, { stream: true }));
      }
      detail = 'stream ended';
    } catch (e) {
      detail = (e as Error).name === 'AbortError' ? `no data for ${IDLE_TIMEOUT_MS / 1000} s` : (e as Error).message;
    } finally {
      clearTimeout(this.idleTimer);
    }
    if (this.stopped) return;
    this.setState('offline', `${detail}; retrying in ${Math.round(this.backoff / 100) / 10} s`);
    this.retryTimer = window.setTimeout(() => void this.run(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
  }

  private dispatch(type: string, data: string): void {
    let v: unknown;
    try {
      v = JSON.parse(data);
    } catch {
      console.warn('admin stream: event is not JSON', type, data.slice(0, 200));
      return;
    }
    if (type === 'overview') this.h.overview?.(v as StreamOverview);
    else if (type === 'session') this.h.session?.(v as StreamSession);
    else if (type === 'presence') this.h.presence?.(v as StreamPresence);
  }
}
