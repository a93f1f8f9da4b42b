import type { BackupItem, RestoreItem } from './backup.js';
import { formatBytes } from './backup.js';
import type { CustomerEventObject, CustomerObject, ModelUsageObject } from './client.js';
import { ageSince, formatFields, formatTable, NONE } from './format.js';

/**
 * `blytz describe customer NAME`: everything an operator needs to see why a customer is (not)
 * ready, laid out like `kubectl describe`. Secrets appear only as "set"/"not set".
 */
export function describeCustomer(
  customer: CustomerObject,
  events: CustomerEventObject[],
  now: Date,
  modelUsage?: ModelUsageObject,
  backups?: { items: BackupItem[]; restores: RestoreItem[] },
): string {
  const { metadata, spec, status } = customer;
  const labels = Object.entries(metadata.labels ?? {}).map(([k, v]) => `${k}=${v}`);
  const sections: string[] = [];

  sections.push(
    formatFields([
      ['Name', metadata.name],
      ['Labels', labels.length > 0 ? labels.join(',') : NONE],
      ['Created', `${metadata.creationTimestamp} (${ageSince(metadata.creationTimestamp, now)} ago)`],
      ['Generation', String(metadata.generation)],
      ['Resource Version', metadata.resourceVersion],
    ]),
  );

  const apiKeyRef = spec.model.apiKeySecretRef;
  const apiKey = apiKeyRef ? `from secret ${apiKeyRef.name}/${apiKeyRef.key}` : spec.model.apiKeySet ? 'set' : undefined;
  const model = spec.model.provider
    ? `${spec.model.provider}, API key ${apiKey ?? 'not set'}`
    : apiKey
      ? `API key ${apiKey}`
      : NONE;
  const botToken = spec.telegram.botTokenSecretRef
    ? `from secret ${spec.telegram.botTokenSecretRef.name}/${spec.telegram.botTokenSecretRef.key}`
    : spec.telegram.botTokenSet
      ? 'set'
      : 'not set';
  sections.push(
    'Spec:\n' +
      formatFields(
        [
          ['Email', spec.email],
          ['Display Name', spec.displayName],
          ['Plan', spec.plan],
          ['Template', spec.template],
          ['State', spec.state],
          ['Paused', String(spec.paused)],
          ['Telegram Bot Token', botToken],
          ['Model', model],
          ['Instructions', spec.instructions === '' ? NONE : ''],
        ],
        '  ',
      ) +
      (spec.instructions === '' ? '' : `\n${indentLines(spec.instructions, '    ')}`),
  );

  sections.push(
    'Status:\n' +
      formatFields(
        [
          ['Phase', status.phase ?? NONE],
          ['Observed Generation', status.observedGeneration === undefined ? NONE : String(status.observedGeneration)],
          ['URL', status.url ?? NONE],
          ['Host Port', status.hostPort === undefined ? NONE : String(status.hostPort)],
        ],
        '  ',
      ),
  );

  const conditions = status.conditions ?? [];
  sections.push(
    conditions.length === 0
      ? `Conditions:  ${NONE}`
      : 'Conditions:\n' +
          formatTable(
            ['Type', 'Status', 'Reason', 'Age', 'Message'],
            conditions.map((c) => [c.type, c.status, c.reason || NONE, ageSince(c.lastTransitionTime, now), c.message]),
            '  ',
          ),
  );

  const billing = status.billing ?? {};
  sections.push(
    'Billing:\n' +
      formatFields(
        [
          ['Stripe Customer', billing.stripeCustomerId ?? NONE],
          ['Stripe Subscription', billing.stripeSubscriptionId ?? NONE],
          ['Checkout Session', billing.stripeCheckoutSessionId ?? NONE],
        ],
        '  ',
      ),
  );

  if (modelUsage) sections.push(describeModelUsage(modelUsage, now));
  if (backups) sections.push(describeBackups(backups.items, backups.restores, now));

  sections.push(
    events.length === 0
      ? `Events:  ${NONE}`
      : 'Events:\n' +
          formatTable(
            ['Type', 'Reason', 'Age', 'Message'],
            events.map((e) => [e.type, e.reason, eventAge(e, now), e.message]),
            '  ',
          ),
  );
  return `${sections.join('\n')}\n`;
}

