import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { type BlytzRun, freePort, ROOT, runBlytz, type Served, startServe } from '../support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The built `blytz` command as an operator runs it, against a real `blytz serve` on Postgres
 * (isolated by startServe: its own Caddy, instance label and port range).
 * `make test` builds dist/ first; locally run `tsc -p tsconfig.build.json` before this file.
 */

const EXAMPLES = join(ROOT, 'examples/customers');
// The fake token of examples/customers: it must never appear in any output.
const EXAMPLE_BOT_TOKEN = `123456789:${'A'.repeat(35)}`;

const outputs: string[] = [];

// Command output parsed as loosely typed JSON/YAML; the assertions check its shape.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

/** `blytz ARGS`, its output kept for the check that no secret is ever printed. */
async function run(args: string[], options: { env?: Record<string, string>; input?: string } = {}): Promise<BlytzRun> {
  const result = await runBlytz(args, options);
  outputs.push(result.stdout, result.stderr);
  return result;
}

describe('blytz CLI against blytz serve', () => {
  let db: TestDatabase;
  let server: Served;
  let work: string;
  let cli: (args: string[], options?: { env?: Record<string, string>; input?: string }) => Promise<BlytzRun>;

  beforeAll(async () => {
    db = await createTestDatabase();
    server = await startServe({ databaseUrl: db.url });
    work = mkdtempSync(join(tmpdir(), 'blytz-e2e-work-'));
    cli = async (args, options = {}) => {
      const res = await run([...args, '--server', server.url], {
        ...options,
        env: { BLYTZ_ADMIN_TOKEN: server.adminToken, ...options.env },
      });
      // The server itself went away: its log says why, which the CLI's message cannot.
      if (res.stderr.includes('cannot reach the blytz server'))
        throw new Error(`blytz serve is gone:\n${server.log().slice(-4000)}`);
      return res;
    };
  });

  afterAll(async () => {
    await server?.stop();
    await db?.drop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('applies the example directory, then finds nothing to change', async () => {
    const first = await cli(['apply', '-f', EXAMPLES]);
    // Neither example has a model key and this server runs no model gateway: applied, and said so.
    expect(first.stderr.trimEnd().split('\n')).toEqual(
      ['alice-example-com', 'bob-example-com'].map((name) =>
        expect.stringMatching(
          new RegExp(`^Warning: customer/${name} has no model key of its own and this server does not offer included model access \\(the model gateway is off`),
        ),
      ),
    );
    expect(first.code).toBe(0);
    expect(first.stdout).toBe('customer/alice-example-com created\ncustomer/bob-example-com created\n');

    const again = await cli(['apply', '-f', `${EXAMPLES}/`]);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('customer/alice-example-com unchanged\ncustomer/bob-example-com unchanged\n');
  });

  it('get shows the examples converge to Ready', async () => {
    const phases = await waitFor(async () => {
      const list = JSON.parse((await cli(['get', 'customers', '-o', 'json'])).stdout) as Json;
      const items = list['items'] as Json[];
      const ready = items.every((c) => c['status'].phase === 'Ready');
      return ready && items.length === 2 ? items.map((c) => [c['metadata'].name, c['status'].phase]) : undefined;
    }, 90_000).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\n${server.log().slice(-3000)}`, { cause: error });
    });
    expect(phases).toEqual([
      ['alice-example-com', 'Ready'],
      ['bob-example-com', 'Ready'],
    ]);
    const table = await cli(['get', 'customers']);
    // The URL a person can open: with the port Caddy serves customers on.
    expect(table.stdout).toMatch(
      new RegExp(
        `^alice-example-com +active +Ready +True +http://alice-example-com\\.blytz\\.localhost:${server.caddyListenPort} +\\d+[smh]$`,
        'm',
      ),
    );
    const described = await cli(['describe', 'customer', 'alice-example-com']);
    expect(described.stdout).toMatch(/^ {2}Ready +True /m);
  });

  it('get customers prints an aligned table; -o wide adds columns', async () => {
    const res = await cli(['get', 'customers']);
    expect(res.code).toBe(0);
    const lines = res.stdout.trimEnd().split('\n');
    expect(lines[0]?.split(/\s{3,}/)).toEqual(['NAME', 'STATE', 'PHASE', 'READY', 'URL', 'AGE']);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 2))).toEqual([
      ['alice-example-com', 'active'],
      ['bob-example-com', 'active'],
    ]);
    const stateColumn = lines[0]?.indexOf('STATE');
    for (const line of lines.slice(1)) expect(line.indexOf('active')).toBe(stateColumn);

    const wide = await cli(['get', 'customers', '-o', 'wide']);
    expect(wide.stdout.split('\n')[0]?.split(/\s{3,}/)).toEqual([
      'NAME',
      'STATE',
      'PHASE',
      'READY',
      'URL',
      'AGE',
      'PLAN',
      'GENERATION',
      'OBSERVED',
      'PORT',
    ]);
  });

  it('get customer NAME -o yaml|json prints the object with secrets only as flags', async () => {
    const res = await cli(['get', 'customer', 'alice-example-com', '-o', 'yaml']);
    expect(res.code).toBe(0);
    const object = parse(res.stdout) as Json;
    expect(object).toMatchObject({
      apiVersion: 'blytz.cloud/v1alpha1',
      kind: 'Customer',
      metadata: { name: 'alice-example-com', generation: 1, labels: { cohort: 'beta' } },
      spec: { email: 'alice@example.com', plan: 'personal', state: 'active', telegram: { botTokenSet: true } },
    });
    expect(object['spec'].telegram).not.toHaveProperty('botToken');

    const json = await cli(['get', 'customer', 'bob-example-com', '-o', 'json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ metadata: { name: 'bob-example-com' } });

    // What `get -o yaml` prints applies again without changing anything. Its resourceVersion
    // is dropped: the controller's status writes may move it on meanwhile (a 409, rightly).
    const file = join(work, 'roundtrip.yaml');
    writeFileSync(file, res.stdout.replace(/^ {2}resourceVersion: .*\n/m, ''));
    const reapplied = await cli(['apply', '-f', file]);
    expect(reapplied.code).toBe(0);
    expect(reapplied.stdout).toBe('customer/alice-example-com unchanged\n');
  });

  it('describe shows spec without secrets, status, conditions, billing and events sections', async () => {
    const res = await cli(['describe', 'customer', 'alice-example-com']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^Name: +alice-example-com$/m);
    expect(res.stdout).toMatch(/^ {2}Email: +alice@example\.com$/m);
    expect(res.stdout).toMatch(/^ {2}Telegram Bot Token: +set$/m);
    for (const section of ['Spec:', 'Status:', 'Conditions:', 'Billing:', 'Events:'])
      expect(res.stdout).toMatch(new RegExp(`^${section}`, 'm'));
  });

  it('diff shows a changed field, exits 1 and changes nothing; exits 0 with "no changes" otherwise', async () => {
    const changed = join(work, 'alice-pro.yaml');
    writeFileSync(changed, readFileSync(join(EXAMPLES, 'alice.yaml'), 'utf8').replace('plan: personal', 'plan: pro'));
    const res = await cli(['diff', '-f', changed]);
    expect(res.code).toBe(1);
    expect(res.stdout).toContain('--- customer/alice-example-com (live)');
    expect(res.stdout).toContain(`+++ customer/alice-example-com (${changed}, document 1)`);
    expect(res.stdout).toMatch(/^- {2}plan: personal$/m);
    expect(res.stdout).toMatch(/^\+ {2}plan: pro$/m);

    const after = JSON.parse((await cli(['get', 'customer', 'alice-example-com', '-o', 'json'])).stdout) as Json;
    expect(after['spec'].plan).toBe('personal');
    expect(after['metadata'].generation).toBe(1);

    const none = await cli(['diff', '-f', EXAMPLES]);
    expect(none.code).toBe(0);
    expect(none.stdout).toBe('no changes\n');
  });

  it('suspend, resume and delete set the desired state', async () => {
    const state = async (name: string) =>
      (JSON.parse((await cli(['get', 'customer', name, '-o', 'json'])).stdout) as { spec: { state: string } }).spec.state;

    const suspended = await cli(['suspend', 'bob-example-com']);
    expect(suspended).toMatchObject({ code: 0, stdout: 'customer/bob-example-com suspended\n' });
    expect(await state('bob-example-com')).toBe('suspended');
    expect((await cli(['suspend', 'bob-example-com'])).stdout).toContain('unchanged');

    const resumed = await cli(['resume', 'bob-example-com']);
    expect(resumed).toMatchObject({ code: 0, stdout: 'customer/bob-example-com resumed\n' });
    expect(await state('bob-example-com')).toBe('active');

    const deleted = await cli(['delete', 'customer', 'bob-example-com']);
    expect(deleted.code).toBe(0);
    expect(deleted.stdout).toContain('customer/bob-example-com deleted');
    expect(await state('bob-example-com')).toBe('cancelled');
    // The bot token was kept through every state change.
    expect(JSON.parse((await cli(['get', 'customer', 'bob-example-com', '-o', 'json'])).stdout).spec.telegram.botTokenSet).toBe(
      true,
    );
  });

  it('reads manifests from stdin', async () => {
    const manifest = `apiVersion: blytz.cloud/v1alpha1\nkind: Customer\nmetadata:\n  name: carol-example-com\nspec:\n  email: carol@example.com\n  displayName: Carol\n`;
    const res = await cli(['apply', '-f', '-'], { input: manifest });
    expect(res).toMatchObject({ code: 0, stdout: 'customer/carol-example-com created\n' });
  });

  it('rejects malformed input clearly, names file and document, and applies nothing', async () => {
    const cases: Array<[string, string, RegExp]> = [
      [
        'malformed.yaml',
        'apiVersion: blytz.cloud/v1alpha1\nkind: Customer\nmetadata: {name: dave\n',
        /malformed\.yaml, document 1: not valid YAML: .*line \d+/,
      ],
      [
        'kind.yaml',
        'apiVersion: blytz.cloud/v1alpha1\nkind: Pod\nmetadata: {name: dave}\n',
        /kind\.yaml, document 1: kind: unknown kind "Pod"/,
      ],
      [
        'version.yaml',
        'apiVersion: blytz.cloud/v2\nkind: Customer\nmetadata: {name: dave}\nspec: {email: d@example.com, displayName: D}\n',
        /version\.yaml, document 1: apiVersion: must be blytz\.cloud\/v1alpha1/,
      ],
      [
        'field.yaml',
        'apiVersion: blytz.cloud/v1alpha1\nkind: Customer\nmetadata: {name: dave}\nspec: {email: nope, displayName: D}\n',
        /field\.yaml, document 1: spec\.email: /,
      ],
    ];
    for (const [name, text, message] of cases) {
      const file = join(work, name);
      writeFileSync(file, text);
      const res = await cli(['apply', '-f', file]);
      expect(res.code, name).toBe(1);
      expect(res.stderr, name).toMatch(message);
      expect(res.stderr, name).toContain('nothing was applied');
    }

    // A good document before a duplicate: neither is applied, because all are checked first.
    const dup = join(work, 'dup.yaml');
    const doc = (email: string) =>
      `apiVersion: blytz.cloud/v1alpha1\nkind: Customer\nmetadata: {name: erin-example-com}\nspec: {email: ${email}, displayName: Erin}\n`;
    writeFileSync(dup, `${doc('erin@example.com')}---\n${doc('erin2@example.com')}`);
    const res = await cli(['apply', '-f', dup]);
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(
      /dup\.yaml, document 2: metadata\.name: duplicate name "erin-example-com": also in .*dup\.yaml, document 1/,
    );
    expect((await cli(['get', 'customer', 'erin-example-com'])).code).toBe(1);
  });

  it('says exactly which documents were applied when the server rejects one', async () => {
    const file = join(work, 'partial.yaml');
    const doc = (name: string, email: string) =>
      `apiVersion: blytz.cloud/v1alpha1\nkind: Customer\nmetadata: {name: ${name}}\nspec: {email: ${email}, displayName: X}\n`;
    // The second takes alice's email, which belongs to a live customer: a 409 from the server.
    writeFileSync(
      file,
      [
        doc('frank-example-com', 'frank@example.com'),
        doc('mallory-example-com', 'alice@example.com'),
        doc('grace-example-com', 'grace@example.com'),
      ].join('---\n'),
    );
    const res = await cli(['apply', '-f', file]);
    expect(res.code).toBe(1);
    expect(res.stdout).toBe('customer/frank-example-com created\n');
    expect(res.stderr).toContain('already has a live assistant');
    expect(res.stderr).toContain(`applied: customer/frank-example-com (${file}, document 1)`);
    expect(res.stderr).toContain(
      `not applied: customer/mallory-example-com (${file}, document 2) (rejected), customer/grace-example-com (${file}, document 3) (not attempted)`,
    );
    expect((await cli(['get', 'customer', 'grace-example-com'])).code).toBe(1);
  });

  it('exits 2 on usage errors and 1 on failures', async () => {
    for (const args of [
      ['frobnicate'],
      ['apply'],
      ['get'],
      ['get', 'pods'],
      ['get', 'customers', '-o', 'xml'],
      ['describe', 'customer'],
      ['get', 'customers', '--bogus'],
    ]) {
      const res = await cli(args);
      expect(res.code, args.join(' ')).toBe(2);
      expect(res.stderr, args.join(' ')).not.toBe('');
    }
    // A file without -f (kubectl's habit too): the fix, spelled out.
    const bare = await cli(['apply', 'examples/customers/alice.yaml']);
    expect(bare.code).toBe(2);
    expect(bare.stderr).toBe('blytz: apply takes files with -f: blytz apply -f examples/customers/alice.yaml\n');
    const bareDiff = await cli(['diff', 'a.yaml', '-f', 'b.yaml']);
    expect(bareDiff.code).toBe(2);
    expect(bareDiff.stderr).toContain('blytz diff -f b.yaml -f a.yaml');
    const missing = await cli(['get', 'customer', 'nobody-here']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('customer "nobody-here" not found');
    expect((await cli(['delete', 'customer', 'nobody-here'])).code).toBe(1);
    const unauthorized = await cli(['get', 'customers'], { env: { BLYTZ_ADMIN_TOKEN: 'wrong-token-wrong-token' } });
    expect(unauthorized.code).toBe(1);
    expect(unauthorized.stderr).toContain('refused the admin token');
  });

  it('fails clearly when the server is not reachable', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const res = await run(['get', 'customers', '--server', closed], { env: { BLYTZ_ADMIN_TOKEN: server.adminToken } });
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`cannot reach the blytz server at ${closed}`);
    const doctor = await run(['doctor', '--server', closed], { env: { BLYTZ_ADMIN_TOKEN: server.adminToken } });
    expect(doctor.code).toBe(1);
    expect(doctor.stdout).toMatch(/^server +FAIL +cannot reach the blytz server/m);
    // The host's tenant firewall, read here instead (as root on this machine: loaded).
    expect(doctor.stdout).toMatch(
      /^tenant-firewall +ok +nftables table inet blytz_tenants is loaded .*\(checked from this machine\)$/m,
    );
  });

  it('never prints a secret', () => {
    for (const text of outputs) expect(text).not.toContain(EXAMPLE_BOT_TOKEN);
  });
});

