import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';

/**
 * The provision latency chart (docs/img/provision-latency.png): one cumulative distribution
 * (CDF) panel per benchmark round, blytz beside the floor. Drawn pixel by pixel into an RGB
 * buffer and encoded as PNG with node:zlib, so it needs no package, no network and no image tool.
 */

type Rgb = [number, number, number];

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [30, 30, 30];
const GRID: Rgb = [225, 225, 225];
const BLYTZ: Rgb = [31, 119, 180];
const FLOOR: Rgb = [255, 127, 14];

class Canvas {
  readonly width: number;
  readonly height: number;
  readonly pixels: Buffer;
  constructor(width: number, height: number) {
    this.width = width;
    this.height = height;
    this.pixels = Buffer.alloc(width * height * 3, 255);
  }

  set(x: number, y: number, c: Rgb): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 3;
    this.pixels[i] = c[0];
    this.pixels[i + 1] = c[1];
    this.pixels[i + 2] = c[2];
  }

  rect(x: number, y: number, w: number, h: number, c: Rgb): void {
    for (let j = 0; j < h; j++) for (let i = 0; i < w; i++) this.set(x + i, y + j, c);
  }

  /** A line `thickness` pixels wide (Bresenham, a square brush). */
  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thickness = 1, dash = 0): void {
    x0 = Math.round(x0);
    y0 = Math.round(y0);
    x1 = Math.round(x1);
    y1 = Math.round(y1);
    const dx = Math.abs(x1 - x0);
    const dy = -Math.abs(y1 - y0);
    const sx = x0 < x1 ? 1 : -1;
    const sy = y0 < y1 ? 1 : -1;
    let err = dx + dy;
    let step = 0;
    const half = Math.floor(thickness / 2);
    for (;;) {
      if (!dash || Math.floor(step / dash) % 2 === 0) this.rect(x0 - half, y0 - half, thickness, thickness, c);
      step++;
      if (x0 === x1 && y0 === y1) return;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }

  /** Text in the 5x7 font below, `scale` pixels per dot; returns the width drawn. */
  text(x: number, y: number, s: string, c: Rgb, scale = 2, align: 'left' | 'center' | 'right' = 'left'): number {
    const width = textWidth(s, scale);
    let cx = align === 'left' ? x : align === 'center' ? x - width / 2 : x - width;
    for (const ch of s.toUpperCase()) {
      const glyph = FONT[ch] ?? FONT['?'];
      glyph?.forEach((row, r) => {
        for (let col = 0; col < 5; col++) if (row[col] === '#') this.rect(cx + col * scale, y + r * scale, scale, scale, c);
      });
      cx += 6 * scale;
    }
    return width;
  }

  png(): Buffer {
    const raw = Buffer.alloc((this.width * 3 + 1) * this.height);
    for (let y = 0; y < this.height; y++) {
      raw[y * (this.width * 3 + 1)] = 0; // filter: none
      this.pixels.copy(raw, y * (this.width * 3 + 1) + 1, y * this.width * 3, (y + 1) * this.width * 3);
    }
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(this.width, 0);
    ihdr.writeUInt32BE(this.height, 4);
    ihdr[8] = 8; // bit depth
    ihdr[9] = 2; // colour type: RGB
    return Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', ihdr),
      chunk('IDAT', deflateSync(raw, { level: 9 })),
      chunk('IEND', Buffer.alloc(0)),
    ]);
  }
}

function chunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([length, body, crc]);
}

function textWidth(s: string, scale: number): number {
  return s.length * 6 * scale - scale;
}

/** A step of 1, 2 or 5 x 10^k giving about `ticks` intervals over [0, max]. */
function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

export type ProvisionSamples = Record<string, { blytz: number[]; floor: number[] }>;

