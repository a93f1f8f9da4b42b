import type { Condition, Customer } from '../domain/customer.js';

/**
 * The status a Customer resource shows: the store's status, with generations translated. The
 * store counts its own generations (any writer bumps them), while `kubectl` users expect
 * status.observedGeneration to refer to the resource's metadata.generation. When resource
 * generation G was mirrored as store generation S, a store status observing S or later observes G.
 */

export interface GenerationLink {
  crGeneration: number;
  storeGeneration: number;
}

/** Why a resource's spec did not reach the store (shown as condition SpecAccepted=False). */
export interface SpecProblem {
  reason: 'InvalidSpec' | 'SecretNotFound' | 'InvalidSecret' | 'Conflict';
  message: string;
  /** Worth trying again without a change to the resource (a Secret may appear, a name may free up). */
  retry: boolean;
}

export interface CrStatus {
  phase?: string;
  observedGeneration?: number;
  url?: string;
  hostPort?: number;
  conditions?: Array<Omit<Condition, 'observedGeneration'> & { observedGeneration?: number }>;
}

export function crStatus(customer: Customer, link: GenerationLink | undefined, previous: Record<string, unknown>): CrStatus {
  const translate = (storeGeneration: number | undefined, fallback: unknown): number | undefined => {
    if (link && storeGeneration !== undefined && storeGeneration >= link.storeGeneration) return link.crGeneration;
    return typeof fallback === 'number' ? fallback : undefined;
  };
  const { status } = customer;
  const out: CrStatus = {};
  if (status.phase !== undefined) out.phase = status.phase;
  const observed = translate(status.observedGeneration, previous['observedGeneration']);
  if (observed !== undefined) out.observedGeneration = observed;
  if (status.url !== undefined) out.url = status.url;
  if (status.hostPort !== undefined) out.hostPort = status.hostPort;
  if (status.conditions !== undefined) {
    const before = conditionsOf(previous);
    out.conditions = status.conditions.map((c) => {
      const { observedGeneration, ...rest } = c;
      const generation = translate(observedGeneration, before.find((p) => p.type === c.type)?.observedGeneration);
      return generation === undefined ? rest : { ...rest, observedGeneration: generation };
    });
  }
  return out;
}

/** Adds SpecAccepted=False (and Ready=False when nothing else says so) to a status. */
export function specProblemStatus(
  status: CrStatus,
  problem: SpecProblem,
  crGeneration: number,
  previous: Record<string, unknown>,
): CrStatus {
  const before = conditionsOf(previous);
  const condition = (type: string): NonNullable<CrStatus['conditions']>[number] => {
    const old = before.find((c) => c.type === type);
    // Same status and reason as before: keep its time, or every sync would write a new status.
    const lastTransitionTime =
      old && old.status === 'False' && old.reason === problem.reason && typeof old.lastTransitionTime === 'string'
        ? old.lastTransitionTime
        : new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    return {
      type,
      status: 'False',
      reason: problem.reason,
      message: problem.message,
      lastTransitionTime,
      observedGeneration: crGeneration,
    };
  };
  const conditions = (status.conditions ?? []).filter((c) => c.type !== 'SpecAccepted');
  if (!conditions.some((c) => c.type === 'Ready')) conditions.push(condition('Ready'));
  conditions.push(condition('SpecAccepted'));
  return { ...status, phase: status.phase ?? (problem.retry ? 'Pending' : 'Failed'), conditions };
}

function conditionsOf(status: Record<string, unknown>): Array<Partial<Condition>> {
  const conditions = status['conditions'];
  return Array.isArray(conditions) ? (conditions as Array<Partial<Condition>>) : [];
}
