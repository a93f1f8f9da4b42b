import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { OPENCLAW_VERSION } from '../../src/domain/openclaw.js';

/**
 * The pinned OpenClaw package's own CLI, for tests that check what Blytz writes against the real
 * thing (its config validator). Found where scripts/build-openclaw-image.sh installs the pinned
 * version (.tools/openclaw/<version>/), else at $BLYTZ_OPENCLAW_PACKAGE (a folder holding
 * node_modules/openclaw). A test that needs it fails, saying so, when it is missing: never skipped.
 */

const ROOT = resolve(import.meta.dirname, '../..');

export function openclawEntry(): string {
  const candidates = [
    join(ROOT, '.tools', 'openclaw', OPENCLAW_VERSION),
    ...(process.env['BLYTZ_OPENCLAW_PACKAGE'] ? [process.env['BLYTZ_OPENCLAW_PACKAGE']] : []),
  ].map((dir) => join(dir, 'node_modules', 'openclaw', 'openclaw.mjs'));
  const found = candidates.find((c) => existsSync(c));
  if (!found)
    throw new Error(`openclaw ${OPENCLAW_VERSION} not found (${candidates.join(', ')}): run scripts/build-openclaw-image.sh`);
  return found;
}

export interface Validation {
  /** What the validator's JSON verdict says (false when it printed none). */
  valid: boolean;
  /** The CLI's exit code: 0 for a valid config, 1 with the offending key otherwise. */
  exitCode: number;
  output: string;
}

/**
 * `openclaw config validate --json` on a config file, in a clean environment (OpenClaw's CLI
 * prints nothing at all under VITEST or NODE_ENV=test).
 */
export async function validateOpenClawConfig(path: string, home: string): Promise<Validation> {
  const env = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: home,
    OPENCLAW_CONFIG_PATH: path,
    OPENCLAW_STATE_DIR: join(home, '.openclaw'),
  };
  const { stdout, output, exitCode } = await promisify(execFile)(
    process.execPath,
    [openclawEntry(), 'config', 'validate', '--json'],
    { env, timeout: 120_000 },
  )
    .then(({ stdout, stderr }) => ({ stdout, output: `${stdout}${stderr}`, exitCode: 0 }))
    .catch((error: { stdout?: string; stderr?: string; code?: unknown }) => ({
      stdout: error.stdout ?? '',
      output: `${error.stdout ?? ''}${error.stderr ?? ''}`,
      exitCode: typeof error.code === 'number' ? error.code : 1,
    }));
  const json = /\{[\s\S]*\}/.exec(stdout)?.[0];
  return { valid: json ? (JSON.parse(json) as { valid?: boolean }).valid === true : false, exitCode, output };
}
