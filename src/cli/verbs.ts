import { Option, type Command } from 'commander';
import { stringify } from 'yaml';
import { API_VERSION, KIND, type DesiredState } from '../domain/customer.js';
import { AdminClient, ApiError, type CustomerObject } from './client.js';
import { describeCustomer } from './describe.js';
import { desiredView, liveView, renderView, uncomparableSecrets, unifiedDiff } from './diff.js';
import { doctorFailed, formatDoctor, runDoctor } from './doctor.js';
import { CliError, UsageError } from './errors.js';
import { customerTable, poolTable } from './format.js';
import { describeDocument, isPoolDocument, readDocuments, type AnyDocument } from './manifests.js';
import { registerBackupVerb, type BackupItem, type RestoreItem } from './backup.js';
import { registerRolloutVerb } from './rollout.js';

/**
 * The operator verbs (contract section 1). Each talks to the server's admin API through
 * AdminClient, like kubectl talks to the API server; none touches the database directly.
 */

const RESOURCE_ALIASES = new Set(['customer', 'customers', 'cust']);
const POOL_ALIASES = new Set(['pool', 'pools']);
const OUTPUTS = ['wide', 'yaml', 'json'] as const;
type Output = (typeof OUTPUTS)[number];
const STATE_RETRIES = 3;

