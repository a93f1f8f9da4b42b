import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, sameJson, stableHash } from '../../src/domain/canonical-json.js';
import { API_VERSION, KIND, parseManifest, ValidationError, type FieldError } from '../../src/domain/customer.js';
import { SecretBox } from '../../src/store/secret-box.js';

const BOT_TOKEN = '123456789:AAbbccddeeffgghhiijjkkllmmnnooppqqr';
const MEGABYTE = 'a'.repeat(1024 * 1024);

function manifest(overrides: { metadata?: Record<string, unknown>; spec?: Record<string, unknown>; [k: string]: unknown } = {}) {
  const { metadata, spec, ...rest } = overrides;
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: { name: 'alice-example-com', ...metadata },
    spec: { email: 'alice@example.com', displayName: 'Alice', ...spec },
    ...rest,
  };
}

/** The causes of a rejected manifest. */
function causes(input: unknown): FieldError[] {
  try {
    parseManifest(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    const { causes } = error as ValidationError;
    expect(causes.length).toBeGreaterThan(0);
    for (const cause of causes) {
      // Clear: short, and never an echo of a huge or hostile input.
      expect(cause.message.length).toBeLessThan(200);
      expect(cause.message).not.toContain('\u0000');
    }
    expect((error as Error).message.length).toBeLessThan(2000);
    return causes;
  }
  throw new Error('manifest was accepted');
}

function fieldsOf(input: unknown): string[] {
  return causes(input).map((c) => c.field);
}

describe('Customer manifest', () => {
  it('parses a valid manifest and fills in defaults', () => {
    const parsed = parseManifest(manifest());
    expect(parsed.metadata.name).toBe('alice-example-com');
    expect(parsed.spec).toEqual({
      email: 'alice@example.com',
      displayName: 'Alice',
      plan: 'personal',
      template: 'personal-assistant',
      state: 'active',
      instructions: '',
      paused: false,
    });
  });

  it('keeps given fields, unicode text and a bot token', () => {
    const parsed = parseManifest(
      manifest({
        metadata: { labels: { team: 'a', 'blytz.cloud/tier': 'gold' } },
        spec: {
          displayName: 'Zoë 日本',
          plan: 'pro',
          state: 'suspended',
          instructions: 'Line one\n\tLine two — with unicode ✓',
          telegram: { botToken: BOT_TOKEN },
          paused: true,
        },
        status: { phase: 'Ready' },
      }),
    );
    expect(parsed.spec).toMatchObject({ displayName: 'Zoë 日本', plan: 'pro', state: 'suspended', paused: true });
    expect(parsed.spec.telegram?.botToken).toBe(BOT_TOKEN);
    expect(parsed.metadata.labels).toEqual({ team: 'a', 'blytz.cloud/tier': 'gold' });
  });

  it.each([
    ['spec.email', manifest({ spec: { email: 'not-an-email' } })],
    ['spec.email', manifest({ spec: { email: undefined } })],
    ['spec.displayName', manifest({ spec: { displayName: '   ' } })],
    ['spec.telegram.botToken', manifest({ spec: { telegram: { botToken: 'abc' } } })],
    ['spec.telegram.botToken', manifest({ spec: { telegram: { botToken: `${BOT_TOKEN}x` } } })],
    ['spec.state', manifest({ spec: { state: 'running' } })],
    ['spec.plan', manifest({ spec: { plan: 'enterprise' } })],
    ['spec.paused', manifest({ spec: { paused: 'yes' } })],
    ['spec.template', manifest({ spec: { template: '../etc' } })],
    ['metadata.name', manifest({ metadata: { name: 'Alice' } })],
    ['metadata.name', manifest({ metadata: { name: '-alice' } })],
    ['metadata.name', manifest({ metadata: { name: '' } })],
    ['metadata.name', manifest({ metadata: { name: 'a.b' } })],
    ['apiVersion', manifest({ apiVersion: 'v1' })],
    ['kind', manifest({ kind: 'Pod' })],
    ['metadata', { apiVersion: API_VERSION, kind: KIND, spec: manifest().spec }],
    ['spec', { apiVersion: API_VERSION, kind: KIND, metadata: { name: 'alice' } }],
  ])('names %s', (field, input) => {
    expect(fieldsOf(input)).toContain(field);
  });

  it('names the apiVersion and kind it wants', () => {
    const found = causes(manifest({ apiVersion: 'blytz.cloud/v1', kind: 'Customers' }));
    expect(found).toEqual(
      expect.arrayContaining([
        { field: 'apiVersion', message: expect.stringContaining(API_VERSION) as string },
        { field: 'kind', message: expect.stringContaining(KIND) as string },
      ]),
    );
  });

  it.each([
    ['spec.botToken', manifest({ spec: { botToken: BOT_TOKEN } })],
    ['spec.telegram.token', manifest({ spec: { telegram: { token: BOT_TOKEN } } })],
    ['metadata.owner', manifest({ metadata: { owner: 'x' } })],
    ['extra', manifest({ extra: true })],
  ])('names the unknown field %s by its path', (field, input) => {
    expect(causes(input)).toContainEqual({ field, message: expect.stringMatching(/unknown/) as string });
  });

  it('never puts a rejected bot token into the error', () => {
    const badToken = '123456789:short-but-secret';
    const error = (() => {
      try {
        parseManifest(manifest({ spec: { telegram: { botToken: badToken } } }));
      } catch (e) {
        return e as Error;
      }
      throw new Error('accepted');
    })();
    expect(error.message).not.toContain(badToken);
  });

  describe('hostile input', () => {
    it.each([
      ['spec.email', { spec: { email: `${MEGABYTE}@example.com` } }],
      ['spec.displayName', { spec: { displayName: MEGABYTE } }],
      ['spec.instructions', { spec: { instructions: MEGABYTE } }],
      ['spec.telegram.botToken', { spec: { telegram: { botToken: `123456789:${MEGABYTE}` } } }],
      ['metadata.name', { metadata: { name: MEGABYTE } }],
    ])('rejects a 1 MB string in %s', (field, overrides) => {
      expect(fieldsOf(manifest(overrides))).toContain(field);
    });

    it.each([
      ['spec.displayName', { spec: { displayName: 'Ali\u0000ce' } }],
      ['spec.instructions', { spec: { instructions: 'be nice\u0000' } }],
      ['spec.email', { spec: { email: 'alice\u0000@example.com' } }],
      ['metadata.name', { metadata: { name: 'alice\u0000' } }],
    ])('rejects a NUL byte in %s', (field, overrides) => {
      expect(fieldsOf(manifest(overrides))).toContain(field);
    });

    it.each([
      ['escape', '\u001b[31mred'],
      ['bell', 'ding\u0007'],
      ['DEL', 'x\u007f'],
      ['C1 next line', 'x\u0085y'],
      ['C1 CSI', 'x\u009by'],
      ['right-to-left override', 'Alice\u202egnp.exe'],
      ['bidi isolate', 'x\u2066y\u2069'],
    ])('rejects a unicode control character (%s) in displayName and instructions', (_label, text) => {
      expect(fieldsOf(manifest({ spec: { displayName: text } }))).toContain('spec.displayName');
      expect(fieldsOf(manifest({ spec: { instructions: text } }))).toContain('spec.instructions');
    });

    it.each([
      "x'; DROP TABLE customers;--",
      'alice; DELETE FROM customers',
      "' OR 1=1 --",
      '../../etc/passwd',
      'alice/../bob',
      'a'.repeat(64),
      `${'a'.repeat(62)}-b`,
      'ALICE',
      'alice-',
      'alice_bob',
      'alice..bob',
      'ålice',
    ])('rejects the name %j', (name) => {
      const found = causes(manifest({ metadata: { name } }));
      expect(found.map((c) => c.field)).toContain('metadata.name');
      expect(found.find((c) => c.field === 'metadata.name')?.message).toMatch(/DNS-1123|at most 63/);
    });

    it('accepts a name of exactly 63 characters', () => {
      expect(parseManifest(manifest({ metadata: { name: 'a'.repeat(63) } })).metadata.name).toHaveLength(63);
    });

    it('keeps SQL fragments in free text as text (they are parameters, never SQL)', () => {
      const parsed = parseManifest(manifest({ spec: { instructions: "x'; DROP TABLE customers;--" } }));
      expect(parsed.spec.instructions).toBe("x'; DROP TABLE customers;--");
    });

    it.each([null, undefined, 42, 'a string', [], [manifest()]])('rejects a non-object manifest %j', (input) => {
      expect(() => parseManifest(input)).toThrow(ValidationError);
    });
  });
});

describe('SecretBox', () => {
  it('round-trips a secret and hides it in the sealed form', () => {
    const box = new SecretBox(randomBytes(32));
    const sealed = box.seal(BOT_TOKEN, 'alice');
    expect(sealed).not.toContain(BOT_TOKEN);
    expect(sealed).not.toContain('AAbbcc');
    expect(sealed.startsWith('v1:')).toBe(true);
    expect(box.open(sealed, 'alice')).toBe(BOT_TOKEN);
  });

  it('seals the same value differently each time', () => {
    const box = new SecretBox(randomBytes(32));
    expect(box.seal('same', 'alice')).not.toBe(box.seal('same', 'alice'));
  });

  it('round-trips unicode and the empty string', () => {
    const box = new SecretBox(randomBytes(32));
    for (const value of ['', 'ключ 🔑', MEGABYTE]) expect(box.open(box.seal(value, 'c'), 'c')).toBe(value);
  });

  it('fails to open with the wrong context (another customer)', () => {
    const box = new SecretBox(randomBytes(32));
    const sealed = box.seal(BOT_TOKEN, 'alice');
    expect(() => box.open(sealed, 'bob')).toThrow();
    expect(() => box.open(sealed, 'alice/gateway')).toThrow();
  });

  it('fails to open with another key', () => {
    const sealed = new SecretBox(randomBytes(32)).seal(BOT_TOKEN, 'alice');
    expect(() => new SecretBox(randomBytes(32)).open(sealed, 'alice')).toThrow();
  });

  it('fails to open a tampered ciphertext, tag or iv', () => {
    const box = new SecretBox(randomBytes(32));
    const sealed = box.seal(BOT_TOKEN, 'alice');
    const parts = sealed.split(':');
    for (const index of [1, 2, 3]) {
      const bytes = Buffer.from(parts[index]!, 'base64url');
      bytes[0] = bytes[0]! ^ 0x01;
      const tampered = parts.map((p, i) => (i === index ? bytes.toString('base64url') : p)).join(':');
      expect(() => box.open(tampered, 'alice')).toThrow();
    }
    // A truncated tag must not be accepted either (GCM would otherwise check fewer bits).
    const shortTag = [parts[0], parts[1], parts[2]!.slice(0, 6), parts[3]].join(':');
    expect(() => box.open(shortTag, 'alice')).toThrow();
  });

  it.each(['', 'v1', 'v2:a:b:c', 'not sealed at all', 'v1:a:b'])('rejects the malformed value %j', (value) => {
    expect(() => new SecretBox(randomBytes(32)).open(value, 'alice')).toThrow();
  });

  it('insists on a 32-byte key and never serializes it', () => {
    expect(() => new SecretBox(randomBytes(16))).toThrow(/32 bytes/);
    const key = randomBytes(32);
    const box = new SecretBox(key);
    expect(JSON.stringify({ box })).not.toContain(key.toString('base64'));
    expect(JSON.stringify({ box })).not.toContain(key.toString('hex'));
  });
});

describe('stableHash', () => {
  it('does not depend on key order, at any depth', () => {
    const a = {
      email: 'a@x.com',
      plan: 'pro',
      telegram: { botTokenSet: true, ref: { name: 'n', key: 'k' } },
      labels: { x: '1', y: '2' },
    };
    const b = {
      labels: { y: '2', x: '1' },
      telegram: { ref: { key: 'k', name: 'n' }, botTokenSet: true },
      plan: 'pro',
      email: 'a@x.com',
    };
    expect(stableHash(a)).toBe(stableHash(b));
    expect(canonicalJson(a)).toBe(canonicalJson(b));
    expect(stableHash(a)).toMatch(/^[0-9a-f]{16}$/);
  });

  it('changes when a value changes, and keeps array order significant', () => {
    expect(stableHash({ plan: 'pro' })).not.toBe(stableHash({ plan: 'personal' }));
    expect(stableHash({ list: [1, 2] })).not.toBe(stableHash({ list: [2, 1] }));
    expect(stableHash({ a: { b: 1 } })).not.toBe(stableHash({ a: { b: '1' } }));
  });

  it('ignores undefined fields like JSON does', () => {
    expect(stableHash({ a: 1, b: undefined })).toBe(stableHash({ a: 1 }));
  });

  it('hashes dates by their value', () => {
    const first = { lastTransitionTime: new Date('2026-01-01T00:00:00Z') };
    const second = { lastTransitionTime: new Date('2026-06-01T00:00:00Z') };
    expect(stableHash(first)).not.toBe(stableHash(second));
    expect(canonicalJson(first)).toBe(JSON.stringify(first));
  });

  it('is independent of key order for any object (property)', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (object) => {
        const reversed = Object.fromEntries(Object.entries(object).reverse());
        expect(stableHash(reversed)).toBe(stableHash(object));
        expect(JSON.parse(canonicalJson(object))).toEqual(JSON.parse(JSON.stringify(object)));
      }),
    );
  });

  it('writes exactly what JSON.stringify of a key-sorted copy wrote (hashes stored in labels must not change) (property)', () => {
    // The key-sorted copy it was before it wrote the text directly.
    const sortedCopy = (value: unknown): unknown => {
      if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
        return sortedCopy((value as { toJSON(): unknown }).toJSON());
      }
      if (Array.isArray(value)) return value.map(sortedCopy);
      if (value !== null && typeof value === 'object') {
        const out: Record<string, unknown> = {};
        for (const key of Object.keys(value).sort()) {
          const v = (value as Record<string, unknown>)[key];
          if (v !== undefined) Object.defineProperty(out, key, { value: sortedCopy(v), enumerable: true, writable: true, configurable: true });
        }
        return out;
      }
      return value;
    };
    const key = fc.oneof(fc.string(), fc.constantFrom('0', '1', '10', '9', '01', '-1', '1.5', '4294967294', '4294967295', '__proto__', 'a'));
    const leaf = fc.oneof(
      fc.jsonValue(),
      fc.constant(undefined),
      fc.constant(() => 1),
      fc.date({ noInvalidDate: true }),
      fc.double(),
      fc.constant(-0),
    );
    const tree = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('node')), fc.dictionary(key, tie('node'))),
    })).node;
    fc.assert(
      fc.property(tree, (value) => {
        expect(canonicalJson(value)).toBe(JSON.stringify(sortedCopy(value)));
      }),
      { numRuns: 1000 },
    );
    // And a few by hand: index-like keys first, by value; holes and undefined in arrays as null.
    const holey: unknown[] = Object.assign(new Array<unknown>(3), { 0: undefined, 2: 2 });
    const sample = { b: 1, 10: 'ten', a: holey, 9: { z: new Date(0), y: undefined }, '01': true };
    expect(canonicalJson(sample)).toBe(JSON.stringify(sortedCopy(sample)));
    expect(canonicalJson(sample)).toBe('{"9":{"z":"1970-01-01T00:00:00.000Z"},"10":"ten","01":true,"a":[null,null,2],"b":1}');
  });

  it('sameJson says whether two values have the same canonical JSON (property)', () => {
    const key = fc.constantFrom('a', 'b', 'c', '0', '1');
    const leaf = fc.oneof(
      fc.constantFrom(null, undefined, 0, -0, 1, '1', 'a', true, false, Number.NaN, Number.POSITIVE_INFINITY),
      fc.constant(() => 1),
      fc.constantFrom(new Date(0), '1970-01-01T00:00:00.000Z'),
    );
    const tree = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('node'), { maxLength: 3 }), fc.dictionary(key, tie('node'), { maxKeys: 3 })),
    })).node;
    const reordered = (value: unknown): unknown => {
      if (Array.isArray(value)) return value.map(reordered);
      if (value === null || typeof value !== 'object' || value instanceof Date) return value;
      return Object.fromEntries(Object.entries(value).reverse().map(([k, v]) => [k, reordered(v)]));
    };
    fc.assert(
      fc.property(tree, tree, (a, b) => {
        expect(sameJson(a, b)).toBe(canonicalJson(a) === canonicalJson(b));
        expect(sameJson(a, reordered(a))).toBe(true);
        expect(sameJson(reordered(b), a)).toBe(canonicalJson(a) === canonicalJson(b));
      }),
      { numRuns: 1000 },
    );
    expect(sameJson({ a: 1, b: undefined }, { a: 1 })).toBe(true);
    expect(sameJson({ t: new Date(0) }, { t: '1970-01-01T00:00:00.000Z' })).toBe(true);
    expect(sameJson([undefined], [null])).toBe(true);
    expect(sameJson({ a: [1, 2] }, { a: [2, 1] })).toBe(false);
  });
});
