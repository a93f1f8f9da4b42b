import type { SlotState } from '../../domain/pool.js';
import type { ContainerHealth, ContainerState } from '../../runtime/runtime.js';

/**
 * The pool planner: a pure function from the pools wanted (a size per plan) and the slots there
 * are (rows, containers, folders) to the ordered, idempotent actions that close the gap. No I/O,
 * no clock: the same input gives the same plan, and a converged world gives none.
 *
 * Rules:
 * - A bound slot is the customer's: never retired or removed here. Once its container is gone
 *   (the customer's controller replaced it, or the customer left) its row goes.
 * - A live slot (warming or ready) that is outdated (another fingerprint: a new image, template or
 *   plan limits), beyond the pool's size, stopped, unhealthy or missing its container or folder
 *   is retired, then removed; a fresh one takes its place. Slots are never repaired in place: a
 *   slot is a promise of a clean, just-started assistant.
 * - Missing slots are started at most `maxWarming` at a time per plan: each gateway start takes a
 *   CPU for 20 s or more, and customers' own starts share the host.
 * - Containers and folders of the pool that no slot row names (a crash between steps, a hand
 *   edit) are removed.
 */

export interface DesiredPool {
  plan: string;
  size: number;
  /** The fleet fingerprint a slot of this pool must carry (see desired.ts): image, limits, template. */
  fingerprint: string;
}

export interface PoolContainer {
  id: string;
  state: ContainerState;
  health: ContainerHealth;
}

export interface ObservedSlot {
  id: number;
  plan: string;
  state: SlotState;
  fingerprint: string;
  /** The container carrying this slot's label, if any. */
  container: PoolContainer | undefined;
  /** Its state folder is still under the pool's folder (not yet moved to a customer's). */
  folder: boolean;
}

export interface PoolPlanInput {
  /** Every pool with a size (plans without one want nothing). */
  pools: DesiredPool[];
  slots: ObservedSlot[];
  /** Pool containers whose slot has no row, by container id. */
  strayContainers: string[];
  /** Slot folders under the pool's folder that no row names, by slot id. */
  strayFolders: number[];
  /** Slots warming at once per plan (default 1). */
  maxWarming?: number;
}

export type RetireReason = 'outdated' | 'surplus' | 'stopped' | 'unhealthy' | 'containerMissing' | 'folderMissing';

export type PoolAction =
  /** A new slot: its row (warming), then port, folder and container, started. */
  | { type: 'createSlot'; plan: string }
  /** A warming slot whose container is missing or was never started: made and started. */
  | { type: 'startSlot'; slot: number }
  /** Its container answers its probes: claimable from now on. */
  | { type: 'markReady'; slot: number }
  | { type: 'retire'; slot: number; reason: RetireReason }
  /** A retiring slot: its container, folder, row and host port go. */
  | { type: 'removeSlot'; slot: number; containerId: string | undefined }
  /** A bound slot whose container is gone: the row goes (and a pool folder a crash left). */
  | { type: 'forgetBound'; slot: number }
  | { type: 'removeStrayContainer'; id: string }
  | { type: 'removeStrayFolder'; slot: number };

