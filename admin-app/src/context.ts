// What every view gets: the API client, live events, and the overview state
// the app keeps across screens (so charts keep their history when you switch tabs).

import type { Api } from './api';
import type { Bus } from './bus';
import type { StreamState } from './stream';
import type { Overview, Sample, StreamPresence, StreamSession } from './types';

export interface Events extends Record<string, unknown> {
  overview: Overview;
  sample: Sample;
  samples: Sample[]; // the whole buffer was replaced (history (re)loaded)
  session: StreamSession;
  presence: StreamPresence;
  lag: number;
  stream: StreamState;
}

export interface Ctx {
  api: Api;
  bus: Bus<Events>;
  overview: Overview | null;
  samples: Sample[];
  historyIntervalMs: number;
  streamState: StreamState;
}

export interface View {
  el: HTMLElement;
  destroy(): void;
}
