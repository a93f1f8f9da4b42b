import type { Customer, CustomerStatus } from '../../domain/customer.js';
import { canonicalJson } from '../../domain/canonical-json.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { RouteTable } from '../../proxy/route-table.js';
import type { CustomerRuntime } from '../../runtime/runtime.js';
import type { ControllerStore, HostPorts } from '../../store/store.js';
import { PortsExhaustedError } from '../../store/errors.js';
import type { Workspaces } from '../../workspace/workspace.js';
import { TerminalError, type Reconciler, type ReconcileResult } from '../controller.js';
import { resolveCustomer, TemplateError, type DesiredDefaults, type ResolvedCustomer } from './desired.js';
import type { Admission, Rollouts } from '../rollout/rollouts.js';
import { fleetChangeOf, plan, type Observed, type UpstreamOf } from './plan.js';
import { RestartBackoff, type RestartBackoffOptions } from './restart-backoff.js';
import { computeStatus } from './status.js';
import { WorldCache, WorldObserver } from './observe.js';
import { describeFailure, Executor, ReconcileStepError } from './execute.js';

export interface CustomerReconcilerDeps {
  store: ControllerStore;
  ports: HostPorts;
  runtime: CustomerRuntime;
  routes: RouteTable;
  workspaces: Workspaces;
  metrics: Metrics;
  logger: Logger;
  defaults: DesiredDefaults;
  publicScheme: 'http' | 'https';
  retentionMs: number;
  /** How long one reconcile waits for a new container to turn healthy before routing to it. */
  healthWaitMs?: number;
  now?: () => number;
  /** When given, full passes list the world once and reconciles read from it. */
  cache?: WorldCache;
  /** When given, fleet-wide changes are paced by rollouts (without it they apply at once). */
  rollouts?: Rollouts;
  /** A rollout slot was freed: wake the customers waiting for one. */
  onRolloutProgress?: () => void;
  /** How restarts of a container that stays unhealthy are spaced (default: 30 s doubling to 5 min). */
  restartBackoff?: RestartBackoffOptions;
}

/** The customer controller's name: the `controller` label of its metrics and log lines. */
export const CUSTOMER_CONTROLLER_NAME = 'customer';
const WAIT_FOR_HEALTH_MS = 1000;
/** How often a customer whose unhealthy container waits out its restart back-off is looked at. */
const HELD_RESTART_LOOK_MS = 10_000;
const PORTS_EXHAUSTED_RETRY_MS = 30_000;
const MAX_PURGE_WAIT_MS = 3_600_000;
/** A customer held back by a rollout looks again this often (a freed slot wakes it sooner). */
const ROLLOUT_WAIT_MS = 5_000;
const ROLLOUT_PAUSED_MS = 15_000;

/**
 * Reconciles one customer by name: observe the world, plan, execute, write status. Level
 * triggered: it never asks why it was called, so any event, a duplicate or a resync all lead to
 * the same result.
 */

export class CustomerReconciler implements Reconciler {
  readonly #deps: CustomerReconcilerDeps;
  readonly #now: () => number;
  /** When each customer started provisioning at its current generation (for the latency metric). */
  readonly #provisionStarted = new Map<string, { generation: number; at: number }>();
  /** Restarts of unhealthy containers, spaced out like the kubelet's CrashLoopBackOff. */
  readonly #restarts: RestartBackoff;

  /** Where routes point: the runtime knows (loopback for Docker, the Service on Kubernetes). */
  readonly #upstreamOf: UpstreamOf;
  readonly #observer: WorldObserver;
  readonly #executor: Executor;

