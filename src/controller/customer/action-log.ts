import type { Logger } from '../../observability/logger.js';
import type { EventType } from '../../store/store.js';

/**
 * One log line per action the controller takes on the world (a container created, started,
 * restarted or removed, a route written, a workspace rendered, a port reserved or released),
 * beside the event it records on the customer. Normal events are info, Warning events warn; a
 * correction says which drift it repaired.
 */
export interface ActionRecord {
  customer: string;
  type: EventType;
  /** The event reason, e.g. ContainerCreated. */
  reason: string;
  message: string;
  /** The drift this action corrects, when it is a correction. */
  drift?: string | undefined;
}

export function logAction(logger: Pick<Logger, 'info' | 'warn'>, record: ActionRecord): void {
  const fields = { customer: record.customer, reason: record.reason, ...(record.drift ? { drift: record.drift } : {}) };
  const drift = record.drift?.replace(/_/g, ' ');
  const message = `${record.customer}: ${record.message}${drift && !record.message.includes(drift) ? ` (corrects ${drift})` : ''}`;
  if (record.type === 'Warning') logger.warn(fields, message);
  else logger.info(fields, message);
}
