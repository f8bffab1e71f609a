// App-wide pub/sub for stream events, so views subscribe while mounted.

type Fn<T> = (v: T) => void;

export class Bus<M extends Record<string, unknown>> {
  private subs = new Map<keyof M, Set<Fn<never>>>();

  on<K extends keyof M>(type: K, fn: Fn<M[K]>): () => void {
    let s = this.subs.get(type);
    if (!s) this.subs.set(type, (s = new Set()));
    s.add(fn as Fn<never>);
    return () => s!.delete(fn as Fn<never>);
  }

  emit<K extends keyof M>(type: K, v: M[K]): void {
    for (const fn of this.subs.get(type) ?? []) {
      try {
        (fn as Fn<M[K]>)(v);
      } catch (e) {
        console.error(`bus handler for ${String(type)} failed`, e);
      }
    }
  }
}
