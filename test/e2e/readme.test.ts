import { execFileSync, spawn } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, freePort, portSlot, removeInstanceContainers, ROOT } from '../support/blytz-serve.js';
import { startCaddy, type TestCaddy } from '../support/caddy.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';
import { blockKind, codeBlocks, doctestScript, failureOf, type Substitutions } from '../support/readme-blocks.js';

/**
 * The README as a test, the way doc-tests work: every ```sh and ```sql block of README.md runs,
 * in order, in one bash, on a fresh copy of the repository (what `git clone` gives: tracked and
 * new files, no build output, no data), against the real Postgres, Docker engine and Caddy, with
 * the stand-in image the tour names. A failing command fails the test, naming its block.
 *
 * What differs from a person's terminal, and why:
 * - the dependencies are the checkout's own `node_modules` and `.tools` (symlinked), not a fresh
 *   `npm ci` (no network, 40 s); the copy's package-lock.json is dated before them, so `make`
 *   never runs `npm ci` into the shared folder;
 * - the machine's well-known addresses in the README (Postgres' `blytz` database, Caddy's admin
 *   on 2019, the server on 8080, Caddy serving on 8081) become this test's own: its database, its
 *   Caddy, a free port (PORT, which the CLI reads too) and a leased listen port, so it runs beside
 *   other tests and other engineers' servers;
 * - BLYTZ_INSTANCE and BLYTZ_PORT_RANGE keep its containers apart from every other test's, and
 *   let it remove them afterwards. (Container names are still `blytz-<name>`: a concurrent test
 *   creating alice-example-com on the same engine would collide, as it would for a person.)
 */

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const SCRIPT_TIMEOUT_MS = 420_000;

let db: TestDatabase;
let caddy: TestCaddy;
let copy: string;
let instance: string;

beforeAll(async () => {
  [db, caddy] = await Promise.all([createTestDatabase(), startCaddy()]);
  copy = freshCopy();
  instance = `readme-${Math.random().toString(36).slice(2, 8)}`;
});

afterAll(async () => {
  await removeInstanceContainers(instance);
  await caddy?.stop();
  await db?.drop();
  if (copy) rmSync(copy, { recursive: true, force: true });
});

/** What `git clone` of this checkout would hold (tracked plus new, not ignored, files), with its dependencies linked in. */
function freshCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'blytz-readme-'));
  try {
    return fillCopy(dir);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true }); // symlinks are removed, never followed
    throw error;
  }
}

function fillCopy(dir: string): string {
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT })
    .toString()
    .split('\0')
    .filter((f) => f !== '' && f !== '.tools' && existsSync(join(ROOT, f)));
  for (const file of files) {
    mkdirSync(dirname(join(dir, file)), { recursive: true });
    cpSync(join(ROOT, file), join(dir, file), { preserveTimestamps: true, verbatimSymlinks: true });
  }
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  symlinkSync(join(ROOT, '.tools'), join(dir, '.tools'));
  // Installed after the lock file was written: `make` must not reinstall into the linked folder.
  const installed = statSync(join(ROOT, 'node_modules', '.package-lock.json')).mtime;
  const before = new Date(installed.getTime() - 60_000);
  utimesSync(join(dir, 'package-lock.json'), before, before);
  // `make -n` prints what make would run without running it.
  const plan = execFileSync('make', ['-n', 'node_modules/.package-lock.json'], { cwd: dir }).toString();
  if (plan.includes('npm ci')) throw new Error(`make would reinstall the linked node_modules:\n${plan}`);
  return dir;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the script in its own process group; whatever it left running (`blytz serve &`) is stopped afterwards. */
async function runScript(script: string, env: Record<string, string>): Promise<Run> {
  const child = spawn('bash', ['-c', script], { cwd: copy, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const group = child.pid as number;
  const timer = setTimeout(() => signalGroup(group, 'SIGKILL'), SCRIPT_TIMEOUT_MS);
  // 'exit', not 'close': a server started with `&` keeps the pipes open after bash is done.
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  // The server drains on SIGTERM; then nothing of the group may be left.
  signalGroup(group, 'SIGTERM');
  await waitFor(() => !groupAlive(group), 30_000).catch(() => signalGroup(group, 'SIGKILL'));
  return { code, stdout, stderr };
}

function signalGroup(group: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-group, signal);
  } catch {
    // already gone
  }
}

function groupAlive(group: number): boolean {
  try {
    process.kill(-group, 0);
    return true;
  } catch {
    return false;
  }
}

describe('README.md', () => {
  it('every block says whether it runs', () => {
    const unmarked = codeBlocks(README).filter((b) => blockKind(b) === undefined);
    expect(unmarked.map((b) => `README.md line ${b.line}`)).toEqual([]);
  });

  it(
    'runs, block by block, on a fresh copy against real Postgres, Docker and Caddy',
    async () => {
      const port = await freePort();
      const range = portSlot();
      const listen = caddy.listenPorts[0];
      const substitutions: Substitutions = [
        ['postgres://blytz:blytz@127.0.0.1:5432/blytz', db.url],
        ['127.0.0.1:2019', `127.0.0.1:${caddy.adminPort}`],
        ['127.0.0.1:8080', `127.0.0.1:${port}`],
        [':8081', `:${listen}`],
      ];
      const { script, ran } = doctestScript(codeBlocks(README), substitutions);
      expect(ran.length).toBeGreaterThan(0);
      const env = {
        ...baseEnv(),
        PORT: String(port),
        CADDY_ADMIN_URL: caddy.adminUrl,
        BLYTZ_INSTANCE: instance,
        BLYTZ_PORT_RANGE: `${range.from}-${range.to}`,
      };
      const { code, stdout, stderr } = await runScript(script, env);
      const output = `${stderr}\n${stdout}`;
      // The whole transcript, for whoever reads a failure (test-results/ is not committed).
      mkdirSync(join(ROOT, 'test-results'), { recursive: true });
      writeFileSync(
        join(ROOT, 'test-results', 'readme-doctest.log'),
        `${script}\n--- stderr ---\n${stderr}\n--- stdout ---\n${stdout}`,
      );
      expect(code, `${failureOf(stderr) ?? ''}\n--- last output ---\n${output.slice(-6000)}`).toBe(0);
      expect(stderr).toContain(`::doctest:: done: ${ran.length} blocks ran`);

      // What the tour claims, seen in the server's own log: one line per action, the drift it repaired.
      // The server's JSON lines, among curl's and the CLI's output on the same stdout.
      const log = stdout.split('\n').flatMap((l) => {
        const json = l.slice(l.indexOf('{"level":'));
        try {
          return l.includes('{"level":')
            ? [JSON.parse(json) as { msg: string; reason?: string; customer?: string; drift?: string }]
            : [];
        } catch {
          return [];
        }
      });
      const alice = log.filter((l) => l.customer === 'alice-example-com');
      expect(alice.map((l) => l.reason)).toEqual(expect.arrayContaining(['ContainerCreated', 'RouteReady', 'ContainerStarted']));
      // The killed container was started again as stopped, not restarted as "unhealthy".
      expect(alice.map((l) => l.reason)).not.toContain('ContainerRestarted');
      expect(alice.some((l) => l.reason === 'RouteReady' && l.drift === 'route_missing')).toBe(true);
      // The deleted route, counted once (the route sweep found it, the reconciler put it back).
      expect(stdout).toMatch(/^blytz_drift_corrections_total\{kind="route_missing"\} 1$/m);
      expect(log.some((l) => l.msg === 'GET /readyz 200')).toBe(false); // probes are debug
    },
    SCRIPT_TIMEOUT_MS + 60_000,
  );
});
