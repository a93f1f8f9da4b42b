import type { CustomerEventObject, CustomerObject } from './client.js';
import { ageSince, formatFields, formatTable, NONE } from './format.js';

/**
 * `blytz describe customer NAME`: everything an operator needs to see why a customer is (not)
 * ready, laid out like `kubectl describe`. Secrets appear only as "set"/"not set".
 */
export function describeCustomer(customer: CustomerObject, events: CustomerEventObject[], now: Date): string {
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