export function registerVerbs(program: Command): void {
  program
    .option('--server <url>', 'admin API of the blytz server (default http://127.0.0.1:8080, or $HOST:$PORT when set)')
    .option('--token <token>', 'admin token (default $BLYTZ_ADMIN_TOKEN, else $BLYTZ_DATA_DIR/admin-token)')
    .option('--allow-plain-http', 'send the token over http:// to a server that is not on this machine (an SSH tunnel, a private network)');

  program
    .command('apply')
    .description('create or update customers and warm pools from manifests (YAML or JSON; many documents; a directory applies every file in it)')
    .option('-f, --filename <path>', 'file, directory, or - for stdin (repeatable)', collect, [])
    .allowExcessArguments()
    .action(async (options: { filename: string[] }, cmd: Command) => {
      const documents = await readDocuments(requireFiles(options.filename, 'apply', cmd.args));
      await applyAll(clientOf(cmd), documents);
    });

  program
    .command('get')
    .description('list customers or warm pools, or show one: get customers | get customer NAME | get pools | get pool PLAN')
    .argument('<resource>', 'customers or pools')
    .argument('[name]', 'one customer (or the plan of one pool)')
    .addOption(new Option('-o, --output <format>', 'wide, yaml or json').choices(OUTPUTS))
    .option('-l, --selector <selector>', 'label selector, e.g. team=a,tier=b')
    .action(async (resource: string, name: string | undefined, options: { output?: Output; selector?: string }, cmd: Command) => {
      if (POOL_ALIASES.has(resource.toLowerCase())) {
        await getPools(clientOf(cmd), name, options.output);
        return;
      }
      checkResource(resource);
      const client = clientOf(cmd);
      const now = new Date();
      if (name) {
        const customer = await mustGet(client, name);
        write(render([customer], options.output, now, false));
        return;
      }
      const customers = await client.listCustomers(options.selector);
      if (customers.length === 0 && options.output !== 'yaml' && options.output !== 'json') {
        process.stderr.write('No customers found.\n');
        return;
      }
      write(render(customers, options.output, now, true));
    });

  program
    .command('describe')
    .description('spec, status, conditions, billing and recent events of one customer')
    .argument('<resource>', 'customer')
    .argument('<name>', 'customer name')
    .action(async (resource: string, name: string, _options: unknown, cmd: Command) => {
      checkResource(resource);
      const client = clientOf(cmd);
      const customer = await mustGet(client, name);
      const events = await client.listEvents(name);
      const modelUsage = await client.modelUsage(name);
      // A server without backups (older) answers 404: describe without them.
      const backups = await client.listBackups<BackupItem, RestoreItem>(name).catch(() => undefined);
      write(describeCustomer(customer, events, new Date(), modelUsage, backups));
    });

  program
    .command('delete')
    .description('cancel a customer: the desired state becomes cancelled and teardown follows')
    .argument('<resource>', 'customer')
    .argument('<name>', 'customer name')
    .action(async (resource: string, name: string, _options: unknown, cmd: Command) => {
      checkResource(resource);
      try {
        await clientOf(cmd).deleteCustomer(name);
      } catch (error) {
        throw notFoundMessage(error, name);
      }
      write(`customer/${name} deleted (desired state cancelled; the controller tears it down)\n`);
    });

  program
    .command('suspend')
    .description("stop a customer's assistant, keeping its data (applies spec.state: suspended)")
    .argument('<name>', 'customer name')
    .action(async (name: string, _options: unknown, cmd: Command) => {
      await setState(clientOf(cmd), name, 'suspended');
    });

  program
    .command('resume')
    .description("run a suspended customer's assistant again (applies spec.state: active)")
    .argument('<name>', 'customer name')
    .action(async (name: string, _options: unknown, cmd: Command) => {
      await setState(clientOf(cmd), name, 'active');
    });

  program
    .command('rotate-model-key')
    .description('issue a customer a new model credential now; the old one is refused at once')
    .argument('<name>', 'customer name')
    .action(async (name: string, _options: unknown, cmd: Command) => {
      let result: { rotatedAt: string; rendered: boolean };
      try {
        result = await clientOf(cmd).rotateModelKey(name);
      } catch (error) {
        throw notFoundMessage(error, name);
      }
      write(
        result.rendered
          ? `customer/${name} model key rotated at ${result.rotatedAt}; the new key is in its assistant's config\n`
          : `customer/${name} model key rotated at ${result.rotatedAt}; the controller renders the new key on its next pass\n`,
      );
    });

  program
    .command('diff')
    .description('show what apply would change; changes nothing (exit 0: no changes, 1: changes, like kubectl diff)')
    .option('-f, --filename <path>', 'file, directory, or - for stdin (repeatable)', collect, [])
    .allowExcessArguments()
    .action(async (options: { filename: string[] }, cmd: Command) => {
      const documents = await readDocuments(requireFiles(options.filename, 'diff', cmd.args));
      const changed = await diffAll(clientOf(cmd), documents);
      // Like `kubectl diff`: exit 1 says "there are differences", with nothing more to print.
      if (changed) throw new CliError('', 1);
    });

  program
    .command('doctor')
    .description('check Postgres, Docker, Caddy and the Stripe/Telegram configuration; exit 1 on any failure')
    .action(async (_options: unknown, cmd: Command) => {
      const lines = await runDoctor(clientOf(cmd));
      write(formatDoctor(lines));
      if (doctorFailed(lines)) throw new CliError('', 1);
    });

  program
    .command('reconcile')
    .description('ask the controller to look at a customer now; prints when it was handled')
    .argument('<name>', 'customer name')
    .action(async (name: string, _options: unknown, cmd: Command) => {
      const started = Date.now();
      let handledAt: string;
      try {
        ({ handledAt } = await clientOf(cmd).reconcile(name));
      } catch (error) {
        throw notFoundMessage(error, name);
      }
      write(`customer/${name} reconciled at ${handledAt} (${((Date.now() - started) / 1000).toFixed(1)}s after asking)\n`);
    });

  registerRolloutVerb(program);
  registerBackupVerb(program);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** The -f values; a file named without -f (`blytz apply x.yaml`, kubectl's habit too) gets the fix spelled out. */
function requireFiles(files: string[], verb: string, bare: readonly string[] = []): string[] {
  if (bare.length > 0) {
    const fixed = [...files, ...bare].map((f) => `-f ${f}`).join(' ');
    throw new UsageError(`${verb} takes files with -f: blytz ${verb} ${fixed}`);
  }
  if (files.length === 0) throw new UsageError(`${verb} needs -f FILE, -f DIRECTORY or -f - (stdin)`);
  return files;
}

function checkResource(resource: string): void {
  if (!RESOURCE_ALIASES.has(resource.toLowerCase())) {
    throw new UsageError(`unknown resource type "${resource}": blytz knows customers (customer, customers) and pools (pool, pools)`);
  }
}

/** `get pools`: each plan's pool, DESIRED beside the slots READY, WARMING and BOUND (claimed, still on the slot's container). */
async function getPools(client: AdminClient, plan: string | undefined, output: Output | undefined): Promise<void> {
  let pools = await client.listPools();
  if (plan !== undefined) {
    pools = pools.filter((p) => p.metadata.name === plan);
    if (pools.length === 0) throw new CliError(`pool "${plan}" not found: a pool is named by its plan (\`blytz get pools\` lists them)`);
  }
  if (output === 'json' || output === 'yaml') {
    const value = plan === undefined ? { apiVersion: 'v1', kind: 'List', items: pools } : pools[0];
    write(output === 'json' ? `${JSON.stringify(value, null, 2)}\n` : stringify(value, { lineWidth: 0 }));
    return;
  }
  write(`${poolTable(pools, output === 'wide')}\n`);
  const message = pools.find((p) => p.status.message)?.status.message;
  if (message) process.stderr.write(`note: ${message}\n`);
}

function clientOf(cmd: Command): AdminClient {
  const globals = cmd.optsWithGlobals<{ server?: string; token?: string; allowPlainHttp?: boolean }>();
  return AdminClient.from({ server: globals.server, token: globals.token, allowPlainHttp: globals.allowPlainHttp });
}

function write(text: string): void {
  process.stdout.write(text);
}

async function mustGet(client: AdminClient, name: string): Promise<CustomerObject> {
  const customer = await client.getCustomer(name);
  if (!customer) throw new CliError(`customer "${name}" not found: \`blytz get customers\` lists them`);
  return customer;
}

function notFoundMessage(error: unknown, name: string): unknown {
  if (error instanceof ApiError && error.status === 404)
    return new CliError(`customer "${name}" not found: \`blytz get customers\` lists them`);
  return error;
}

function render(customers: CustomerObject[], output: Output | undefined, now: Date, asList: boolean): string {
  if (output === 'json' || output === 'yaml') {
    const value = asList ? { apiVersion: 'v1', kind: 'List', items: customers } : customers[0];
    return output === 'json' ? `${JSON.stringify(value, null, 2)}\n` : stringify(value, { lineWidth: 0 });
  }
  return `${customerTable(customers, now, output === 'wide')}\n`;
}

/**
 * Applies documents in order, stopping at the first the server rejects: every document was
 * validated before the first request, so a rejection here is the server's (a conflict, a taken
 * email), and the output says exactly which documents were applied.
 */
async function applyAll(client: AdminClient, documents: AnyDocument[]): Promise<void> {
  const applied: string[] = [];
  for (const [i, doc] of documents.entries()) {
    try {
      if (isPoolDocument(doc)) {
        const plan = doc.pool.metadata.name;
        const before = await client.getPool(plan);
        const { pool, created } = await client.applyPool(plan, doc.raw);
        const same = !created && before !== undefined && before.metadata.generation === pool.metadata.generation;
        write(`pool/${plan} ${created ? 'created' : same ? 'unchanged' : 'configured'}\n`);
        applied.push(describeDocument(doc));
        continue;
      }
      const name = doc.manifest.metadata.name;
      const before = await client.getCustomer(name);
      const { customer, created, warnings } = await client.applyCustomer(name, doc.raw);
      for (const warning of warnings) process.stderr.write(`Warning: ${warning}\n`);
      // Not resourceVersion: the controller's status writes move it too. Generation moves only
      // with the spec, and labels are compared on their own.
      const same =
        before !== undefined && before.metadata.generation === customer.metadata.generation && sameLabels(before, customer);
      const verb = created ? 'created' : same ? 'unchanged' : 'configured';
      write(`customer/${name} ${verb}\n`);
      applied.push(describeDocument(doc));
    } catch (error) {
      const lines = [`${describeDocument(doc)}: ${(error as Error).message}`];
      lines.push(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'applied: none');
      const rest = documents.slice(i + 1).map(describeDocument);
      lines.push(
        `not applied: ${describeDocument(doc)} (rejected)${rest.length > 0 ? `, ${rest.map((r) => `${r} (not attempted)`).join(', ')}` : ''}`,
      );
      throw new CliError(lines.join('\n'));
    }
  }
}

function sameLabels(a: CustomerObject, b: CustomerObject): boolean {
  const sorted = (c: CustomerObject) =>
    JSON.stringify(Object.entries(c.metadata.labels ?? {}).sort(([x], [y]) => x.localeCompare(y)));
  return sorted(a) === sorted(b);
}

async function diffAll(client: AdminClient, documents: AnyDocument[]): Promise<boolean> {
  let changed = false;
  for (const doc of documents) {
    if (isPoolDocument(doc)) {
      const plan = doc.pool.metadata.name;
      const live = await client.getPool(plan);
      const view = (spec: { size: number; template: string }) => [`size: ${spec.size}`, `template: ${spec.template}`];
      const text = unifiedDiff(
        live ? view(live.spec) : [],
        view(doc.pool.spec),
        `pool/${plan} (live)`,
        `pool/${plan} (${doc.source}, document ${doc.document})`,
      );
      if (text) {
        changed = true;
        write(text);
      }
      continue;
    }
    const name = doc.manifest.metadata.name;
    const live = await client.getCustomer(name);
    const oldLines = live ? renderView(liveView(live)) : [];
    const newLines = renderView(desiredView(doc.manifest, live));
    const oldLabel = live ? `customer/${name} (live)` : `customer/${name} (not on the server: apply creates it)`;
    const text = unifiedDiff(oldLines, newLines, oldLabel, `customer/${name} (${doc.source}, document ${doc.document})`);
    if (text) {
      changed = true;
      write(text);
    }
    for (const field of uncomparableSecrets(doc.manifest, live)) {
      process.stderr.write(
        `note: customer/${name}: ${field} is write-only and already set; it cannot be compared (apply stores it if it differs)\n`,
      );
    }
  }
  if (!changed) write('no changes\n');
  return changed;
}

/** suspend/resume: read, change spec.state, write back at that resourceVersion; retry on a race. */
async function setState(client: AdminClient, name: string, state: DesiredState): Promise<void> {
  const word = state === 'active' ? 'resumed' : state;
  for (let attempt = 1; ; attempt++) {
    const live = await mustGet(client, name);
    if (live.spec.state === state) {
      write(`customer/${name} unchanged (already ${state})\n`);
      return;
    }
    if (live.spec.state === 'cancelled') {
      throw new CliError(
        `customer "${name}" is cancelled; suspend and resume act on live customers (apply a manifest with spec.state to revive it deliberately)`,
      );
    }
    const manifest = {
      apiVersion: API_VERSION,
      kind: KIND,
      metadata: { name, labels: live.metadata.labels ?? {}, resourceVersion: live.metadata.resourceVersion },
      // The spec as read: secrets appear as "is set" flags, which apply accepts and keeps.
      spec: { ...live.spec, state },
    };
    try {
      await client.applyCustomer(name, manifest);
      write(`customer/${name} ${word}\n`);
      return;
    } catch (error) {
      const conflict = error instanceof ApiError && error.status === 409 && error.reason === 'Conflict';
      if (!conflict || attempt >= STATE_RETRIES) throw error;
    }
  }
}