describe('blytz doctor', () => {
  let db: TestDatabase;
  let server: Served;
  let caddy: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    // A port nothing listens on: Caddy is "down" for the server and for the CLI alike.
    caddy = `http://127.0.0.1:${await freePort()}`;
    // An empty BLYTZ_ADMIN_TOKEN counts as unset: the server generates $BLYTZ_DATA_DIR/admin-token
    // and the CLI reads it from there.
    server = await startServe({ databaseUrl: db.url, env: { CADDY_ADMIN_URL: caddy, BLYTZ_ADMIN_TOKEN: '' } });
  });

  afterAll(async () => {
    await server?.stop();
    await db?.drop();
  });

  it('fails with one line per check and names Caddy as the failure', async () => {
    const res = await run(['doctor', '--server', server.url], {
      env: { BLYTZ_DATA_DIR: server.dataDir, CADDY_ADMIN_URL: caddy },
    });
    expect(res.code).toBe(1);
    const lines = res.stdout.trimEnd().split('\n');
    expect(lines[0]?.split(/\s{3,}/)).toEqual(['CHECK', 'STATUS', 'MESSAGE']);
    const byName = new Map(lines.slice(1).map((l) => [l.split(/\s+/)[0], l.split(/\s+/)[1]]));
    expect([...byName.keys()]).toEqual([
      'server',
      'database',
      'docker',
      'caddy',
      'caddy-server',
      'tenant-firewall',
      'stripe',
      'telegram',
      'models',
    ]);
    // The host's nftables table, as the server (root, on this machine) reads it: loaded here.
    expect(res.stdout).toMatch(/^tenant-firewall +ok +nftables table inet blytz_tenants is loaded/m);
    expect(byName.get('server')).toBe('ok');
    expect(byName.get('database')).toBe('ok');
    expect(byName.get('caddy')).toBe('FAIL');
    // Its server block cannot be checked either, and says why.
    expect(res.stdout).toMatch(/^caddy-server +FAIL +server block "blytz" could not be read: /m);
    expect(res.stdout).toMatch(/^caddy +FAIL +\S+/m);
    // Stripe is not configured here: a warning, not a failure; never a value.
    expect(byName.get('stripe')).toBe('warn');
    // Nor is the model gateway: "Blytz default" is not offered, signup asks for a key of the customer's own.
    expect(res.stdout).toMatch(/^models +warn +included model access not offered: the model gateway is off/m);
  });
});

