import js from '@eslint/js';
import tseslint from 'typescript-eslint';

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
    // The planner and domain stay pure: no adapters, no I/O libraries.
    files: ['src/domain/**/*.ts', 'src/controller/customer/plan.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: ['dockerode', 'pg', 'kysely', 'express', 'node:fs*', '../store/*', '../runtime/docker/*', '../proxy/caddy/*'] },
      ],
    },
  },
);
