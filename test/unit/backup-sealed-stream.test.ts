import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { redactOpenClawConfig } from '../../src/backup/redact.js';
import { ArchiveIntegrityError, createOpenStream, createSealStream, readSealedContext } from '../../src/backup/sealed-stream.js';

const key = randomBytes(32);
const otherKey = randomBytes(32);

/** Feeds `data` in pieces of the given sizes (cycled), as a file or socket would. */
function piecewise(data: Buffer, sizes: number[]): Readable {
  const pieces: Buffer[] = [];
  let at = 0;
  let i = 0;
  while (at < data.length) {
    const size = Math.max(1, sizes[i++ % sizes.length] ?? 1);
    pieces.push(data.subarray(at, at + size));
    at += size;
  }
  return Readable.from(pieces);
}

async function seal(plain: Buffer, context = 'alice/1', chunk = 64): Promise<Buffer> {
  return buffer(Readable.from([plain]).pipe(createSealStream(key, context, chunk)));
}

async function open(sealed: Buffer, keys = [key], options: { expectContext?: string } = {}, sizes = [1000]): Promise<Buffer> {
  return buffer(piecewise(sealed, sizes).pipe(createOpenStream(keys, options)));
}

describe('sealed backup stream', () => {
  it('round-trips any bytes, any chunk size, any read pattern', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 3000 }),
        fc.integer({ min: 1, max: 300 }),
        fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 5 }),
        async (bytes, chunk, sizes) => {
          const plain = Buffer.from(bytes);
          const sealed = await buffer(piecewise(plain, sizes).pipe(createSealStream(key, 'ctx', chunk)));
          expect((await open(sealed, [key], {}, sizes)).equals(plain)).toBe(true);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('refuses an archive with any single byte changed', async () => {
    const plain = randomBytes(500);
    const sealed = await seal(plain);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: sealed.length - 1 }), fc.integer({ min: 1, max: 255 }), async (at, flip) => {
        const tampered = Buffer.from(sealed);
        tampered[at] = (tampered[at] as number) ^ flip;
        await expect(open(tampered)).rejects.toBeInstanceOf(ArchiveIntegrityError);
      }),
      { numRuns: 200 },
    );
  });

  it('refuses a truncated archive, also cut at a chunk boundary, and one with bytes appended', async () => {
    const sealed = await seal(randomBytes(64 * 4 + 10));
    const header = sealed.length - (4 * (64 + 16) + (10 + 16));
    for (const cut of [sealed.length - 1, header + 80, header + 160, header, 5]) {
      await expect(open(sealed.subarray(0, cut))).rejects.toBeInstanceOf(ArchiveIntegrityError);
    }
    await expect(open(Buffer.concat([sealed, Buffer.from([0])]))).rejects.toBeInstanceOf(ArchiveIntegrityError);
  });

  it('refuses another key, accepts a previous key listed after the current one', async () => {
    const plain = randomBytes(200);
    const sealed = await seal(plain);
    await expect(open(sealed, [otherKey])).rejects.toThrow(/key this server does not have/);
    expect((await open(sealed, [otherKey, key])).equals(plain)).toBe(true);
  });

  it('binds the context: readable without the key, and a mismatch is refused', async () => {
    const sealed = await seal(Buffer.from('x'), 'customer alice backup 7');
    expect(readSealedContext(sealed)).toBe('customer alice backup 7');
    await expect(open(sealed, [key], { expectContext: 'customer bob backup 7' })).rejects.toThrow(/belongs to/);
    expect((await open(sealed, [key], { expectContext: 'customer alice backup 7' })).toString()).toBe('x');
  });

  it('seals an empty stream into one authenticated last chunk', async () => {
    const sealed = await seal(Buffer.alloc(0));
    expect((await open(sealed)).length).toBe(0);
  });
});

describe('openclaw.json redaction', () => {
  it('removes the secrets the controller renders and keeps what OpenClaw wrote', () => {
    const config = {
      env: { vars: { ANTHROPIC_API_KEY: 'sk-ant-secret' }, OPENAI_API_KEY: 'sk-openai-secret' },
      models: { providers: { anthropic: { apiKey: 'sk-ant-own-secret', timeoutSeconds: 30 } } },
      gateway: { mode: 'local', port: 18789, auth: { mode: 'token', token: 'gw-secret' } },
      channels: { telegram: { enabled: true, botToken: '123:secret', dmPolicy: 'pairing', allowFrom: ['42'] } },
      agents: { defaults: { workspace: '/home/node/.openclaw/workspace' } },
      plugins: { entries: [{ name: 'x', apiKey: 'nested-secret', password: 'p' }] },
      meta: { lastTouchedVersion: '2026.9.6' },
    };
    const { text, removed } = redactOpenClawConfig(JSON.stringify(config));
    expect(text).not.toMatch(/secret|"p"/);
    const parsed = JSON.parse(text) as typeof config;
    expect(parsed.channels.telegram.allowFrom).toEqual(['42']);
    expect(parsed.gateway.auth.mode).toBe('token');
    expect(parsed.meta.lastTouchedVersion).toBe('2026.9.6');
    expect(parsed.models.providers.anthropic).toEqual({ timeoutSeconds: 30 });
    expect(removed).toEqual(
      expect.arrayContaining([
        'env.vars',
        'models.providers.anthropic.apiKey',
        'gateway.auth.token',
        'channels.telegram.botToken',
        'plugins.entries.0.apiKey',
      ]),
    );
  });

  it('drops a file it cannot parse rather than keep secrets it cannot see', () => {
    expect(redactOpenClawConfig('{ token: "json5-secret" }').text).toBe('');
    expect(redactOpenClawConfig('[1]').text).toBe('');
  });

  it("drops a file nested deeper than any config, which the container can write to hold the controller's thread", () => {
    // A chain of objects over an array of a million zeros (4 MB, the most a config is read):
    // walked copying its path per value, and indented, it cost depth times width.
    const hostile = '{"a":'.repeat(40) + `[${Array(1_000_000).fill('0').join(',')}]` + '}'.repeat(40);
    expect(redactOpenClawConfig(hostile)).toEqual({ text: '', removed: ['(nested too deeply: dropped)'] });
    // 32 levels are kept, and a secret that deep is still found.
    const deep = '{"a":'.repeat(30) + '{"token":"deep-secret","kept":[1]}' + '}'.repeat(30);
    const { text, removed } = redactOpenClawConfig(deep);
    expect(text).not.toContain('deep-secret');
    expect(text).toContain('"kept"');
    expect(removed).toEqual([`${'a.'.repeat(30)}token`]);
  });
});