/** Renders one CDF panel per round (`sequential-10`, `concurrent-50`, ...) in a grid, and writes the PNG. */
export function renderProvisionChart(samples: ProvisionSamples, file: string): void {
  const keys = Object.keys(samples);
  const modes = ['sequential', 'concurrent'].filter((m) => keys.some((k) => k.startsWith(`${m}-`)));
  const sizes = [...new Set(keys.map((k) => Number(k.split('-')[1])))].sort((a, b) => a - b);
  const panelW = 560;
  const panelH = 380;
  const top = 90;
  const canvas = new Canvas(60 + modes.length * panelW + 20, top + sizes.length * panelH + 20);
  canvas.rect(0, 0, canvas.width, canvas.height, WHITE);
  canvas.text(canvas.width / 2, 14, 'Provision latency: row written -> 200 through Caddy (CDF)', BLACK, 3, 'center');
  // Legend.
  const legendY = 52;
  let lx = canvas.width / 2 - 300;
  canvas.rect(lx, legendY + 5, 40, 4, BLYTZ);
  lx += 50 + canvas.text(lx + 50, legendY, 'blytz serve', BLACK);
  lx += 40;
  canvas.rect(lx, legendY + 5, 40, 4, FLOOR);
  canvas.text(lx + 50, legendY, 'floor: docker create+start, route POST', BLACK);

  modes.forEach((mode, col) => {
    sizes.forEach((n, row) => {
      const data = samples[`${mode}-${n}`];
      if (!data) return;
      const x0 = 60 + col * panelW + 50;
      const y0 = top + row * panelH + 30;
      const w = panelW - 80;
      const h = panelH - 120;
      drawPanel(canvas, { x0, y0, w, h }, `${mode}, N=${n}`, data);
    });
  });
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, canvas.png());
}

function drawPanel(
  canvas: Canvas,
  box: { x0: number; y0: number; w: number; h: number },
  title: string,
  data: { blytz: number[]; floor: number[] },
): void {
  const { x0, y0, w, h } = box;
  const maxValue = Math.max(...data.blytz, ...data.floor, 1);
  const step = niceStep(maxValue, 5);
  const xMax = Math.ceil(maxValue / step) * step;
  const px = (ms: number) => x0 + (ms / xMax) * w;
  const py = (fraction: number) => y0 + h - fraction * h;

  canvas.text(x0 + w / 2, y0 - 26, title, BLACK, 2, 'center');
  // Grid and axes.
  for (let v = 0; v <= xMax + step / 2; v += step) {
    canvas.line(px(v), y0, px(v), y0 + h, GRID);
    canvas.text(px(v), y0 + h + 8, String(Math.round(v)), BLACK, 2, 'center');
  }
  for (let f = 0; f <= 1.0001; f += 0.25) {
    canvas.line(x0, py(f), x0 + w, py(f), GRID);
    canvas.text(x0 - 8, py(f) - 7, `${Math.round(f * 100)}%`, BLACK, 2, 'right');
  }
  canvas.line(x0, y0 + h, x0 + w, y0 + h, BLACK, 2);
  canvas.line(x0, y0, x0, y0 + h, BLACK, 2);
  canvas.text(x0 + w, y0 + h + 30, 'ms', BLACK, 2, 'right');

  for (const [values, colour] of [
    [data.floor, FLOOR],
    [data.blytz, BLYTZ],
  ] as const) {
    const sorted = [...values].sort((a, b) => a - b);
    let prevX = px(0);
    let prevY = py(0);
    sorted.forEach((v, i) => {
      const x = px(v);
      const y = py((i + 1) / sorted.length);
      canvas.line(prevX, prevY, x, prevY, colour, 3);
      canvas.line(x, prevY, x, y, colour, 3);
      prevX = x;
      prevY = y;
    });
    canvas.line(prevX, prevY, px(xMax), prevY, colour, 3, 6);
  }
  // p50 and p99 of each, under the axis.
  const pct = (values: number[], p: number) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
  };
  const label = (name: string, values: number[]) => `${name} p50 ${Math.round(pct(values, 50))}, p99 ${Math.round(pct(values, 99))} ms`;
  canvas.text(x0, y0 + h + 32, label('blytz', data.blytz), BLYTZ, 2);
  canvas.text(x0, y0 + h + 54, label('floor', data.floor), FLOOR, 2);
}

