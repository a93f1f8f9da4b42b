import { PLAN_NAMES, type PlanName } from '../../domain/customer.js';
import { poolFolderName, slotOfFolder, SLOT_STATES, type SlotState } from '../../domain/pool.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { CustomerRuntime, ObservedContainer, PoolRuntime } from '../../runtime/runtime.js';
import type { SlotRow, StoredPool } from '../../store/pool-store.js';
import type { Workspaces } from '../../workspace/workspace.js';
import type { ReconcileResult, Reconciler } from '../controller.js';
import { poolFingerprint, resolvePoolSlot, type DesiredDefaults } from '../customer/desired.js';
import { debouncedHealth, planPools, type DesiredPool, type ObservedSlot, type PoolAction } from './plan.js';
import type { PoolReadiness } from './readiness.js';

/**
 * The pool controller: keeps each plan's warm pool at its size (domain/pool.ts). One key, all
 * pools: observe (the sizes and slot rows in the store, the slots' containers in one list call,
 * their folders), plan (plan.ts, pure), execute, then publish what is ready to the customer
 * controller (readiness.ts) and the metrics. Driven by a short periodic resync, a claim (refill)
 * and a size change; level-triggered like the customer controller, so a crash between any two
 * steps is finished by the next pass (a slot's row is written before anything of it exists).
 */

export const POOL_CONTROLLER_NAME = 'pool';
/** The one key the pool controller reconciles. */
export const POOLS_KEY = 'pools';

export interface PoolReconcilerDeps {
  pools: {
    list(): Promise<StoredPool[]>;
    slots(): Promise<SlotRow[]>;
    createSlot(plan: string, template: string, fingerprint: string): Promise<{ id: number; token: string }>;
    slotToken(id: number): Promise<string | undefined>;
    reservePort(id: number): Promise<number>;
    markReady(id: number): Promise<boolean>;
    retire(id: number): Promise<boolean>;
    deleteRetired(id: number): Promise<boolean>;
    forgetBound(id: number): Promise<boolean>;
  };
  runtime: PoolRuntime & Pick<CustomerRuntime, 'create' | 'start' | 'remove'>;
  /** FileWorkspaces rooted at the pool's folder (`$BLYTZ_DATA_DIR/pool/`). */
  workspaces: Workspaces;
  defaults: DesiredDefaults;
  readiness: PoolReadiness;
  metrics: Metrics;
  logger: Logger;
  /** Slots warming at once per plan (each gateway start takes a CPU for 20 s or more). Default 1. */
  maxWarming?: number;
}

/** While a slot warms (or a step failed), the pools are looked at this often. */
const BUSY_LOOK_MS = 1_000;
const FAILED_LOOK_MS = 5_000;

export class PoolReconciler implements Reconciler {
  readonly #deps: PoolReconcilerDeps;
  /** Passes in a row each slot's probes failed (see debouncedHealth). */
  readonly #failureStreaks = new Map<number, number>();
  /** Slots whose assistant did not show its token in force (the template's configProbe), warned about once. */
  readonly #warnedUnprovable = new Set<number>();

  constructor(deps: PoolReconcilerDeps) {
    this.#deps = deps;
  }

  listKeys(): Promise<string[]> {
    return Promise.resolve([POOLS_KEY]);
  }

