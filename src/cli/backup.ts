import type { Command } from 'commander';
import { AdminClient } from './client.js';
import { CliError, UsageError } from './errors.js';

/**
 * `blytz backup create|list|restore`: the customers' backups, through the admin API like every
 * verb. `create` and `restore` only ask (the backup controller does the work); `--wait` follows
 * the record until it is done.
 */

export interface BackupItem {
  id: number;
  customer: string;
  reason: string;
  state: string;
  attempts: number;
  requestedAt: string;
  finishedAt: string | null;
  sizeBytes: number | null;
  sha256: string | null;
  openclawVersion: string | null;
  runtime: string | null;
  storage: string | null;
  location: string | null;
  files: number | null;
  durationMs: number | null;
  message: string;
}

export interface RestoreItem {
  id: number;
  backupId: number;
  customer: string;
  reason: string;
  step: string;
  requestedAt: string;
  finishedAt: string | null;
  message: string;
}

const ACTIONS = ['create', 'list', 'restore'] as const;
const WAIT_POLL_MS = 500;

export function registerBackupVerb(program: Command): void {
  program
    .command('backup')
    .description("customers' backups: create NAME | list [NAME] | restore ID [--to NAME]")
    .argument('<action>', ACTIONS.join(' | '))
    .argument('[target]', 'customer name (create, list) or backup id (restore)')
    .option('--to <name>', 'restore: into this customer instead of the one backed up (it must exist)')
    .option('--wait', 'create, restore: wait until it is done (exit 1 if it failed)')
    .option('--timeout <seconds>', 'with --wait: give up after this long', '1800')
    .option('-o, --output <format>', 'json for the full records')
    .action(
      async (
        action: string,
        target: string | undefined,
        options: { to?: string; wait?: boolean; timeout: string; output?: string },
        cmd: Command,
      ) => {
        const globals = cmd.optsWithGlobals<{ server?: string; token?: string }>();
        const client = AdminClient.from({ server: globals.server, token: globals.token });
        const json = options.output === 'json';
        const deadline = Date.now() + Number(options.timeout) * 1000;
        switch (action) {
          case 'create': {
            if (!target) throw new UsageError('backup create needs a customer name');
            let backup = await client.createBackup<BackupItem>(target);
            if (!json) process.stdout.write(`backup ${backup.id} of ${target} requested\n`);
            if (options.wait) {
              backup = await waitFor(
                () => client.getBackup<BackupItem>(backup.id),
                (b) => b.state === 'succeeded' || b.state === 'failed',
                deadline,
              );
              if (!json) process.stdout.write(`${describeBackup(backup)}\n`);
              if (backup.state !== 'succeeded') throw new CliError(`backup ${backup.id} failed: ${backup.message}`);
            }
            if (json) process.stdout.write(`${JSON.stringify(backup, null, 2)}\n`);
            return;
          }
          case 'list': {
            const list = await client.listBackups<BackupItem, RestoreItem>(target);
            if (json) {
              process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
              return;
            }
            process.stdout.write(formatBackups(list.items, list.restores, new Date()));
            return;
          }
          case 'restore': {
            const id = Number(target);
            if (!target || !Number.isSafeInteger(id) || id <= 0)
              throw new UsageError('backup restore needs a backup id (see blytz backup list)');
            let restore = await client.restoreBackup<RestoreItem>(id, options.to);
            if (!json) process.stdout.write(`restore ${restore.id} of backup ${id} into ${restore.customer} requested\n`);
            if (options.wait) {
              restore = await waitFor(
                () => client.getRestore<RestoreItem>(restore.id),
                (r) => r.step === 'succeeded' || r.step === 'failed',
                deadline,
              );
              if (!json)
                process.stdout.write(`restore ${restore.id}: ${restore.step}${restore.message ? ` (${restore.message})` : ''}\n`);
              if (restore.step !== 'succeeded') throw new CliError(`restore ${restore.id} failed: ${restore.message}`);
            }
            if (json) process.stdout.write(`${JSON.stringify(restore, null, 2)}\n`);
            return;
          }
          default:
            throw new UsageError(`unknown backup action "${action}": use ${ACTIONS.join(', ')}`);
        }
      },
    );
}

async function waitFor<T>(read: () => Promise<T>, done: (value: T) => boolean, deadline: number): Promise<T> {
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new CliError('gave up waiting (--timeout); it goes on in the server: see blytz backup list');
    await new Promise((resolve) => setTimeout(resolve, WAIT_POLL_MS));
  }
}

export function describeBackup(b: BackupItem): string {
  const size = b.sizeBytes === null ? '' : `, ${formatBytes(b.sizeBytes)}`;
  return `backup ${b.id} of ${b.customer}: ${b.state}${size}${b.message ? ` (${b.message})` : ''}`;
}

export function formatBackups(items: BackupItem[], restores: RestoreItem[], now: Date): string {
  if (items.length === 0 && restores.length === 0) return 'No backups.\n';
  const rows = [['ID', 'CUSTOMER', 'REASON', 'STATE', 'SIZE', 'AGE', 'OPENCLAW', 'MESSAGE']];
  for (const b of items) {
    rows.push([
      String(b.id),
      b.customer,
      b.reason,
      b.state,
      b.sizeBytes === null ? '-' : formatBytes(b.sizeBytes),
      age(now.getTime() - Date.parse(b.finishedAt ?? b.requestedAt)),
      b.openclawVersion ?? '-',
      b.message.slice(0, 60),
    ]);
  }
  let out = table(rows);
  if (restores.length > 0) {
    const restoreRows = [['RESTORE', 'BACKUP', 'INTO', 'REASON', 'STEP', 'AGE', 'MESSAGE']];
    for (const r of restores) {
      restoreRows.push([
        String(r.id),
        String(r.backupId),
        r.customer,
        r.reason,
        r.step,
        age(now.getTime() - Date.parse(r.requestedAt)),
        r.message.slice(0, 60),
      ]);
    }
    out += `\n${table(restoreRows)}`;
  }
  return out;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return `${rows
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join('   ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes}B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)}KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 / 1024).toFixed(1)}MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)}GiB`;
}

export function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}
