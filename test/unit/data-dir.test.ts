import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensurePrivateDir, readOrCreateSecretFile } from '../../src/data-dir.js';

describe('the data directory', () => {
  const roots: string[] = [];
  const root = () => {
    const dir = mkdtempSync(join(tmpdir(), 'blytz-datadir-'));
    roots.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of roots.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  const mode = (path: string) => statSync(path).mode & 0o777;

  it('is created private (0700), and a folder made beforehand with a wider mode is tightened', () => {
    const fresh = join(root(), 'data');
    ensurePrivateDir(fresh);
    expect(mode(fresh)).toBe(0o700);

    const premade = join(root(), 'premade');
    mkdirSync(premade);
    chmodSync(premade, 0o755);
    ensurePrivateDir(premade);
    expect(mode(premade)).toBe(0o700);
  });

  it('generated secrets are owner-only (0600), also when the file was made wider beforehand', () => {
    const dir = root();
    const file = join(dir, 'admin-token');
    expect(readOrCreateSecretFile(file, () => 'generated')).toBe('generated');
    expect(mode(file)).toBe(0o600);
    chmodSync(file, 0o644);
    expect(readOrCreateSecretFile(file, () => 'other')).toBe('generated');
    expect(mode(file)).toBe(0o600);
  });
});
