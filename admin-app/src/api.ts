// HTTP client for the admin API: bearer token on every call, JSON errors
// (`{error, message}`) turned into ApiError.

import type { ClusterInfo, History, OnlineUser, Overview, Page, Project, QueueInfo, QueueSort, Session } from './types';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly kind: string,
    message: string,
  ) {
    super(message);
  }

  /** What the user reads: "401 unauthorized: invalid token". */
  describe(): string {
    return this.status ? `${this.status} ${this.kind}: ${this.message}` : this.message;
  }
}

export type Query = Record<string, string | number | undefined | null>;

function qs(q: Query): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

/** `http://host:15672/` → `http://host:15672` */
export function normalizeBase(url: string): string {
  let u = url.trim();
  if (u && !/^https?:\/\//i.test(u)) u = `http://${u}`;
  return u.replace(/\/+$/, '');
}

export class Api {
  constructor(
    readonly base: string,
    readonly token: string,
  ) {}

  authHeaders(): Record<string, string> {
    return { Authorization: `Bearer ${this.token}` };
  }

  url(path: string): string {
    return `${this.base}${path}`;
  }

  async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const headers: Record<string, string> = { ...this.authHeaders(), Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(this.url(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      throw new ApiError(0, 'network', `cannot reach ${this.base}: ${(e as Error).message}`);
    }
    const text = await res.text();
    let json: unknown;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        /* not JSON: reported below */
      }
    }
    if (!res.ok) {
      const j = (json ?? {}) as { error?: string; message?: string };
      throw new ApiError(
        res.status,
        j.error || res.statusText || 'error',
        j.message || text.slice(0, 200) || res.statusText,
      );
    }
    if (json === undefined)
      throw new ApiError(
        res.status,
        'bad_response',
        `expected JSON from ${path}, got ${text.slice(0, 100) || 'nothing'}`,
      );
    return json as T;
  }

  overview(signal?: AbortSignal) {
    return this.request<Overview>('GET', '/api/overview', undefined, signal);
  }
  cluster(signal?: AbortSignal) {
    return this.request<ClusterInfo>('GET', '/api/cluster', undefined, signal);
  }
  history(signal?: AbortSignal) {
    return this.request<History>('GET', '/api/history', undefined, signal);
  }
  users(q: { project?: string; q?: string; page: number; per_page: number }, signal?: AbortSignal) {
    return this.request<Page<OnlineUser>>('GET', `/api/users${qs(q)}`, undefined, signal);
  }
  user(uid: string) {
    return this.request<OnlineUser>('GET', `/api/users/${encodeURIComponent(uid)}`);
  }
  kickUser(uid: string) {
    return this.request<{ kicked: number }>('POST', `/api/users/${encodeURIComponent(uid)}/kick`);
  }
  sessions(q: { protocol?: string; page: number; per_page: number }) {
    return this.request<Page<Session>>('GET', `/api/sessions${qs(q)}`);
  }
  kickSession(id: string | number) {
    return this.request<{ kicked: number }>('POST', `/api/sessions/${encodeURIComponent(String(id))}/kick`);
  }
  projects(signal?: AbortSignal) {
    return this.request<Project[]>('GET', '/api/projects', undefined, signal);
  }
  queues(
    q: { vhost?: string; q?: string; sort?: QueueSort; order?: 'asc' | 'desc'; page: number; per_page: number },
    signal?: AbortSignal,
  ) {
    return this.request<Page<QueueInfo>>('GET', `/api/queues${qs(q)}`, undefined, signal);
  }
  purge(vhost: string, name: string) {
    return this.request<{ purged: number }>(
      'POST',
      `/api/queues/${encodeURIComponent(vhost)}/${encodeURIComponent(name)}/purge`,
    );
  }
  publish(destination: string, body: string, headers: Record<string, string>) {
    return this.request<{ routed: number }>('POST', '/api/publish', { destination, body, headers });
  }
}
