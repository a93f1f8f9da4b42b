import type { Command } from 'commander';
import type { RolloutView } from '../domain/rollout.js';
import { AdminClient } from './client.js';
import { UsageError } from './errors.js';

/**
 * `blytz rollout status|pause|resume|undo`: fleet rollouts (a new image, template manifest or
 * plan limits applied to every customer in waves), through the admin API like every verb.
 */

const ACTIONS = ['status', 'pause', 'resume', 'undo'] as const;
type Action = (typeof ACTIONS)[number];

export function registerRolloutVerb(program: Command): void {
  program
    .command('rollout')
    .description('fleet rollouts: status | pause | resume | undo (a new image, template or plan limits, applied in waves)')
    .argument('<action>', ACTIONS.join(' | '))
    .option('-o, --output <format>', 'json for the full objects')
    .option(
      '--restore-state',
      "undo: also put back each customer's state from its pre-update backup (the new version migrated it)",
    )
    .action(async (action: string, options: { output?: string; restoreState?: boolean }, cmd: Command) => {
      if (options.restoreState && action !== 'undo') throw new UsageError('--restore-state goes with undo only');
      if (!(ACTIONS as readonly string[]).includes(action)) {
        throw new UsageError(`unknown rollout action "${action}": use ${ACTIONS.join(', ')}`);
      }
      const globals = cmd.optsWithGlobals<{ server?: string; token?: string; allowPlainHttp?: boolean }>();
      const client = AdminClient.from({ server: globals.server, token: globals.token, allowPlainHttp: globals.allowPlainHttp });
      let items: RolloutView[];
      if ((action as Action) === 'status') {
        items = await client.rollouts<RolloutView>();
      } else {
        const result = await client.rolloutAction<RolloutView>(
          action as Exclude<Action, 'status'>,
          options.restoreState ? { restoreState: true } : {},
        );
        items = result.items;
        const verb = action === 'pause' ? 'paused' : action === 'resume' ? 'resumed' : 'undone';
        process.stdout.write(`${result.affected} rollout(s) ${verb}\n`);
      }
      if (options.output === 'json') {
        process.stdout.write(`${JSON.stringify(items, null, 2)}\n`);
        return;
      }
      process.stdout.write(formatRollouts(items, new Date()));
    });
}

export function formatRollouts(items: RolloutView[], now: Date): string {
  if (items.length === 0) return 'No rollouts: every customer runs the current fleet spec.\n';
  const lines: string[] = [];
  for (const r of items) {
    const c = r.counts;
    const state = r.undone ? `${r.state} (undone)` : r.state;
    lines.push(`rollout ${r.id}  ${r.key}`);
    lines.push(`  target:      image ${r.target.image}, fleet hash ${r.target.fingerprint}`);
    lines.push(`  state:       ${state}${r.pausedReason ? `: ${r.pausedReason}` : ''}`);
    if (r.pausedMessage) lines.push(`  why:         ${r.pausedMessage}`);
    lines.push(`  started:     ${r.startedAt} (${age(now.getTime() - Date.parse(r.startedAt))} ago)`);
    lines.push(
      `  customers:   ${c.done} done, ${c.inProgress} in progress, ${c.waiting} waiting, ${c.failed} failed${c.rolledBack ? `, ${c.rolledBack} rolled back` : ''} (of ${c.total})`,
    );
    lines.push(`  pace:        at most ${r.slots} at a time (BLYTZ_ROLLOUT_MAX_UNAVAILABLE=${r.maxUnavailable})`);
    lines.push(
      `  eta:         ${r.state === 'complete' ? '-' : r.etaSeconds === null ? 'unknown' : `${age(r.etaSeconds * 1000)}`}`,
    );
    for (const e of r.customers.filter((x) => x.state === 'rollingBack' || x.state === 'failed')) {
      lines.push(`  failed:      ${e.customer}: ${e.message}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}
