/* global URL */
// `node --import ./bench/built-imports.mjs <file>.ts`: runs a benchmark's TypeScript in a plain
// Node process (Node strips the types itself) against the built code. The sources import one
// another as `.js`, as tsc wants: a `.js` under src/ resolves to the built file in dist/ (the
// code that ships), and one elsewhere (test/support, bench) to the `.ts` beside it. Build first
// (`tsc -p tsconfig.build.json`).
import { existsSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const src = `${root}src/`;

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (!specifier.startsWith('.') || !specifier.endsWith('.js') || !context.parentURL?.startsWith('file:')) {
      return nextResolve(specifier, context);
    }
    const path = fileURLToPath(new URL(specifier, context.parentURL));
    if (path.startsWith(src)) {
      const built = `${root}dist/${path.slice(src.length)}`;
      if (!existsSync(built)) throw new Error(`${built} is missing: build first (tsc -p tsconfig.build.json)`);
      return nextResolve(pathToFileURL(built).href, context);
    }
    const typescript = path.replace(/\.js$/, '.ts');
    if (!existsSync(path) && existsSync(typescript)) return nextResolve(pathToFileURL(typescript).href, context);
    return nextResolve(specifier, context);
  },
});
