import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The layers of src/, lowest first, and the check that every import points to its own layer or a
 * lower one (docs/architecture.md has the same table). A file takes the layer of the longest
 * prefix that names it. The controller's two contract files sit below the adapters that
 * implement them: they import nothing, so an elector or an event source depends on no more of
 * the controller than the interface it implements.
 */
export const LAYERS: ReadonlyArray<{ name: string; paths: readonly string[] }> = [
  { name: 'domain and settings', paths: ['domain/', 'paths.ts', 'config.ts', 'data-dir.ts'] },
  { name: 'logs, metrics, resilience', paths: ['observability/', 'resilience/'] },
  { name: "the controller's contracts", paths: ['controller/event-source.ts', 'controller/leadership.ts'] },
  { name: 'leaf adapters', paths: ['billing/', 'telegram/', 'workspace/', 'kube-api/', 'model-providers/'] },
  { name: 'store', paths: ['store/'] },
  { name: 'world adapters', paths: ['runtime/', 'proxy/', 'customer-resources/', 'models/'] },
  { name: 'backups', paths: ['backup/'] },
  { name: 'controller', paths: ['controller/'] },
  { name: 'HTTP API', paths: ['http/'] },
  { name: 'composition root', paths: ['server.ts'] },
  { name: 'command line', paths: ['cli/'] },
];

const srcDir = fileURLToPath(new URL('../../src/', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [relative(srcDir, path).split('\\').join('/')] : [];
  });
}

export function layerOf(file: string): number {
  let best = -1;
  let bestLength = -1;
  LAYERS.forEach((layer, index) => {
    for (const path of layer.paths) {
      const matches = path.endsWith('/') ? file.startsWith(path) : file === path;
      if (matches && path.length > bestLength) [best, bestLength] = [index, path.length];
    }
  });
  return best;
}

/** Every relative import (`import`/`export ... from`, `import type` too) of every file under src/. */
function imports(): Array<{ from: string; to: string }> {
  return sourceFiles(srcDir).flatMap((from) => {
    const text = readFileSync(join(srcDir, from), 'utf8');
    return [...text.matchAll(/^\s*(?:import|export)\s[^;]*?\sfrom\s+'(\.[^']+)'/gm)].map((m) => ({
      from,
      to: posix.normalize(posix.join(dirname(from), m[1]!.replace(/\.js$/, '.ts'))),
    }));
  });
}

/** Imports that run from a lower layer up to a higher one. */
export function importsUpTheLayers(): string[] {
  return imports()
    .filter(({ from, to }) => layerOf(to) > layerOf(from))
    .map(({ from, to }) => `${from} (${LAYERS[layerOf(from)]!.name}) -> ${to} (${LAYERS[layerOf(to)]!.name})`);
}

describe('layers', () => {
  it('place every source file', () => {
    expect(sourceFiles(srcDir).filter((file) => layerOf(file) < 0)).toEqual([]);
  });

  it('are only ever imported downwards (or within a layer)', () => {
    expect(importsUpTheLayers()).toEqual([]);
  });

  it("keep the controller's contracts free of imports", () => {
    const contracts = LAYERS[2]!.paths;
    expect(imports().filter(({ from }) => contracts.includes(from))).toEqual([]);
  });
});
