// Time-series charts (uPlot) and row sparklines (inline SVG).

import uPlot from 'uplot';
import type { Sample } from './types';

export interface SeriesDef {
  label: string;
  key: keyof Sample;
  color: string;
  fill?: boolean;
}

export interface TimeChart {
  setSamples(samples: Sample[]): void;
  destroy(): void;
}

/** A live time-series chart over samples; sized to its container and kept in sync with it. */
export function timeChart(
  host: HTMLElement,
  series: SeriesDef[],
  opts: { height?: number; unit?: string; integer?: boolean } = {},
): TimeChart {
  const height = opts.height ?? 200;
  const unit = opts.unit ?? '';
  const fmt = (v: number | null) =>
    v === null || v === undefined
      ? '–'
      : opts.integer
        ? String(Math.round(v))
        : v < 10
          ? v.toFixed(1)
          : String(Math.round(v));
  const data: uPlot.AlignedData = [[], ...series.map(() => [])];
  const plot = new uPlot(
    {
      width: Math.max(200, host.clientWidth || 600),
      height,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(opts.integer ? 4 : 1, max * 1.15)] } },
      axes: [
        { stroke: '#6b7280', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e5e7eb' } },
        {
          stroke: '#6b7280',
          grid: { stroke: '#eef0f3' },
          ticks: { stroke: '#e5e7eb' },
          size: 48,
          values: (_u, vals) => vals.map((v) => (opts.integer && !Number.isInteger(v) ? '' : fmt(v))),
        },
      ],
      series: [
        { label: 'time', value: (_u, v) => (v ? new Date(v * 1000).toLocaleTimeString() : '–') },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          fill: s.fill ? `${s.color}1f` : undefined,
          points: { show: false },
          value: (_u: uPlot, v: number | null) => `${fmt(v)}${unit}`,
        })),
      ],
    },
    data,
    host,
  );
  const ro = new ResizeObserver(() => {
    const w = host.clientWidth;
    if (w > 0 && Math.abs(w - plot.width) > 1) plot.setSize({ width: w, height });
  });
  ro.observe(host);
  return {
    setSamples(samples) {
      const xs = samples.map((s) => s.t / 1000);
      plot.setData([xs, ...series.map((d) => samples.map((s) => Number(s[d.key]) || 0))]);
      host.dataset.points = String(samples.length); // for tests and the curious
    },
    destroy() {
      ro.disconnect();
      plot.destroy();
    },
  };
}

const SVG = 'http://www.w3.org/2000/svg';

/** Two-line sparkline (publish and deliver) sharing one scale. */
export function sparkline(pub: number[], del: number[], width = 120, height = 26): SVGSVGElement {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('class', 'spark');
  const max = Math.max(1e-9, ...pub, ...del);
  // right-aligned on a fixed number of slots, so a young queue's few samples do not
  // stretch across the whole cell (the server keeps admin.queue_history, 30 by default)
  const slots = Math.max(30, pub.length, del.length);
  const step = width / (slots - 1);
  const line = (vals: number[], cls: string) => {
    if (vals.length < 2) return;
    const x0 = slots - vals.length;
    const pts = vals
      .map(
        (v, i) => `${((x0 + i) * step).toFixed(1)},${(height - 2 - (Math.max(0, v) / max) * (height - 4)).toFixed(1)}`,
      )
      .join(' ');
    const p = document.createElementNS(SVG, 'polyline');
    p.setAttribute('points', pts);
    p.setAttribute('class', cls);
    svg.append(p);
  };
  const base = document.createElementNS(SVG, 'line');
  base.setAttribute('x1', '0');
  base.setAttribute('x2', String(width));
  base.setAttribute('y1', String(height - 1.5));
  base.setAttribute('y2', String(height - 1.5));
  base.setAttribute('class', 'spark-base');
  svg.append(base);
  line(del || [], 'spark-deliver');
  line(pub || [], 'spark-publish');
  const t = document.createElementNS(SVG, 'title');
  t.textContent = `publish ${(pub.at(-1) ?? 0).toFixed(1)}/s, deliver ${(del.at(-1) ?? 0).toFixed(1)}/s (peak ${max < 1e-6 ? 0 : max.toFixed(1)}/s)`;
  svg.append(t);
  return svg;
}
