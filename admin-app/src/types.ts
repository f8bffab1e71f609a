// Shapes of the admin API (docs/admin-api.md is authoritative).

export interface Rates {
  publish: number;
  deliver: number;
  ack: number;
  drop: number;
}

export interface Totals {
  published: number;
  delivered: number;
  acked: number;
  dropped: number;
}

export interface Overview {
  node: string;
  version: string;
  uptime_secs: number;
  sessions: number;
  users_online: number;
  queues: number;
  exchanges: number;
  messages_ready: number;
  messages_unacked: number;
  sessions_by_protocol: Record<string, number>;
  sessions_by_transport: Record<string, number>;
  rates: Rates;
  totals: Totals;
}

export interface Sample {
  t: number; // unix ms
  sessions: number;
  users_online: number;
  publish: number;
  deliver: number;
  ack: number;
}

export interface History {
  interval_ms: number;
  samples: Sample[];
}

export type PresenceState = 'online' | 'chat' | 'away' | 'xa' | 'dnd' | 'offline';

export interface Session {
  id: string | number;
  uid: string;
  vhost: string;
  protocol: string;
  transport: string;
  peer: string | null;
  connected_at: number;
  resource: string | null;
}

export interface OnlineUser {
  uid: string;
  presence: { state: PresenceState | string; status: string | null };
  sessions: Session[];
}

export interface Page<T> {
  total: number;
  page: number;
  per_page: number;
  items: T[];
}

export interface Project {
  id: string;
  name: string | null;
  members: number | string[];
  online: number | string[];
}

export interface QueueInfo {
  vhost: string;
  name: string;
  durable: boolean;
  exclusive: boolean;
  auto_delete: boolean;
  depth: number;
  unacked: number;
  consumers: number;
  totals: Totals;
  rates: { publish: number; deliver: number; ack: number };
  history: { publish: number[]; deliver: number[] };
}

export type QueueSort = 'name' | 'depth' | 'consumers' | 'unacked' | 'publish_rate' | 'deliver_rate';

export interface StreamOverview {
  overview: Overview;
  sample: Sample;
}

export interface StreamSession {
  type?: 'session';
  event: 'open' | 'close';
  session: string | number;
  uid: string;
  protocol: string;
  transport: string;
  reason: string | null;
}

export interface StreamPresence {
  type?: 'presence';
  uid: string;
  state: string;
  status: string | null;
}

/** A saved connection (Tauri app). */
export interface Profile {
  name: string;
  url: string;
  token: string;
}
