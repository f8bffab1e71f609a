// The Tauri side (src-tauri, another module) keeps connection profiles; in a
// plain browser there are none and the API is the page's own origin.

import type { Profile } from './types';

export function inTauri(): boolean {
  return typeof window !== 'undefined' && '__TAURI_INTERNALS__' in window;
}

async function call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
  const { invoke } = await import('@tauri-apps/api/core');
  return invoke<T>(cmd, args);
}

export const profiles = {
  list: () => call<Profile[]>('profiles_list'),
  save: (profile: Profile) => call<Profile[]>('profile_save', { profile }),
  remove: (name: string) => call<Profile[]>('profile_delete', { name }),
  /** A profile given on the command line or in the environment: connect at once. */
  startup: () => call<Profile | null>('startup_profile'),
};

/** A Tauri command error is a string or a tagged enum object; make it readable. */
export function describeInvokeError(e: unknown): string {
  if (typeof e === 'string') return e;
  if (e instanceof Error) return e.message;
  if (e && typeof e === 'object') {
    const o = e as Record<string, unknown>;
    if (typeof o.message === 'string') return o.message;
    return JSON.stringify(o);
  }
  return String(e);
}