  constructor(deps: CustomerReconcilerDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#restarts = new RestartBackoff(deps.restartBackoff);
    this.#upstreamOf = (customer, port) => deps.runtime.upstream(customer, port);
    this.#observer = new WorldObserver(deps);
    this.#executor = new Executor({
      ...deps,
      baseDomain: deps.defaults.baseDomain,
      restarts: this.#restarts,
      now: this.#now,
    });
  }

  /** Every name the store or the world knows: orphans are reconciled (removed) too. */
  listKeys(): Promise<string[]> {
    return this.#observer.listKeys();
  }

  /** A live event for this customer: whatever a full pass cached about it may be older. */
  invalidate(name: string): void {
    this.#observer.invalidate(name);
  }

  async reconcile(name: string, signal: AbortSignal): Promise<ReconcileResult> {
    const { store } = this.#deps;
    const started = this.#now();
    const { view, cached } = await this.#observer.desired(name);
    const customer = view?.customer;
    let resolved: ResolvedCustomer | undefined;
    if (view && customer) {
      try {
        resolved = await resolveCustomer(view, this.#deps);
      } catch (error) {
        if (error instanceof TemplateError) {
          await this.#writeFailure(customer, 'TemplateInvalid', error.message, true);
          // No retry fixes a missing template: status says Failed and the queue does not retry.
          throw new TerminalError(error.message, { cause: error });
        }
        throw error;
      }
    }
    const observed = await this.#observer.world(name, cached);
    this.#restarts.observed(name, observed.containers, this.#now());
    // A fleet-wide change (same own inputs, other spec hash) waits for its rollout's slot; a
    // customer the rollout sends back gets its previous image.
    let admission: Admission | undefined;
    const rollouts = this.#deps.rollouts;
    if (rollouts && view && customer && resolved?.fleet && customer.spec.state === 'active' && !customer.spec.paused) {
      const change = fleetChangeOf(resolved.desired, observed);
      const { fleet } = resolved;
      admission = await rollouts.admit({
        customer: name,
        key: fleet.key,
        fingerprint: fleet.fingerprint,
        image: fleet.image,
        toHash: resolved.desired.specHash,
        change: change ? { fromHash: change.specHash as string, image: change.image } : undefined,
        now: this.#now(),
      });
      if (admission.rollbackImage !== undefined && admission.rollbackImage !== fleet.image) {
        resolved = await resolveCustomer(view, this.#deps, admission.rollbackImage);
      }
    }
    // Not active (any more) while a rollout was updating it: its start timeout must not run on.
    if (rollouts && (!customer || customer.spec.state !== 'active' || customer.spec.paused)) {
      if (await rollouts.release(name)) this.#deps.onRolloutProgress?.();
    }
    const result = plan({
      desired: resolved?.desired,
      observed,
      now: this.#now(),
      retentionMs: this.#deps.retentionMs,
      recreateAllowed: admission?.recreateAllowed ?? true,
      upstreamOf: this.#upstreamOf,
      sideBySide: this.#deps.runtime.sideBySide === true,
    });
    if (!customer || !resolved) {
      if (result.actions.length > 0) this.invalidate(name);
      await this.#executor.execute(name, result.actions, undefined, signal, true);
      return {};
    }
    if (customer.spec.paused) {
      await this.#writeStatus(customer, resolved, observed, undefined, result.note);
      return {};
    }

    const converged = isConverged(customer);
    let failure: { reason: string; message: string; terminal: boolean } | undefined;
    let waitNote: string | undefined;
    let restartHeldUntil: number | undefined;
    let requeueAfterMs: number | undefined;
    // A listing in flight must not hand a later reconcile the world from before these actions.
    if (result.actions.length > 0) this.invalidate(name);
    try {
      const outcome = await this.#executor.execute(name, result.actions, resolved, signal, converged);
      waitNote = outcome.waitNote;
      restartHeldUntil = outcome.restartHeldUntil;
    } catch (error) {
      if (signal.aborted) throw abortReason(signal);
      failure = describeFailure(error);
      if (error instanceof PortsExhaustedError) requeueAfterMs = PORTS_EXHAUSTED_RETRY_MS;
      await store.recordEvent(name, { type: 'Warning', reason: failure.reason, message: failure.message }).catch(() => {});
      this.#deps.logger.warn({ customer: name, reason: failure.reason, err: error }, 'reconcile step failed');
    }
    // Aborted (leadership lost, shutdown, reconcile timeout): an action in flight may have
    // finished, but this reconcile no longer speaks for the customer. No status, event or
    // rollout report: a new leader (or the next attempt) observes and writes them.
    if (signal.aborted) throw abortReason(signal);
    // Again after the actions: a listing that started while they ran holds the world from before.
    if (result.actions.length > 0) this.invalidate(name);

    const after = result.actions.length > 0 ? await this.#observer.observe(name) : observed;
    const status = await this.#writeStatus(customer, resolved, after, failure, waitNote, {
      heldHash: result.waitingForRollout?.heldHash,
      rollout: admission?.condition,
    });
    this.#trackProvisioning(customer, status, started);

    if (rollouts && admission?.entry && resolved.fleet) {
      const target = after.containers.find((c) => c.hostPort === after.port && c.specHash === resolved.desired.specHash);
      const progress = await rollouts.report(admission, {
        customer: name,
        current: status.phase === 'Ready' && !result.waitingForRollout,
        now: this.#now(),
        templateStartTimeoutSeconds: resolved.fleet.startTimeoutSeconds,
        healthMessage: target?.healthMessage,
      });
      if (progress.freed) this.#deps.onRolloutProgress?.();
      // A failed update goes back to the previous image at once.
      if (progress.failed && !failure) return { requeueAfterMs: 50 };
    }

    if (failure && requeueAfterMs === undefined) {
      // Let the queue back off; the status already says why.
      throw new ReconcileStepError(failure.message);
    }
    if (requeueAfterMs !== undefined) return { requeueAfterMs };
    if (customer.spec.state === 'active' && status.phase !== 'Ready') {
      // Held by its restart back-off: look less often (a recovery is still seen within seconds).
      const held = restartHeldUntil === undefined ? 0 : Math.min(restartHeldUntil - this.#now(), HELD_RESTART_LOOK_MS);
      return { requeueAfterMs: Math.max(held, WAIT_FOR_HEALTH_MS) };
    }
    if (admission && !admission.recreateAllowed) {
      return {
        requeueAfterMs: admission.rollout?.state === 'paused' || admission.rollout?.undone ? ROLLOUT_PAUSED_MS : ROLLOUT_WAIT_MS,
      };
    }
    if (customer.spec.state === 'cancelled' && customer.cancelledAt) {
      const purgeIn = customer.cancelledAt.getTime() + this.#deps.retentionMs - this.#now();
      if (purgeIn > 0 && after.workspace.exists) return { requeueAfterMs: Math.min(purgeIn, MAX_PURGE_WAIT_MS) };
    }
    return {};
  }

  async #writeStatus(
    customer: Customer,
    resolved: ResolvedCustomer,
    observed: Observed,
    failure: { reason: string; message: string; terminal: boolean } | undefined,
    note: string | undefined,
    rollout: { heldHash?: string | undefined; rollout?: { reason: string; message: string } | undefined } = {},
  ): Promise<CustomerStatus> {
    const status = computeStatus({
      name: customer.name,
      generation: customer.generation,
      state: customer.spec.state,
      paused: customer.spec.paused,
      // A container held back by a rollout is the one that serves: status judges it.
      desired: rollout.heldHash === undefined ? resolved.desired : { ...resolved.desired, specHash: rollout.heldHash },
      rollout: rollout.rollout,
      observed,
      previous: customer.status,
      url: `${this.#deps.publicScheme}://${resolved.desired.host}`,
      failure,
      note,
      upstreamOf: this.#upstreamOf,
      restartHoldOf: (containerId) => this.#restarts.hold(customer.name, containerId, this.#now()),
      now: new Date(this.#now()),
    });
    // Written only when it changed: a steady-state pass costs no store writes.
    if (canonicalJson(status) !== canonicalJson(customer.status)) await this.#deps.store.updateStatus(customer.name, status);
    return status;
  }

  async #writeFailure(customer: Customer, reason: string, message: string, terminal: boolean): Promise<void> {
    const previous = customer.status;
    const status: CustomerStatus = {
      ...previous,
      phase: terminal ? 'Failed' : (previous.phase ?? 'Provisioning'),
      observedGeneration: customer.generation,
      conditions: [
        ...(previous.conditions ?? []).filter((c) => c.type !== 'Ready'),
        {
          type: 'Ready',
          status: 'False',
          reason,
          message,
          lastTransitionTime: new Date(this.#now()).toISOString(),
          observedGeneration: customer.generation,
        },
      ],
    };
    const changed = await this.#deps.store.updateStatus(customer.name, status);
    if (changed) await this.#deps.store.recordEvent(customer.name, { type: 'Warning', reason, message }).catch(() => {});
  }

  #trackProvisioning(customer: Customer, status: CustomerStatus, started: number): void {
    if (customer.spec.state !== 'active') {
      this.#provisionStarted.delete(customer.name);
      return;
    }
    const tracked = this.#provisionStarted.get(customer.name);
    if (status.phase === 'Ready') {
      // Provisioned within this one reconcile (the common case): timed from its start.
      const since = tracked?.at ?? (customer.status.phase !== 'Ready' ? started : undefined);
      if (since !== undefined) this.#deps.metrics.provisionDuration.observe((this.#now() - since) / 1000);
      this.#provisionStarted.delete(customer.name);
    } else if (!tracked || tracked.generation !== customer.generation) {
      this.#provisionStarted.set(customer.name, { generation: customer.generation, at: started });
    }
  }
}

/** The generation had converged before: anything found wrong now is drift, not progress. */
function isConverged(customer: Customer): boolean {
  const { status } = customer;
  return status.observedGeneration === customer.generation && (status.phase === 'Ready' || status.phase === 'Suspended');
}

/** Why a reconcile's signal was aborted (NotLeaderError, ReconcileTimeoutError, shutdown). */
function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('reconcile aborted');
}
