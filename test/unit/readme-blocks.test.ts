import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { blockKind, codeBlocks, doctestScript, substitute } from '../support/readme-blocks.js';

const README = readFileSync(join(resolve(import.meta.dirname, '../..'), 'README.md'), 'utf8');

describe("the README's code blocks (run by test/e2e/readme.test.ts)", () => {
  it('each says whether it runs: sh, bash or sql run; text and no-test do not; anything else is an error', () => {
    const blocks = codeBlocks(README);
    const unmarked = blocks.filter((b) => blockKind(b) === undefined).map((b) => `line ${b.line}: \`\`\`${b.lang}`);
    expect(unmarked, 'mark these ```text (a diagram, output) or ```<lang> no-test').toEqual([]);
    expect(blocks.filter((b) => blockKind(b) === 'shell').length).toBeGreaterThan(0);
  });

  it('the script they make is valid bash', () => {
    const { script } = doctestScript(codeBlocks(README), []);
    // bash -n parses without running anything.
    expect(() => execFileSync('bash', ['-n'], { input: script })).not.toThrow();
  });
});

describe('codeBlocks', () => {
  const markdown = [
    '# Title',
    '```text',
    'a diagram',
    '```',
    '',
    '```sh',
    'echo one',
    'echo two',
    '```',
    'prose with ```inline``` fences',
    '```sh no-test',
    'make test',
    '```',
    '````md',
    '```sh',
    'nested, not a block of its own',
    '```',
    '````',
    '```',
    'no language',
    '```',
    '```sql',
    "SELECT 'x';",
    '```',
  ].join('\n');

  it('finds each block with its line, language and flags, nested fences kept inside', () => {
    const blocks = codeBlocks(markdown);
    expect(blocks.map((b) => [b.line, b.lang, b.flags, blockKind(b)])).toEqual([
      [2, 'text', [], 'text'],
      [6, 'sh', [], 'shell'],
      [11, 'sh', ['no-test'], 'no-test'],
      [14, 'md', [], undefined],
      [19, '', [], undefined],
      [22, 'sql', [], 'sql'],
    ]);
    expect(blocks[1]?.text).toBe('echo one\necho two');
    expect(blocks[3]?.text).toBe('```sh\nnested, not a block of its own\n```');
  });

  it('runs the sh and sql blocks in order, the sql through psql, with the substitutions applied', () => {
    const { script, ran } = doctestScript(codeBlocks(markdown), [['one', 'ONE']]);
    expect(ran.map((b) => b.line)).toEqual([6, 22]);
    expect(script).toContain('echo ONE\necho two');
    expect(script).toContain(`psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 <<'__DOCTEST_SQL__'\nSELECT 'x';\n__DOCTEST_SQL__`);
    expect(script).not.toContain('make test');
    expect(script.indexOf('echo ONE')).toBeLessThan(script.indexOf('SELECT'));
  });

  it('refuses a block that never closes', () => {
    expect(() => codeBlocks('```sh\necho\n')).toThrow(/line 1: code block never closed/);
  });

  it('substitutes every occurrence', () => {
    expect(substitute('a:8081 b:8081', [[':8081', ':32001']])).toBe('a:32001 b:32001');
  });
});