export function planPools(input: PoolPlanInput): PoolAction[] {
  const maxWarming = input.maxWarming ?? 1;
  const desired = new Map(input.pools.map((p) => [p.plan, p]));
  const actions: PoolAction[] = [];
  const slots = [...input.slots].sort((a, b) => a.id - b.id);

  for (const slot of slots) {
    if (slot.state === 'bound' && slot.container === undefined) actions.push({ type: 'forgetBound', slot: slot.id });
  }

  const retired = new Set<number>();
  const retire = (slot: ObservedSlot, reason: RetireReason) => {
    retired.add(slot.id);
    actions.push({ type: 'retire', slot: slot.id, reason });
  };
  // Live slots that cannot become or stay a clean ready assistant.
  for (const slot of slots) {
    if (slot.state !== 'warming' && slot.state !== 'ready') continue;
    const pool = desired.get(slot.plan);
    const reason = brokenReason(slot, pool);
    if (reason) retire(slot, reason);
  }
  // Of the rest, each pool keeps its size: surplus goes, warming ones first (the newest first),
  // so the ready ones, which a customer may be about to claim, stay.
  const byPlan = new Map<string, ObservedSlot[]>();
  for (const slot of slots) {
    if ((slot.state !== 'warming' && slot.state !== 'ready') || retired.has(slot.id)) continue;
    byPlan.set(slot.plan, [...(byPlan.get(slot.plan) ?? []), slot]);
  }
  for (const [plan, kept] of byPlan) {
    const size = desired.get(plan)?.size ?? 0;
    const surplus = [...kept].sort(surplusFirst).slice(0, Math.max(0, kept.length - size));
    for (const slot of surplus) retire(slot, 'surplus');
  }

  for (const slot of slots) {
    if (slot.state !== 'warming' || retired.has(slot.id)) continue;
    const container = slot.container;
    if (!container || container.state === 'created') actions.push({ type: 'startSlot', slot: slot.id });
    else if (container.state === 'running' && container.health === 'healthy') actions.push({ type: 'markReady', slot: slot.id });
  }

  for (const slot of slots) {
    if (slot.state === 'retiring' || retired.has(slot.id)) {
      actions.push({ type: 'removeSlot', slot: slot.id, containerId: slot.container?.id });
    }
  }

  for (const pool of [...desired.values()].sort((a, b) => a.plan.localeCompare(b.plan))) {
    const kept = (byPlan.get(pool.plan) ?? []).filter((s) => !retired.has(s.id));
    const warming = kept.filter((s) => s.state === 'warming').length;
    const missing = Math.max(0, pool.size - kept.length);
    const room = Math.max(0, maxWarming - warming);
    for (let i = 0; i < Math.min(missing, room); i++) actions.push({ type: 'createSlot', plan: pool.plan });
  }

  for (const id of [...input.strayContainers].sort()) actions.push({ type: 'removeStrayContainer', id });
  for (const slot of [...input.strayFolders].sort((a, b) => a - b)) actions.push({ type: 'removeStrayFolder', slot });
  return actions;
}

/**
 * Kubernetes' probe `failureThreshold`: a running slot's probes must fail this many passes in a
 * row before it counts as broken. A gateway takes a minute to boot on a loaded host, and there
 * one slow answer to a probe is common; retiring the slot for it would throw that minute away
 * (and leave the pool empty for the next payment).
 */
export const SLOT_FAILURE_THRESHOLD = 3;

/**
 * A slot container's health as the planner should judge it, given how many passes in a row its
 * probes had failed before this one (`streak`): a failure below the threshold is taken as
 * `starting` (a warming slot waits, a ready one stays). Returns the health and the new streak.
 */
export function debouncedHealth(health: ContainerHealth, streak: number): { health: ContainerHealth; streak: number } {
  if (health !== 'unhealthy' && health !== 'unready') return { health, streak: 0 };
  const failures = streak + 1;
  return { health: failures >= SLOT_FAILURE_THRESHOLD ? health : 'starting', streak: failures };
}

/** Why a live slot cannot stay, if it cannot. */
function brokenReason(slot: ObservedSlot, pool: DesiredPool | undefined): RetireReason | undefined {
  if (!pool || pool.size === 0) return 'surplus';
  if (slot.fingerprint !== pool.fingerprint) return 'outdated';
  // Its container was made: it must stay whole. A warming slot may still be on its way there.
  if (!slot.folder && (slot.state === 'ready' || slot.container !== undefined)) return 'folderMissing';
  const container = slot.container;
  if (!container) return slot.state === 'ready' ? 'containerMissing' : undefined;
  if (container.state === 'created') return slot.state === 'ready' ? 'stopped' : undefined;
  // Restarting means it crashed (the engine's restart policy at work): not a clean slot any more.
  if (container.state !== 'running') return 'stopped';
  // A warming one may still be starting (within its start timeout; after it the judge says
  // unhealthy); a ready one reads `starting` while a probe failure is below the failure threshold
  // (debouncedHealth). Failing past it, started but not ready, or with nothing to probe, it will
  // not be (or stay) a clean slot.
  if (container.health === 'healthy' || container.health === 'starting') return undefined;
  return 'unhealthy';
}

/** Surplus order: warming before ready, newest (highest id) first within each. */
function surplusFirst(a: ObservedSlot, b: ObservedSlot): number {
  const rank = (s: ObservedSlot) => (s.state === 'warming' ? 0 : 1);
  return rank(a) - rank(b) || b.id - a.id;
}