/** 5x7 dot font: digits, capitals and the punctuation the chart uses. */
const FONT: Record<string, string[]> = {
  ' ': ['.....', '.....', '.....', '.....', '.....', '.....', '.....'],
  '0': ['.###.', '#...#', '#..##', '#.#.#', '##..#', '#...#', '.###.'],
  '1': ['..#..', '.##..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  '2': ['.###.', '#...#', '....#', '...#.', '..#..', '.#...', '#####'],
  '3': ['#####', '...#.', '..#..', '...#.', '....#', '#...#', '.###.'],
  '4': ['...#.', '..##.', '.#.#.', '#..#.', '#####', '...#.', '...#.'],
  '5': ['#####', '#....', '####.', '....#', '....#', '#...#', '.###.'],
  '6': ['..##.', '.#...', '#....', '####.', '#...#', '#...#', '.###.'],
  '7': ['#####', '....#', '...#.', '..#..', '.#...', '.#...', '.#...'],
  '8': ['.###.', '#...#', '#...#', '.###.', '#...#', '#...#', '.###.'],
  '9': ['.###.', '#...#', '#...#', '.####', '....#', '...#.', '.##..'],
  A: ['.###.', '#...#', '#...#', '#####', '#...#', '#...#', '#...#'],
  B: ['####.', '#...#', '#...#', '####.', '#...#', '#...#', '####.'],
  C: ['.###.', '#...#', '#....', '#....', '#....', '#...#', '.###.'],
  D: ['###..', '#..#.', '#...#', '#...#', '#...#', '#..#.', '###..'],
  E: ['#####', '#....', '#....', '####.', '#....', '#....', '#####'],
  F: ['#####', '#....', '#....', '####.', '#....', '#....', '#....'],
  G: ['.###.', '#...#', '#....', '#.###', '#...#', '#...#', '.####'],
  H: ['#...#', '#...#', '#...#', '#####', '#...#', '#...#', '#...#'],
  I: ['.###.', '..#..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  J: ['..###', '...#.', '...#.', '...#.', '...#.', '#..#.', '.##..'],
  K: ['#...#', '#..#.', '#.#..', '##...', '#.#..', '#..#.', '#...#'],
  L: ['#....', '#....', '#....', '#....', '#....', '#....', '#####'],
  M: ['#...#', '##.##', '#.#.#', '#.#.#', '#...#', '#...#', '#...#'],
  N: ['#...#', '#...#', '##..#', '#.#.#', '#..##', '#...#', '#...#'],
  O: ['.###.', '#...#', '#...#', '#...#', '#...#', '#...#', '.###.'],
  P: ['####.', '#...#', '#...#', '####.', '#....', '#....', '#....'],
  Q: ['.###.', '#...#', '#...#', '#...#', '#.#.#', '#..#.', '.##.#'],
  R: ['####.', '#...#', '#...#', '####.', '#.#..', '#..#.', '#...#'],
  S: ['.####', '#....', '#....', '.###.', '....#', '....#', '####.'],
  T: ['#####', '..#..', '..#..', '..#..', '..#..', '..#..', '..#..'],
  U: ['#...#', '#...#', '#...#', '#...#', '#...#', '#...#', '.###.'],
  V: ['#...#', '#...#', '#...#', '#...#', '#...#', '.#.#.', '..#..'],
  W: ['#...#', '#...#', '#...#', '#.#.#', '#.#.#', '#.#.#', '.#.#.'],
  X: ['#...#', '#...#', '.#.#.', '..#..', '.#.#.', '#...#', '#...#'],
  Y: ['#...#', '#...#', '.#.#.', '..#..', '..#..', '..#..', '..#..'],
  Z: ['#####', '....#', '...#.', '..#..', '.#...', '#....', '#####'],
  '.': ['.....', '.....', '.....', '.....', '.....', '.##..', '.##..'],
  ',': ['.....', '.....', '.....', '.....', '.##..', '..#..', '.#...'],
  ':': ['.....', '.##..', '.##..', '.....', '.##..', '.##..', '.....'],
  '-': ['.....', '.....', '.....', '#####', '.....', '.....', '.....'],
  '+': ['.....', '..#..', '..#..', '#####', '..#..', '..#..', '.....'],
  '=': ['.....', '.....', '#####', '.....', '#####', '.....', '.....'],
  '(': ['...#.', '..#..', '.#...', '.#...', '.#...', '..#..', '...#.'],
  ')': ['.#...', '..#..', '...#.', '...#.', '...#.', '..#..', '.#...'],
  '%': ['##...', '##..#', '...#.', '..#..', '.#...', '#..##', '...##'],
  '/': ['.....', '....#', '...#.', '..#..', '.#...', '#....', '.....'],
  '<': ['...#.', '..#..', '.#...', '#....', '.#...', '..#..', '...#.'],
  '>': ['.#...', '..#..', '...#.', '....#', '...#.', '..#..', '.#...'],
  '?': ['.###.', '#...#', '....#', '...#.', '..#..', '.....', '..#..'],
};
