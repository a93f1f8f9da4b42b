import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeDocument, isPoolDocument, ManifestError, readDocuments, readManifests, type ManifestProblem } from '../../src/cli/manifests.js';

const TOKEN = `123456789:${'A'.repeat(35)}`;

function yamlDoc(name: string, extra = ''): string {
  return `apiVersion: blytz.cloud/v1alpha1
kind: Customer
metadata:
  name: ${name}
spec:
  email: ${name}@example.com
  displayName: Ada
${extra}`;
}

async function problemsOf(inputs: string[], stdin?: string): Promise<ManifestProblem[]> {
  try {
    await readManifests(inputs, stdin === undefined ? {} : { readStdin: async () => stdin });
  } catch (error) {
    if (error instanceof ManifestError) return error.problems;
    throw error;
  }
  throw new Error('expected a ManifestError');
}

describe('readManifests', () => {
  let dir: string;
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'blytz-manifests-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads a multi-document YAML file, skipping empty documents, numbering them by position', async () => {
    const path = file(
      'multi.yaml',
      `${yamlDoc('a-one')}---\n---\n${yamlDoc('a-two', `  telegram:\n    botToken: "${TOKEN}"\n`)}`,
    );
    const docs = await readManifests([path]);
    expect(docs.map((d) => [d.manifest.metadata.name, d.document, d.source])).toEqual([
      ['a-one', 1, path],
      ['a-two', 3, path],
    ]);
    expect(docs[1]?.manifest.spec.telegram?.botToken).toBe(TOKEN);
    // Defaults are applied to the parsed manifest; the raw document is what was written.
    expect(docs[0]?.manifest.spec).toMatchObject({ plan: 'personal', state: 'active', template: 'personal-assistant' });
    expect(docs[0]?.raw['spec']).not.toHaveProperty('plan');
  });

  it('reads JSON: one object, an array, or a List as printed by `get -o json`', async () => {
    const one = JSON.parse(
      JSON.stringify({
        apiVersion: 'blytz.cloud/v1alpha1',
        kind: 'Customer',
        metadata: { name: 'j-one' },
        spec: { email: 'j@example.com', displayName: 'J' },
      }),
    );
    const two = { ...one, metadata: { name: 'j-two' }, spec: { email: 'k@example.com', displayName: 'K' } };
    expect((await readManifests([file('one.json', JSON.stringify(one))])).map((d) => d.manifest.metadata.name)).toEqual([
      'j-one',
    ]);
    expect((await readManifests([file('arr.json', JSON.stringify([one, two]))])).map((d) => d.document)).toEqual([1, 2]);
    const list = { apiVersion: 'v1', kind: 'List', items: [one, two] };
    expect((await readManifests([file('list.json', JSON.stringify(list))])).map((d) => d.manifest.metadata.name)).toEqual([
      'j-one',
      'j-two',
    ]);
  });

  it('reads stdin for -', async () => {
    const docs = await readManifests(['-'], { readStdin: async () => yamlDoc('from-stdin') });
    expect(docs[0]).toMatchObject({ source: '<stdin>', document: 1, manifest: { metadata: { name: 'from-stdin' } } });
  });

  it('reads every manifest file of a directory in name order, ignoring other files', async () => {
    const sub = join(dir, 'dir');
    mkdirSync(sub);
    writeFileSync(join(sub, 'b.yml'), yamlDoc('d-b'));
    writeFileSync(join(sub, 'a.yaml'), yamlDoc('d-a'));
    writeFileSync(
      join(sub, 'c.json'),
      JSON.stringify({
        apiVersion: 'blytz.cloud/v1alpha1',
        kind: 'Customer',
        metadata: { name: 'd-c' },
        spec: { email: 'c@example.com', displayName: 'C' },
      }),
    );
    writeFileSync(join(sub, 'README.md'), '# not a manifest');
    const docs = await readManifests([sub]);
    expect(docs.map((d) => d.manifest.metadata.name)).toEqual(['d-a', 'd-b', 'd-c']);
  });

  it('reports malformed YAML with the file, document and line', async () => {
    // yamlDoc is 7 lines, the separator line 8: the bad line is line 9 of the file.
    const path = file('bad.yaml', `${yamlDoc('ok-one')}---\nkind: a: b\n`);
    const problems = await problemsOf([path]);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ source: path, document: 2 });
    expect(problems[0]?.message).toMatch(/^not valid YAML: .* at line 9, column \d+$/);
  });

  it('reports malformed JSON', async () => {
    const problems = await problemsOf([file('bad.json', '{"apiVersion": ')]);
    expect(problems[0]?.message).toMatch(/^not valid JSON/);
  });

  it('reports an unknown kind and a wrong apiVersion by field, without the schema noise', async () => {
    const path = file(
      'kinds.yaml',
      `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\napiVersion: blytz.cloud/v1\nkind: Customer\nmetadata: {name: x}\nspec: {}\n`,
    );
    const problems = await problemsOf([path]);
    expect(problems).toEqual([
      { source: path, document: 1, field: 'kind', message: expect.stringContaining('unknown kind "Deployment"') },
      {
        source: path,
        document: 2,
        field: 'apiVersion',
        message: expect.stringContaining('must be blytz.cloud/v1alpha1, not "blytz.cloud/v1"'),
      },
    ]);
  });

  it('reports every invalid field of every document at once', async () => {
    const path = file('fields.yaml', `${yamlDoc('f-one', '  plan: gold\n')}---\n${yamlDoc('F_two').replace('f_two@', 'x@')}`);
    const problems = await problemsOf([path]);
    expect(problems).toContainEqual({ source: path, document: 1, field: 'spec.plan', message: expect.any(String) });
    expect(problems).toContainEqual({
      source: path,
      document: 2,
      field: 'metadata.name',
      message: expect.stringContaining('DNS-1123'),
    });
  });

  it('rejects duplicate names within one input, naming both places', async () => {
    const a = file('dup-a.yaml', `${yamlDoc('same')}---\n${yamlDoc('other')}`);
    const b = file('dup-b.yaml', yamlDoc('same'));
    const problems = await problemsOf([a, b]);
    expect(problems).toEqual([
      { source: b, document: 1, field: 'metadata.name', message: expect.stringContaining(`also in ${a}, document 1`) },
    ]);
  });

  it('rejects a document that is not a mapping, a missing file, an empty directory and an empty input', async () => {
    expect((await problemsOf([file('scalar.yaml', 'just a string\n')]))[0]?.message).toMatch(/must be a Customer object/);
    expect((await problemsOf([join(dir, 'nope.yaml')]))[0]?.message).toBe('no such file or directory');
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    expect((await problemsOf([empty]))[0]?.message).toMatch(/no \.yaml, \.yml, \.json files/);
    expect((await problemsOf(['-'], '---\n'))[0]?.message).toBe('no Customer documents found');
  });

  it('formats problems as "file, document N: field: message"', async () => {
    const path = file('fmt.yaml', yamlDoc('fmt', '  state: running\n'));
    await expect(readManifests([path])).rejects.toThrow(`${path}, document 1: spec.state: `);
  });

  describe('Pools (apply and diff take them beside Customers)', () => {
    const poolDoc = (plan: string, size: unknown) => `apiVersion: blytz.cloud/v1alpha1\nkind: Pool\nmetadata:\n  name: ${plan}\nspec:\n  size: ${String(size)}\n`;
    const poolProblems = async (inputs: string[]): Promise<ManifestProblem[]> => {
      try {
        await readDocuments(inputs);
      } catch (error) {
        if (error instanceof ManifestError) return error.problems;
        throw error;
      }
      throw new Error('expected a ManifestError');
    };

    it('reads Pool and Customer documents of one stream in order, a pool named by its plan', async () => {
      const path = file('mixed.yaml', `${poolDoc('personal', 2)}---\n${yamlDoc('m-one')}`);
      const docs = await readDocuments([path]);
      expect(docs.map((d) => [isPoolDocument(d), describeDocument(d)])).toEqual([
        [true, `pool/personal (${path}, document 1)`],
        [false, `customer/m-one (${path}, document 2)`],
      ]);
      const [pool] = docs;
      expect(pool && isPoolDocument(pool) ? pool.pool.spec : undefined).toEqual({ size: 2, template: 'personal-assistant' });
    });

    it('reads a PoolList as printed by `get pools -o json`', async () => {
      const list = { apiVersion: 'v1', kind: 'PoolList', items: [{ apiVersion: 'blytz.cloud/v1alpha1', kind: 'Pool', metadata: { name: 'pro', generation: 3 }, spec: { size: 1 }, status: { ready: 1 } }] };
      const docs = await readDocuments([file('pools.json', JSON.stringify(list))]);
      expect(docs.map(describeDocument)).toEqual([expect.stringMatching(/^pool\/pro /)]);
    });

    it('reports a pool of no plan, a size out of range and a pool twice, each by field', async () => {
      const path = file('bad-pools.yaml', `${poolDoc('gold', 1)}---\n${poolDoc('personal', -1)}---\n${poolDoc('pro', 1)}---\n${poolDoc('pro', 2)}`);
      const problems = await poolProblems([path]);
      expect(problems).toEqual([
        { source: path, document: 1, field: 'metadata.name', message: expect.stringContaining('must be a plan') },
        { source: path, document: 2, field: 'spec.size', message: 'must be 0 or more' },
        { source: path, document: 4, field: 'metadata.name', message: expect.stringContaining('duplicate name "pro"') },
      ]);
    });

    it('a Pool and a Customer of the same name are two objects, not a duplicate', async () => {
      const docs = await readDocuments([file('same-name.yaml', `${poolDoc('pro', 1)}---\n${yamlDoc('pro')}`)]);
      expect(docs).toHaveLength(2);
    });

    it('commands that take only Customers still refuse a Pool', async () => {
      const problems = await problemsOf([file('only-pool.yaml', poolDoc('personal', 1))]);
      expect(problems[0]).toMatchObject({ field: 'kind', message: expect.stringContaining('unknown kind "Pool"') });
    });
  });
});
