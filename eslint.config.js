import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Code that must stay pure: no I/O, no clock, no adapters (the rule at the end holds the imports). */
export const PURE_FILES = [
  'src/domain/**/*.ts',
  'src/controller/customer/plan.ts',
  'src/controller/customer/status.ts',
  'src/controller/rollout/gate.ts',
  'src/controller/pool/plan.ts',
  'src/controller/customer/bound-containers.ts',
];

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', '.tools/', 'data/', 'test-results/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // An unawaited promise in an async loop is a silent bug in a controller.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-control-regex': 'off',
    },
  },
  {
    // The pure parts (the domain, the planner, status, the rollout gate) stay pure: no I/O
    // libraries, no adapter implementations, no I/O parts of the controller, whatever the depth
    // of the import (interface files such as runtime/runtime.ts and proxy/route-table.ts are fine).
    // test/unit/lint-boundaries.test.ts proves the rule fires.
    files: PURE_FILES,
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['dockerode', 'pg', 'kysely', 'express', 'stripe', 'pino', 'prom-client', '@kubernetes/*', '@electric-sql/*', 'node:*'],
              allowImportNames: ['createHash'],
              message: 'pure code does no I/O: no I/O library or node: module (createHash for stable hashes only)',
            },
            {
              regex: [
                // Adapters and the outer layers, at any depth.
                '(^|/)(store|http|cli|billing|telegram|workspace|observability|resilience|kubernetes)/',
                // Implementations under runtime/ and proxy/ (their interface files sit at the folder's root).
                '(^|/)(runtime|proxy)/[^/]+/',
                // The controller's parts that do I/O, from wherever they are imported.
                '(^|/)(server|controller|change-feed-source|reconciler|execute|observe|desired|pairing|rollouts)\\.js$',
              ].join('|'),
              message:
                'pure code imports only the domain, interface files (runtime/runtime.ts, proxy/route-table.ts) and other pure code',
            },
          ],
        },
      ],
    },
  },
);
