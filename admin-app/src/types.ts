// Shapes of the admin API, taken from its schema: api-schema.ts is generated
// from core/src/admin/openapi.json (`npm run gen:api -w herald-admin`;
// scripts/test fails when it is stale). Only names and the Tauri-only
// `Profile` are written here.

import type { components } from './api-schema';

type Schemas = components['schemas'];

export type Rates = Schemas['Rates'];
export type Totals = Schemas['Totals'];
export type Overview = Schemas['Overview'];
export type Sample = Schemas['Sample'];
export type History = Schemas['History'];
export type PresenceState = Schemas['Presence']['state'];
export type Session = Schemas['Session'];
export type OnlineUser = Schemas['OnlineUser'];
export type Project = Schemas['Project'];
export type QueueInfo = Schemas['QueueInfo'];
export type ClusterInfo = Schemas['ClusterInfo'];
export type ClusterNode = Schemas['ClusterNode'];
export type QueueSort = components['parameters']['sort'];

/** One page of a list endpoint (`QueuePage`, `SessionPage`, `UserPage`). */
export type Page<T> = Omit<Schemas['SessionPage'], 'items'> & { items: T[] };

/** Data of the stream's events: `overview`, `session`, `presence`. */
export type StreamOverview = Schemas['Tick'];
export type StreamSession = Schemas['SessionEvent'];
export type StreamPresence = Schemas['PresenceEvent'];

/** A saved connection (Tauri app). */
export interface Profile {
  name: string;
  url: string;
  token: string;
}
