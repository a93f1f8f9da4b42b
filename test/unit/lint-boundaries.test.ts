import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

/**
 * The purity rule in eslint.config.js, run through ESLint's own API on code given as text under
 * the path of each pure file: a bad import must be reported whatever its depth, a good one not.
 */
const root = fileURLToPath(new URL('../..', import.meta.url));
const eslint = new ESLint({
  cwd: root,
  ruleFilter: ({ ruleId }) => ruleId === 'no-restricted-imports',
  // Only this rule runs, and it needs no types: parse without building a TypeScript program.
  overrideConfig: { languageOptions: { parserOptions: { projectService: false } } },
});

async function restrictedImports(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  return (result?.messages ?? []).map((m) => `${m.ruleId}: ${m.message}`);
}

const pureFiles = [
  'src/controller/customer/plan.ts',
  'src/controller/customer/status.ts',
  'src/controller/rollout/gate.ts',
  'src/domain/customer.ts',
];

describe('the purity lint rule', () => {
  it.each(pureFiles)('reports I/O libraries and adapters imported by %s, at any depth', { timeout: 60_000 }, async (file) => {
    for (const source of [
      '../store/customer-store.js',
      '../../store/customer-store.js',
      '../../../store/errors.js',
      '../../runtime/docker/docker-runtime.js',
      '../../proxy/caddy/caddy-route-table.js',
      '../../workspace/file-workspaces.js',
      './execute.js',
      '../rollout/rollouts.js',
      '../controller.js',
      'dockerode',
      'kysely',
      'node:fs/promises',
    ]) {
      const messages = await restrictedImports(file, `import { x } from '${source}';\nexport const y = x;\n`);
      expect(messages, `${file} importing ${source}`).toHaveLength(1);
      expect(messages[0]).toMatch(/^no-restricted-imports: /);
    }
  });

  it.each(pureFiles)('lets %s import the domain, interface files and pure code', { timeout: 60_000 }, async (file) => {
    const code = [
      "import type { DesiredState } from '../../domain/customer.js';",
      "import type { ObservedContainer } from '../../runtime/runtime.js';",
      "import type { RouteTarget } from '../../proxy/route-table.js';",
      "import type { Desired } from './plan.js';",
      "import { createHash } from 'node:crypto';",
      'export type T = [DesiredState, ObservedContainer, RouteTarget, Desired, typeof createHash];',
      '',
    ].join('\n');
    expect(await restrictedImports(file, code)).toEqual([]);
  });

  it('leaves code that may do I/O alone', { timeout: 60_000 }, async () => {
    const code = "import { sql } from 'kysely';\nimport type { CustomerStore } from '../../store/customer-store.js';\nexport type T = [typeof sql, CustomerStore];\n";
    expect(await restrictedImports('src/controller/customer/execute.ts', code)).toEqual([]);
  });
});
