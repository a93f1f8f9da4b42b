#!/usr/bin/env node
/* global process, console */
// Writes deploy/kubernetes/crd-customer.yaml from the domain's zod schema (src/customer-resources/crd.ts).
// `node scripts/gen-crd.mjs` (Node 24: runs the TypeScript source directly); `--check` exits 1
// when the file is out of date. test/unit/kubernetes-crd.test.ts fails on drift as well.
import { readFileSync, writeFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';

// The domain uses TypeScript syntax that plain type stripping cannot run (parameter properties).
if (!process.execArgv.includes('--experimental-transform-types')) {
  const child = spawnSync(process.execPath, ['--experimental-transform-types', '--no-warnings', ...process.argv.slice(1)], {
    stdio: 'inherit',
  });
  process.exit(child.status ?? 1);
}

// The sources import each other as `./x.js` (NodeNext style); point those at the `.ts` files.
registerHooks({
  resolve(specifier, context, next) {
    try {
      return next(specifier, context);
    } catch (error) {
      if (specifier.endsWith('.js') && (specifier.startsWith('.') || specifier.startsWith('/'))) {
        return next(specifier.replace(/\.js$/, '.ts'), context);
      }
      throw error;
    }
  },
});

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { crdYaml } = await import(join(root, 'src/customer-resources/crd-yaml.ts'));
const target = join(root, 'deploy/kubernetes/crd-customer.yaml');
const text = crdYaml();
if (process.argv.includes('--check')) {
  const current = readFileSync(target, 'utf8');
  if (current !== text) {
    console.error(`${target} is out of date: run node scripts/gen-crd.mjs`);
    process.exit(1);
  }
  console.log(`${target} is current`);
} else {
  writeFileSync(target, text);
  console.log(`wrote ${target}`);
}
