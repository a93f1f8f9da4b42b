/**
 * The README's fenced code blocks, and the one shell script that runs them in order, for the
 * doc-test (test/e2e/readme.test.ts). The rules, stated at the top of README.md too:
 *
 * - ```sh, ```bash and ```shell blocks run in bash, all in one shell, top to bottom, so an
 *   `export` or a server started with `&` carries on to later blocks, as in a person's terminal;
 * - ```sql blocks run through `psql "$DATABASE_URL"` in that same shell;
 * - ```text blocks are diagrams or output, never run;
 * - any block marked `no-test` after its language is not run (```sh no-test);
 * - any other block (no language, or another one) is an error: a new command cannot slip into
 *   the README without either running or saying why it does not.
 */

export interface CodeBlock {
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  flags: string[];
  text: string;
}

export type BlockKind = 'shell' | 'sql' | 'text' | 'no-test';

const SHELLS = new Set(['sh', 'bash', 'shell']);

export function codeBlocks(markdown: string): CodeBlock[] {
  const lines = markdown.split('\n');
  const blocks: CodeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(`{3,})\s*([^`\s]*)\s*([^`]*)$/.exec(lines[i] ?? '');
    if (!open) continue;
    const fence = open[1] as string;
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !new RegExp(`^${fence}\\s*$`).test(lines[j] ?? '')) body.push(lines[j++] ?? '');
    if (j >= lines.length) throw new Error(`README line ${i + 1}: code block never closed`);
    blocks.push({ line: i + 1, lang: open[2] ?? '', flags: (open[3] ?? '').split(/\s+/).filter(Boolean), text: body.join('\n') });
    i = j;
  }
  return blocks;
}

/** What the doc-test does with a block; undefined when the README does not say (an error). */
export function blockKind(block: CodeBlock): BlockKind | undefined {
  if (block.flags.includes('no-test')) return 'no-test';
  if (SHELLS.has(block.lang)) return 'shell';
  if (block.lang === 'sql') return 'sql';
  if (block.lang === 'text') return 'text';
  return undefined;
}

/** Literal text of the README replaced before it runs (the machine's well-known addresses by the test's own). */
export type Substitutions = Array<[from: string, to: string]>;

export function substitute(text: string, substitutions: Substitutions): string {
  return substitutions.reduce((out, [from, to]) => out.split(from).join(to), text);
}

const MARK = '::doctest::';

/**
 * One bash script running every runnable block in order. It stops at the first failing command
 * (`set -e`, `pipefail`: as a person would stop), and says on stderr which block it was in and
 * which command failed. Variables may be unset, as in an interactive shell (no `set -u`).
 */
export function doctestScript(blocks: CodeBlock[], substitutions: Substitutions): { script: string; ran: CodeBlock[] } {
  const ran = blocks.filter((b) => {
    const kind = blockKind(b);
    return kind === 'shell' || kind === 'sql';
  });
  const parts = [
    'set -Eeo pipefail',
    '__doctest_block=0',
    `trap 'echo "${MARK} failed in block \${__doctest_block}: \${BASH_COMMAND}" >&2' ERR`,
  ];
  ran.forEach((block, index) => {
    parts.push(
      `__doctest_block=${index + 1}; echo "${MARK} block ${index + 1}: README.md line ${block.line} (${block.lang})" >&2`,
    );
    const text = substitute(block.text, substitutions);
    if (blockKind(block) === 'sql') {
      if (text.includes('__DOCTEST_SQL__')) throw new Error(`README line ${block.line}: the SQL holds the here-document marker`);
      parts.push(`psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 <<'__DOCTEST_SQL__'\n${text}\n__DOCTEST_SQL__`);
    } else {
      parts.push(text);
    }
  });
  parts.push(`echo "${MARK} done: ${ran.length} blocks ran" >&2`);
  return { script: `${parts.join('\n')}\n`, ran };
}

/** From the script's stderr: the block that failed and the command, when it says. */
export function failureOf(stderr: string): string | undefined {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith(MARK))
    .slice(-2)
    .join('\n');
}
