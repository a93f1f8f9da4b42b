import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { customerSpecSchema } from '../../src/domain/customer.js';
import { isDns1123Label } from '../../src/domain/naming.js';
import { customerCrd, specOpenApiSchema } from '../../src/customer-resources/crd.js';
import { crdYaml } from '../../src/customer-resources/crd-yaml.js';
import { validateOpenApi } from '../support/fake-kube-api.js';

const root = join(import.meta.dirname, '..', '..');
const TOKEN = '123456789:AAbbccddeeffgghhiijjkkllmmnnooppqqr';
type Json = Record<string, unknown>;

const crdSchema = () => {
  const versions = (customerCrd()['spec'] as Json)['versions'] as Json[];
  return ((versions[0] as Json)['schema'] as Json)['openAPIV3Schema'] as Json;
};

function agree(spec: unknown): { zod: boolean; crd: boolean; crdErrors: string[] } {
  const zod = customerSpecSchema.safeParse(spec).success;
  const result = validateOpenApi(specOpenApiSchema(), spec, 'spec');
  return { zod, crd: result.errors.length === 0, crdErrors: result.errors.map((e) => `${e.field}: ${e.message}`) };
}

const base = { email: 'ada@example.com', displayName: 'Ada' };

describe('Customer CRD', () => {
  it('the file under deploy/kubernetes is the generated one (run node scripts/gen-crd.mjs after a schema change)', () => {
    const file = readFileSync(join(root, 'deploy/kubernetes/crd-customer.yaml'), 'utf8');
    expect(file).toBe(crdYaml());
    expect(parse(file)).toEqual(customerCrd());
  });

  it('is a namespaced blytz.cloud/v1alpha1 Customer with a status subresource and the printer columns', () => {
    const crd = customerCrd();
    const spec = crd['spec'] as Json;
    expect(spec['group']).toBe('blytz.cloud');
    expect(spec['scope']).toBe('Namespaced');
    expect((spec['names'] as Json)['kind']).toBe('Customer');
    const version = (spec['versions'] as Json[])[0] as Json;
    expect(version['name']).toBe('v1alpha1');
    expect(version['subresources']).toEqual({ status: {} });
    expect((version['additionalPrinterColumns'] as Json[]).map((c) => c['name'])).toEqual([
      'State',
      'Phase',
      'Ready',
      'URL',
      'Age',
    ]);
  });

  it('is structural: no additionalProperties:false, propertyNames, const or $schema anywhere', () => {
    const text = JSON.stringify(crdSchema());
    expect(text).not.toContain('"additionalProperties":false');
    expect(text).not.toContain('propertyNames');
    expect(text).not.toContain('"const"');
    expect(text).not.toContain('$schema');
  });

  it('fills in the same defaults as the domain schema', () => {
    const zod = customerSpecSchema.parse(base);
    const crd = validateOpenApi(specOpenApiSchema(), base).value as Json;
    for (const field of ['plan', 'template', 'state', 'instructions', 'paused'] as const) expect(crd[field]).toEqual(zod[field]);
  });

  const cases: Array<[string, unknown]> = [
    ['minimal', base],
    [
      'everything',
      {
        ...base,
        plan: 'pro',
        template: 'personal-assistant',
        state: 'suspended',
        instructions: 'hi\n\tthere',
        paused: true,
        telegram: { botToken: TOKEN },
        model: { provider: 'openai', apiKey: 'sk-1' },
      },
    ],
    ['secret ref', { ...base, telegram: { botTokenSecretRef: { name: 'ada-bot', key: 'token' } } }],
    ['no email', { displayName: 'Ada' }],
    ['bad email', { ...base, email: 'ada' }],
    ['long email', { ...base, email: `${'a'.repeat(250)}@example.com` }],
    ['blank name', { ...base, displayName: '   ' }],
    ['nbsp name', { ...base, displayName: '\u00a0\u3000' }],
    ['tab name', { ...base, displayName: '\t' }],
    ['padded name', { ...base, displayName: '  Ada  ' }],
    ['long name', { ...base, displayName: 'x'.repeat(51) }],
    ['50 chars', { ...base, displayName: 'x'.repeat(50) }],
    ['NUL', { ...base, displayName: 'A\u0000da' }],
    ['DEL', { ...base, instructions: 'x\u007f' }],
    ['C1', { ...base, instructions: 'x\u0085' }],
    ['bidi', { ...base, instructions: 'x\u202e' }],
    ['isolate', { ...base, instructions: 'x\u2069' }],
    ['newline ok', { ...base, instructions: 'a\r\nb' }],
    ['vertical tab', { ...base, instructions: 'a\u000bb' }],
    ['bad plan', { ...base, plan: 'huge' }],
    ['bad state', { ...base, state: 'deleted' }],
    ['bad template', { ...base, template: '../etc' }],
    ['unknown field', { ...base, color: 'blue' }],
    ['unknown nested', { ...base, telegram: { chatId: 1 } }],
    ['bad token', { ...base, telegram: { botToken: '123:abc' } }],
    ['ref missing key', { ...base, telegram: { botTokenSecretRef: { name: 'x' } } }],
    ['ref bad name', { ...base, telegram: { botTokenSecretRef: { name: 'Bad_Name', key: 'k' } } }],
    ['ref long name', { ...base, telegram: { botTokenSecretRef: { name: 'a'.repeat(64), key: 'k' } } }],
    ['ref empty key', { ...base, telegram: { botTokenSecretRef: { name: 'a', key: '' } } }],
    ['bad provider', { ...base, model: { provider: 'acme' } }],
    ['empty api key', { ...base, model: { apiKey: '' } }],
    ['paused not bool', { ...base, paused: 'yes' }],
    ['instructions too long', { ...base, instructions: 'x'.repeat(5001) }],
  ];

  it.each(cases)('accepts and rejects alike: %s', (_name, spec) => {
    const result = agree(spec);
    expect(result.crd, result.crdErrors.join('; ')).toBe(result.zod);
  });

  it('accepts and rejects alike on generated specs (property)', () => {
    const text = fc.oneof(
      fc.string({ maxLength: 60 }),
      fc.string({ unit: 'binary', maxLength: 8 }),
      fc.constantFrom('Ada', ' ', '\u00a0', '\u2066x', 'x\u0000', 'a\tb', '\ufeff'),
    );
    const spec = fc.record(
      {
        email: fc.oneof(fc.constant('ada@example.com'), fc.emailAddress(), fc.string({ maxLength: 10 })),
        displayName: text,
        plan: fc.constantFrom('personal', 'pro', 'x'),
        state: fc.constantFrom('active', 'pending', 'suspended', 'cancelled', 'gone'),
        instructions: text,
        template: fc.oneof(fc.constant('personal-assistant'), fc.stringMatching(/^[a-z0-9-]{0,5}$/)),
        telegram: fc.record(
          { botTokenSecretRef: fc.record({ name: fc.oneof(fc.constant('ok'), fc.stringMatching(/^[a-z-]{0,5}$/)), key: text }) },
          { requiredKeys: [] },
        ),
        paused: fc.oneof(fc.boolean(), fc.constant('no')),
      },
      { requiredKeys: ['email'] },
    );
    fc.assert(
      fc.property(spec, (s) => {
        const result = agree(s);
        expect(result.crd, `${JSON.stringify(s)}: ${result.crdErrors.join('; ')}`).toBe(result.zod);
      }),
      { numRuns: 500 },
    );
    // 500 schema validations take about 2 s here, more while the other suites share the 2 cores.
  }, 30_000);

  it('restricts metadata.name to DNS-1123 labels like the domain', () => {
    for (const name of ['alice-example-com', 'a', 'A', '-a', 'a-', 'a'.repeat(63), 'a'.repeat(64), 'a.b']) {
      const result = validateOpenApi(crdSchema(), { metadata: { name }, spec: base });
      expect(result.errors.length === 0, name).toBe(isDns1123Label(name));
    }
  });
});