  async reconcile(_key: string, signal: AbortSignal): Promise<ReconcileResult> {
    const { pools, runtime, workspaces } = this.#deps;
    const [stored, rows, containers, folders] = await Promise.all([pools.list(), pools.slots(), runtime.listPool(), workspaces.list()]);
    const desired = await this.#desired(stored);
    const bySlot = new Map<number, ObservedContainer>();
    for (const c of containers) if (c.poolSlot !== undefined) bySlot.set(c.poolSlot, c);
    const known = new Set(rows.map((r) => r.id));
    const slots: ObservedSlot[] = rows.map((row) => ({
      id: row.id,
      plan: row.plan,
      state: row.state,
      fingerprint: slotFingerprint(row.template, row.fingerprint),
      container: this.#debounced(row.id, bySlot.get(row.id)),
      folder: folders.includes(poolFolderName(row.id)),
    }));
    for (const id of this.#failureStreaks.keys()) if (!known.has(id)) this.#failureStreaks.delete(id);
    const actions = planPools({
      pools: desired.map((d) => d.pool),
      slots,
      // A claimed slot's container is its customer's (the customer controller's to keep or replace).
      strayContainers: containers.filter((c) => c.poolSlot !== undefined && !known.has(c.poolSlot) && c.customer === '').map((c) => c.id),
      strayFolders: folders.map(slotOfFolder).filter((id): id is number => id !== undefined && !known.has(id)),
      ...(this.#deps.maxWarming === undefined ? {} : { maxWarming: this.#deps.maxWarming }),
    });

    let failed = false;
    const retiring = new Set(rows.filter((r) => r.state === 'retiring').map((r) => r.id));
    for (const action of actions) {
      if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('reconcile aborted');
      try {
        await this.#execute(action, rows, desired, bySlot, retiring);
      } catch (error) {
        failed = true;
        this.#deps.logger.warn({ err: error, action: action.type }, `pool: ${describe(action)} failed`);
      }
    }
    await this.#publish(stored);
    const warming = actions.some((a) => a.type === 'createSlot' || a.type === 'startSlot') || rows.some((r) => r.state === 'warming');
    if (failed) return { requeueAfterMs: FAILED_LOOK_MS };
    return warming || actions.length > 0 ? { requeueAfterMs: BUSY_LOOK_MS } : {};
  }

  /** The slot's container as the planner should judge it: a probe failure counts once it lasts (debouncedHealth). */
  #debounced(slot: number, container: ObservedContainer | undefined): ObservedSlot['container'] {
    if (!container) return undefined;
    const { health, streak } = debouncedHealth(container.health, this.#failureStreaks.get(slot) ?? 0);
    this.#failureStreaks.set(slot, streak);
    return { id: container.id, state: container.state, health };
  }

  /** Each pool with a size, with the fingerprint its slots must carry (template, image, limits). */
  async #desired(stored: StoredPool[]): Promise<Wanted[]> {
    const out: Wanted[] = [];
    for (const p of stored) {
      if (p.size === 0) {
        this.#deps.metrics.poolSize.set({ plan: p.plan }, 0);
        continue;
      }
      try {
        const fingerprint = await poolFingerprint(p.plan, p.template, this.#deps);
        out.push({ pool: { plan: p.plan, size: p.size, fingerprint: slotFingerprint(p.template, fingerprint) }, template: p.template, fingerprint });
      } catch (error) {
        // A template that cannot load runs nothing: its pool is left as it is, and said so.
        this.#deps.logger.warn({ err: error, plan: p.plan }, `pool ${p.plan}: template ${p.template} cannot be loaded; no slots started`);
        continue;
      }
      this.#deps.metrics.poolSize.set({ plan: p.plan }, p.size);
    }
    return out;
  }

  async #execute(
    action: PoolAction,
    rows: SlotRow[],
    desired: Wanted[],
    bySlot: Map<number, ObservedContainer>,
    retiring: Set<number>,
  ): Promise<void> {
    const { pools, runtime, workspaces } = this.#deps;
    switch (action.type) {
      case 'createSlot': {
        const target = desired.find((d) => d.pool.plan === action.plan);
        if (!target) return;
        // The row first: nothing of the slot exists in the world that the store does not name.
        const slot = await pools.createSlot(action.plan, target.template, target.fingerprint);
        await this.#start({ id: slot.id, plan: action.plan as PlanName, template: target.template, token: slot.token }, undefined);
        this.#log(`pool slot ${slot.id} (${action.plan}) created and started`);
        return;
      }
      case 'startSlot': {
        const row = rows.find((r) => r.id === action.slot);
        const token = await pools.slotToken(action.slot);
        if (!row || token === undefined) return;
        await this.#start({ id: row.id, plan: row.plan as PlanName, template: row.template, token }, bySlot.get(row.id));
        this.#log(`pool slot ${row.id} (${row.plan}) started`);
        return;
      }
      case 'markReady': {
        const row = rows.find((r) => r.id === action.slot);
        const container = bySlot.get(action.slot);
        if (!row || container?.hostPort === undefined) return;
        if (!(await this.#showsItsToken(row, container.hostPort))) return;
        if (await pools.markReady(action.slot)) this.#log(`pool slot ${action.slot} (${row.plan}) is ready`);
        return;
      }
      case 'retire':
        if (await pools.retire(action.slot)) {
          retiring.add(action.slot);
          this.#log(`pool slot ${action.slot} retired (${action.reason})`);
        }
        return;
      case 'removeSlot': {
        // Only a slot this pass saw retiring, or retired itself: a claim may have come first.
        if (!retiring.has(action.slot)) return;
        if (action.containerId) await runtime.remove(action.containerId);
        await workspaces.remove(poolFolderName(action.slot));
        await pools.deleteRetired(action.slot);
        this.#log(`pool slot ${action.slot} removed`);
        return;
      }
      case 'forgetBound':
        // Its container is gone (replaced, or its customer left). A folder still under the pool's
        // was never moved to the customer (the container went first): nothing of theirs is in it.
        await workspaces.remove(poolFolderName(action.slot));
        await pools.forgetBound(action.slot);
        return;
      case 'removeStrayContainer':
        await runtime.remove(action.id);
        this.#log(`pool container ${action.id.slice(0, 12)} removed: no slot names it`);
        return;
      case 'removeStrayFolder':
        await workspaces.remove(poolFolderName(action.slot));
        this.#log(`pool folder ${poolFolderName(action.slot)} removed: no slot names it`);
        return;
    }
  }

  /** A slot's port, folder and container, made where missing, and started. */
  async #start(slot: { id: number; plan: PlanName; template: string; token: string }, container: ObservedContainer | undefined): Promise<void> {
    const { pools, runtime, workspaces, defaults } = this.#deps;
    const port = await pools.reservePort(slot.id);
    const resolved = await resolvePoolSlot(slot, { workspaces, defaults });
    await workspaces.write(poolFolderName(slot.id), resolved.rendered);
    const id = container?.id ?? (await runtime.create(resolved.containerSpec(port)));
    await runtime.start(id);
  }

  /**
   * A slot is claimable only if its assistant shows which gateway token is in force (the
   * template's configProbe): a bind waits for the customer's, and could never see it otherwise.
   */
  async #showsItsToken(row: SlotRow, hostPort: number): Promise<boolean> {
    const template = await this.#deps.workspaces.loadTemplate(row.template);
    if (!template.configProbe) return true;
    const token = await this.#deps.pools.slotToken(row.id);
    if (token !== undefined && (await this.#deps.runtime.probeToken(hostPort, template.configProbe, token)) === 'accepted') return true;
    if (!this.#warnedUnprovable.has(row.id)) {
      this.#warnedUnprovable.add(row.id);
      this.#deps.logger.warn(
        { slot: row.id, plan: row.plan },
        `pool slot ${row.id}: its assistant answers its probes but does not show its token in force (template ${row.template} configProbe ${template.configProbe.path}); it stays warming and is not claimed`,
      );
    }
    return false;
  }

  /** Slots by plan and state for the metrics, and what is ready for the customer controller. */
  async #publish(stored: StoredPool[]): Promise<void> {
    const rows = await this.#deps.pools.slots();
    const ready = new Map<string, number>();
    const counts = new Map<string, Record<SlotState, number>>();
    for (const plan of new Set<string>([...PLAN_NAMES, ...stored.map((p) => p.plan)])) {
      counts.set(plan, { warming: 0, ready: 0, retiring: 0, bound: 0 });
    }
    for (const row of rows) {
      const byState = counts.get(row.plan);
      if (byState) byState[row.state]++;
      if (row.state === 'ready') {
        const key = `${row.template}/${row.plan}`;
        ready.set(key, (ready.get(key) ?? 0) + 1);
      }
    }
    for (const [plan, byState] of counts) for (const state of SLOT_STATES) this.#deps.metrics.poolSlots.set({ plan, state }, byState[state]);
    this.#deps.readiness.set(ready);
  }

  #log(message: string): void {
    this.#deps.logger.info(message);
  }
}

/** A pool with a size, its template, and the fleet fingerprint its slots are made with. */
interface Wanted {
  pool: DesiredPool;
  template: string;
  fingerprint: string;
}

/** The planner compares one string: the template and the fleet fingerprint together. */
function slotFingerprint(template: string, fingerprint: string): string {
  return `${template}:${fingerprint}`;
}

function describe(action: PoolAction): string {
  return 'slot' in action ? `${action.type} of slot ${action.slot}` : action.type === 'createSlot' ? `a new ${action.plan} slot` : action.type;
}
