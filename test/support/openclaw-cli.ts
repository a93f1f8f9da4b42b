import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

/**
 * The pinned OpenClaw package's own CLI, for tests that check what Blytz writes against the real
 * thing (its config validator, its gateway). Found at $BLYTZ_OPENCLAW_BIN, else where
 * scripts/build-openclaw-image.sh installs the pinned version (.tools/openclaw/<version>/), else
 * /tmp/oc (a machine's preinstalled copy). A test that needs it fails, saying so, when none is
 * there: it is never skipped.
 */

export const OPENCLAW_VERSION = '2026.9.6';
const ROOT = resolve(import.meta.dirname, '../..');

export function openclawBin(): string {
  const candidates = [
    process.env['BLYTZ_OPENCLAW_BIN'],
    join(ROOT, '.tools/openclaw', OPENCLAW_VERSION, 'node_modules/.bin/openclaw'),
    '/tmp/oc/node_modules/.bin/openclaw',
  ].filter((c): c is string => Boolean(c));
  const found = candidates.find((c) => existsSync(c));
  if (!found) {
    throw new Error(
      `openclaw ${OPENCLAW_VERSION} not found (looked in ${candidates.join(', ')}): ` +
        `run scripts/build-openclaw-image.sh or npm i --prefix /tmp/oc openclaw@${OPENCLAW_VERSION}`,
    );
  }
  return found;
}

/**
 * The environment openclaw runs in: Node 24 first on PATH (the package needs >= 24.16) and
 * nothing of the test runner's (openclaw prints nothing when it sees VITEST or NODE_ENV=test).
 */
export function openclawEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('VITEST') || key === 'NODE_ENV' || key.startsWith('BLYTZ_') || key.startsWith('OPENCLAW_')) continue;
    env[key] = value;
  }
  return { ...env, PATH: `${join(ROOT, '.tools/bin')}:${process.env['PATH'] ?? ''}`, NO_COLOR: '1', ...extra };
}

export interface Validation {
  valid: boolean;
  output: string;
}

/** `openclaw config validate --json` on a config file. */
export async function validateOpenClawConfig(path: string, home: string): Promise<Validation> {
  try {
    const { stdout } = await promisify(execFile)(openclawBin(), ['config', 'validate', '--json'], {
      env: openclawEnv({ OPENCLAW_CONFIG_PATH: path, HOME: home }),
      timeout: 60_000,
    });
    return { valid: (JSON.parse(stdout) as { valid?: boolean }).valid === true, output: stdout };
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string };
    return { valid: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}