/** Included model access: this month's use against the plan's budget. */
export function describeModelUsage(usage: ModelUsageObject, now: Date): string {
  if (usage.access === 'own-key') return 'Model Usage:\n  Access:  own API key (not metered)';
  if (usage.access === 'none')
    return 'Model Usage:\n  Access:  none (the model gateway is off and the customer has no API key of its own)';
  const percent = usage.includedTokens > 0 ? Math.floor((usage.usedTokens / usage.includedTokens) * 100) : 100;
  const fields: Array<[string, string]> = [
    ['Access', 'included (through the model gateway)'],
    ['Period', `${usage.period} (renews ${usage.renewsAt}, in ${ageSince(now.toISOString(), new Date(usage.renewsAt))})`],
    [
      'Used',
      `${tokens(usage.usedTokens)} of ${tokens(usage.includedTokens)} tokens included (${percent}%)${usage.exhausted ? ', EXHAUSTED' : ''}`,
    ],
    [
      'Input / Output',
      `${tokens(usage.inputTokens)} (${tokens(usage.cachedInputTokens)} cached) / ${tokens(usage.outputTokens)}`,
    ],
    ['Requests', String(usage.requests)],
  ];
  if (usage.ceilingTokens !== undefined) {
    fields.push(['Overage', `${tokens(usage.overageTokens)} tokens billed (ceiling ${tokens(usage.ceilingTokens)})`]);
  }
  fields.push([
    'Model Key Issued',
    usage.credentialIssuedAt ? `${usage.credentialIssuedAt} (${ageSince(usage.credentialIssuedAt, now)} ago)` : NONE,
  ]);
  return `Model Usage:\n${formatFields(fields, '  ')}`;
}

function tokens(n: number): string {
  return n.toLocaleString('en-US');
}

/** The newest good backup and its age, the newest attempt when it is not that one, a restore in flight. */
function describeBackups(items: BackupItem[], restores: RestoreItem[], now: Date): string {
  const good = items.find((b) => b.state === 'succeeded');
  const newest = items[0];
  const restore = restores.find((r) => r.step !== 'succeeded' && r.step !== 'failed') ?? restores[0];
  const fields: Array<[string, string]> = [
    [
      'Last Backup',
      good?.finishedAt
        ? `${good.id} (${good.reason}) ${good.finishedAt} (${ageSince(good.finishedAt, now)} ago), ${formatBytes(good.sizeBytes ?? 0)}, OpenClaw ${good.openclawVersion ?? 'unknown'}`
        : NONE,
    ],
  ];
  if (newest && newest !== good)
    fields.push([
      'Newest Attempt',
      `${newest.id} (${newest.reason}) ${newest.state}${newest.message ? `: ${newest.message}` : ''}`,
    ]);
  if (restore)
    fields.push([
      'Restore',
      `${restore.id} of backup ${restore.backupId}: ${restore.step}${restore.message ? ` (${restore.message})` : ''}`,
    ]);
  return `Backups:\n${formatFields(fields, '  ')}`;
}

/** kubectl's "3m (x5 over 10m)" for repeated events. */
export function eventAge(event: Pick<CustomerEventObject, 'count' | 'firstTimestamp' | 'lastTimestamp'>, now: Date): string {
  const last = ageSince(event.lastTimestamp, now);
  return event.count > 1 ? `${last} (x${event.count} over ${ageSince(event.firstTimestamp, now)})` : last;
}

function indentLines(text: string, indent: string): string {
  return text
    .replace(/\n+$/, '')
    .split('\n')
    .map((line) => `${indent}${line}`.trimEnd())
    .join('\n');
}