describe('blytz CLI and plain HTTP', () => {
  it('refuses to send the admin token over http:// to another machine unless --allow-plain-http', async () => {
    // A listener on one of this machine's own non-loopback addresses: what reaches it would
    // also cross a network to a remote server.
    const address = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    if (!address) throw new Error('this machine has no non-loopback IPv4 address to listen on');
    const seen: Array<string | undefined> = [];
    const listener = createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"kind":"CustomerList","items":[],"metadata":{}}');
    });
    await new Promise<void>((resolve) => listener.listen(0, address, resolve));
    const server = `http://${address}:${(listener.address() as AddressInfo).port}`;
    try {
      const refused = await run(['get', 'customers', '--server', server], {
        env: { BLYTZ_ADMIN_TOKEN: 'e2e-admin-token-0123456789' },
      });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain(`refusing to send the admin token over plain HTTP to ${address}`);
      expect(refused.stderr).toContain('--allow-plain-http');
      expect(refused.stderr).not.toContain('e2e-admin-token-0123456789');
      expect(seen).toEqual([]);

      const allowed = await run(['get', 'customers', '--server', server, '--allow-plain-http'], {
        env: { BLYTZ_ADMIN_TOKEN: 'e2e-admin-token-0123456789' },
      });
      expect(allowed.code).toBe(0);
      expect(seen).toEqual(['Bearer e2e-admin-token-0123456789']);
    } finally {
      await new Promise((resolve) => listener.close(resolve));
    }
  });
});
