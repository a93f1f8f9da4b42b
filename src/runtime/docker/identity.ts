import { POOL_SLOT_LABEL } from '../../domain/labels.js';
import { CUSTOMER_LABEL, isDns1123Label, OBJECT_PREFIX } from '../../domain/naming.js';

/**
 * Whose a container of ours is. A customer's container says so in its `cloud.blytz.customer`
 * label. A warm pool slot's carries `cloud.blytz.pool-slot` instead, since labels cannot change
 * after creation; once a customer claims the slot the container is renamed `blytz-<name>` (the
 * claim's first step), so its name says whose it is. Names and labels are set through the engine
 * API by the controller alone: nothing inside a container can change either.
 */
export interface ContainerIdentity {
  /** The customer it serves; undefined for a slot no customer holds yet. */
  customer: string | undefined;
  /** The pool slot it was made for, if it was. */
  poolSlot: number | undefined;
}

export function identityOf(labels: Record<string, string> | undefined, name: string): ContainerIdentity {
  const customer = labels?.[CUSTOMER_LABEL];
  if (customer) return { customer, poolSlot: undefined };
  const slot = Number(labels?.[POOL_SLOT_LABEL]);
  if (!Number.isSafeInteger(slot) || slot < 1) return { customer: undefined, poolSlot: undefined };
  const bare = name.replace(/^\//, '');
  const bound = bare.startsWith(OBJECT_PREFIX) ? bare.slice(OBJECT_PREFIX.length) : '';
  return { customer: isDns1123Label(bound) ? bound : undefined, poolSlot: slot };
}
