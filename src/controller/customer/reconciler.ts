import type { BackupGate } from '../../backup/backup-gate.js';
import type { Customer, CustomerStatus } from '../../domain/customer.js';
import { canonicalJson } from '../../domain/canonical-json.js';
import { customerHost } from '../../domain/naming.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { RouteTable } from '../../proxy/route-table.js';
import { DependencyError } from '../../resilience/guard.js';
import { PortClashError, type CustomerRuntime, type ObservedContainer } from '../../runtime/runtime.js';
import type { CustomerStore, EventType } from '../../store/customer-store.js';
import { PortsExhaustedError } from '../../store/errors.js';
import type { PortReservations } from '../../store/port-reservations.js';
import type { Workspaces } from '../../workspace/workspace.js';
import { TerminalError } from '../controller.js';
import { resolveCustomer, TemplateError, type DesiredDefaults, type ResolvedCustomer } from './desired.js';
import type { Admission, Rollouts } from '../rollout/rollouts.js';
import { fleetChangeOf, plan, upstreamFor, type Action, type Observed, type UpstreamOf } from './plan.js';
import { RestartBackoff, restartsText, type RestartBackoffOptions } from './restart-backoff.js';
import { computeStatus } from './status.js';
import { WorldCache } from './world-cache.js';

export interface CustomerReconcilerDeps {
  store: CustomerStore;
  ports: PortReservations;
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
  /**
   * Backups (src/backup/): a restore holds the customer stopped; a fleet rollout and the purge
   * wait for a backup first; a failed update puts back the state from before it.
   */
  backups?: BackupGate;
}

export interface ReconcileOutcome {
  requeueAfterMs?: number;
}

const CONTROLLER = 'customer';
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
/** Refused starts of one container before it is replaced by a fresh one. */
const START_FAILURES_BEFORE_REPLACING = 3;

export class CustomerReconciler {
  readonly #deps: CustomerReconcilerDeps;
  readonly #now: () => number;
  /** When each customer started provisioning at its current generation (for the latency metric). */
  readonly #provisionStarted = new Map<string, { generation: number; at: number }>();
  /** Refused starts per container id (see #replaceIfUnstartable). */
  readonly #startFailures = new Map<string, number>();
  /** Restarts of unhealthy containers, spaced out like the kubelet's CrashLoopBackOff. */
  readonly #restarts: RestartBackoff;

  /** Where routes point: the runtime knows (loopback for Docker, the Service on Kubernetes). */
  readonly #upstreamOf: UpstreamOf;

  constructor(deps: CustomerReconcilerDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#restarts = new RestartBackoff(deps.restartBackoff);
    this.#upstreamOf = (customer, port) => deps.runtime.upstream(customer, port);
  }

  /** Every name the store or the world knows: orphans are reconciled (removed) too. */
  async listKeys(): Promise<string[]> {
    const { store, runtime, routes, ports } = this.#deps;
    const load = async () => {
      const [views, containers, routeList, reservations, nextPorts] = await Promise.all([
        store.reconcileViews(),
        runtime.list(),
        routes.list(),
        ports.all(),
        ports.all('next'),
      ]);
      return { views, containers, routes: routeList, ports: reservations, nextPorts };
    };
    const cache = this.#deps.cache ?? new WorldCache();
    return cache.refresh(load);
  }

  /** A live event for this customer: whatever a full pass cached about it may be older. */
  invalidate(name: string): void {
    this.#deps.cache?.invalidate(name);
  }

  async reconcile(name: string, signal: AbortSignal): Promise<ReconcileOutcome> {
    const { store } = this.#deps;
    const started = this.#now();
    const cached = this.#deps.cache?.take(name);
    let view = cached ? cached.view : await store.reconcileView(name);
    // A restore replacing the customer's state holds it as if suspended: stopped, page shown.
    const hold = view?.customer.spec.state === 'active' ? await this.#deps.backups?.holdOf(name) : undefined;
    if (view && hold) view = { ...view, customer: { ...view.customer, spec: { ...view.customer.spec, state: 'suspended' } } };
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
    const observed = cached
      ? {
          containers: cached.containers,
          route: cached.route,
          port: cached.port,
          nextPort: cached.nextPort,
          workspace: await this.#deps.workspaces.observe(name),
        }
      : await this.#observe(name);
    this.#restarts.observed(name, observed.containers, this.#now());
    // A fleet-wide change (same own inputs, other spec hash) waits for its rollout's slot; a
    // customer the rollout sends back gets its previous image.
    let admission: Admission | undefined;
    let backupWait: string | undefined;
    const rollouts = this.#deps.rollouts;
    // The rollout touches no customer before its state is backed up (the wait says why).
    const outdated =
      rollouts && this.#deps.backups && resolved?.fleet && customer?.spec.state === 'active' && !customer.spec.paused
        ? fleetChangeOf(resolved.desired, observed)
        : undefined;
    if (outdated?.specHash && resolved)
      backupWait = await this.#deps.backups?.beforeUpdate(name, outdated.specHash, resolved.desired.specHash);
    if (
      rollouts &&
      view &&
      customer &&
      resolved?.fleet &&
      !backupWait &&
      customer.spec.state === 'active' &&
      !customer.spec.paused
    ) {
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
      recreateAllowed: backupWait ? false : (admission?.recreateAllowed ?? true),
      upstreamOf: this.#upstreamOf,
      sideBySide: this.#deps.runtime.sideBySide === true,
    });
    if (!customer || !resolved) {
      if (result.actions.length > 0) this.invalidate(name);
      await this.#execute(name, result.actions, undefined, signal, true);
      return {};
    }
    if (customer.spec.paused) {
      await this.#writeStatus(customer, resolved, observed, undefined, result.note);
      return {};
    }
    const backupCondition = backupWait ? { reason: 'WaitingForBackup', message: backupWait } : undefined;

    const converged = isConverged(customer);
    let failure: { reason: string; message: string; terminal: boolean } | undefined;
    let waitNote: string | undefined;
    let restartHeldUntil: number | undefined;
    let requeueAfterMs: number | undefined;
    // A listing in flight must not hand a later reconcile the world from before these actions.
    if (result.actions.length > 0) this.invalidate(name);
    try {
      const outcome = await this.#execute(name, result.actions, resolved, signal, converged);
      waitNote = outcome.waitNote ?? hold;
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

    const after = result.actions.length > 0 ? await this.#observe(name) : observed;
    const status = await this.#writeStatus(customer, resolved, after, failure, waitNote, {
      heldHash: result.waitingForRollout?.heldHash,
      rollout: admission?.condition ?? backupCondition,
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
      // A failed update goes back to the previous image at once, and to the state from before it
      // (the new version may have migrated it into a shape the old one cannot read).
      const entry = admission.entry;
      if (progress.failed && entry.fromHash && this.#deps.backups)
        await this.#deps.backups
          .restoreBeforeUpdate(name, entry.fromHash, entry.toHash)
          .catch((error: unknown) =>
            this.#deps.logger.warn({ customer: name, err: error }, 'could not ask for the pre-update state back'),
          );
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
    if (backupWait) return { requeueAfterMs: ROLLOUT_WAIT_MS };
    if (admission && !admission.recreateAllowed) {
      return {
        requeueAfterMs: admission.rollout?.state === 'paused' || admission.rollout?.undone ? ROLLOUT_PAUSED_MS : ROLLOUT_WAIT_MS,
      };
    }
    // The purge waits for its last backup; the backup's end wakes it, this is the safety net.
    if (customer.spec.state === 'cancelled' && waitNote && after.workspace.exists) return { requeueAfterMs: ROLLOUT_PAUSED_MS };
    if (customer.spec.state === 'cancelled' && customer.cancelledAt) {
      const purgeIn = customer.cancelledAt.getTime() + this.#deps.retentionMs - this.#now();
      if (purgeIn > 0 && after.workspace.exists) return { requeueAfterMs: Math.min(purgeIn, MAX_PURGE_WAIT_MS) };
    }
    return {};
  }

  async #observe(name: string): Promise<Observed> {
    const { runtime, routes, ports, workspaces } = this.#deps;
    const [containers, routeList, port, nextPort, workspace] = await Promise.all([
      runtime.listFor(name),
      routes.list(),
      ports.find(name),
      ports.findNext(name),
      workspaces.observe(name),
    ]);
    return { containers, route: routeList.find((r) => r.customer === name), port, nextPort, workspace };
  }

  /** Runs the plan's actions in order; the first failure stops the rest (they may depend on it). */
  async #execute(
    name: string,
    actions: Action[],
    resolved: ResolvedCustomer | undefined,
    signal: AbortSignal,
    countDrift: boolean,
  ): Promise<{ waitNote?: string; restartHeldUntil?: number }> {
    const { runtime, routes, ports, workspaces, store, metrics } = this.#deps;
    const event = (type: EventType, reason: string, message: string) =>
      store.recordEvent(name, { type, reason, message }).catch(() => {});
    // A restart held back by its back-off is skipped (the other actions still run); status says why.
    let heldBack: { note: string; until: number } | undefined;
    for (const action of actions) {
      if (signal.aborted) throw new Error('reconcile aborted');
      const hold = action.type === 'restartContainer' ? this.#restarts.hold(name, action.id, this.#now()) : undefined;
      if (hold) {
        // Not a correction (yet): no drift counted, no event, until the back-off lets it happen.
        const note = `unhealthy; ${restartsText(hold.restarts)}, next restart after ${new Date(hold.notBefore).toISOString()} (back-off)`;
        heldBack = { note, until: hold.notBefore };
        continue;
      }
      const drift = 'drift' in action ? action.drift : undefined;
      if (drift && (countDrift || drift.startsWith('orphan_'))) metrics.driftCorrections.inc({ kind: drift });
      switch (action.type) {
        case 'writeWorkspace':
          await workspaces.write(name, need(resolved?.rendered));
          await event('Normal', 'WorkspaceRendered', 'workspace files rendered from the template');
          break;
        case 'reservePort': {
          if (action.slot === 'next') {
            const port = await ports.reserveNext(name);
            await event('Normal', 'PortReserved', `host port ${port} reserved for the new container (blue-green update)`);
            break;
          }
          const port = await ports.reserve(name);
          await event('Normal', 'PortReserved', `host port ${port} reserved`);
          break;
        }
        case 'createContainer': {
          const next = action.slot === 'next';
          const port = next ? await ports.reserveNext(name) : await ports.reserve(name);
          const id = await runtime.create(need(resolved).containerSpec(port, action.slot));
          await this.#start(name, id, port, action.slot);
          await event(
            'Normal',
            'ContainerCreated',
            `${next ? 'new container created beside the serving one and started' : 'container created and started'} on ${runtime.upstream(name, port)}`,
          );
          break;
        }
        case 'startContainer': {
          await this.#start(name, action.id, await ports.find(name, action.slot ?? 'current'), action.slot);
          await event('Normal', 'ContainerStarted', 'container started');
          break;
        }
        case 'restartContainer': {
          await runtime.stop(action.id);
          this.#restarts.restarted(name, action.id, this.#now());
          await this.#start(name, action.id, await ports.find(name, action.slot ?? 'current'), action.slot);
          await event('Warning', 'ContainerRestarted', 'container was unhealthy and was restarted');
          break;
        }
        case 'stopContainer':
          await runtime.stop(action.id);
          await event('Normal', 'ContainerStopped', 'container stopped');
          break;
        case 'removeContainer':
          // After a route switch the old container may still be answering a request Caddy sent
          // before: a graceful stop lets it finish.
          if (action.graceful) await runtime.stop(action.id);
          await runtime.remove(action.id);
          await event('Normal', 'ContainerRemoved', `container removed${drift ? ` (${drift.replace('_', ' ')})` : ''}`);
          break;
        case 'ensureRoute': {
          const host = customerHost(name, this.#deps.defaults.baseDomain);
          if (action.to === 'suspendedPage') {
            await routes.ensure({ customer: name, host, target: { kind: 'suspended' } });
            await event('Normal', 'RouteSuspended', `${host} shows the suspended page`);
            break;
          }
          const port = await ports.find(name, action.slot ?? 'current');
          if (port === undefined || !(await this.#waitForHealthy(name, port, signal))) {
            return {
              ...(heldBack ? { restartHeldUntil: heldBack.until } : {}),
              waitNote:
                heldBack?.note ??
                (action.slot === 'next'
                  ? 'blue-green update: waiting for the new container to become healthy; the old one serves meanwhile'
                  : 'waiting for the container to become healthy before routing to it'),
            };
          }
          const target = upstreamFor(port, name, this.#upstreamOf);
          const result = await routes.ensure({ customer: name, host, target });
          if (result !== 'unchanged') await event('Normal', 'RouteReady', `${host} routes to ${target.dial}`);
          break;
        }
        case 'removeRoute':
          await routes.remove(name);
          await event('Normal', 'RouteRemoved', 'route removed');
          break;
        case 'releasePort':
          if (action.slot === 'next') {
            await ports.releaseNext(name);
            await event('Normal', 'PortReleased', "the blue-green update's second host port released");
            break;
          }
          await ports.release(name);
          await event('Normal', 'PortReleased', 'host port released');
          break;
        case 'promotePort': {
          const port = await ports.promote(name);
          await event('Normal', 'UpdateSwitched', `blue-green update done: host port ${port ?? '?'} is the customer's port now`);
          break;
        }
        case 'adoptContainer': {
          if (!runtime.adopt) break;
          let id = action.id;
          if (id === undefined) {
            const containers = await runtime.listFor(name);
            if (containers.length !== 1 || !containers[0]?.provisional) break; // the next pass sees
            id = containers[0].id;
          }
          await runtime.adopt(id, name);
          break;
        }
        case 'removeWorkspace': {
          // The last copy first: the purge waits for a backup of the folder it deletes.
          const wait = await this.#deps.backups?.beforePurge(name);
          if (wait) return { waitNote: wait };
          await workspaces.remove(name);
          await event('Normal', 'WorkspacePurged', 'workspace deleted after the retention period');
          break;
        }
        case 'markDeleted':
          await store.markDeleted(name);
          break;
      }
    }
    return heldBack ? { waitNote: heldBack.note, restartHeldUntil: heldBack.until } : {};
  }

  /** Starts a container; a host port clash moves the customer to a new port (next pass recreates). */
  async #start(name: string, id: string, port: number | undefined, slot?: 'next'): Promise<void> {
    try {
      await this.#deps.runtime.start(id);
      this.#startFailures.delete(id);
    } catch (error) {
      if (!(error instanceof PortClashError)) await this.#replaceIfUnstartable(id, error);
      if (error instanceof PortClashError && port !== undefined) {
        const next = await this.#deps.ports.move(name, port, slot ?? 'current');
        await this.#repointRoute(name, port, next);
        await this.#deps.runtime.remove(id);
        throw new ReconcileStepError(`host port ${port} is taken by something else on this host; moved to ${next}`, {
          cause: error,
          reason: 'PortClash',
        });
      }
      throw error;
    }
  }

  /**
   * After a port clash moved the customer off `from`: a route still dialling `from` reaches the
   * foreign process holding it, and once that goes, whichever customer is handed the freed port
   * next. It dials the new port at once: a 502 until the new container is up beats serving
   * someone else's assistant under this customer's name.
   */
  async #repointRoute(name: string, from: number, to: number): Promise<void> {
    const { routes } = this.#deps;
    const route = (await routes.list()).find((r) => r.customer === name);
    const stale = upstreamFor(from, name, this.#upstreamOf);
    if (route?.target.kind !== 'upstream' || route.target.dial !== stale.dial) return;
    const host = customerHost(name, this.#deps.defaults.baseDomain);
    await routes.ensure({ customer: name, host, target: upstreamFor(to, name, this.#upstreamOf) });
  }

  /**
   * An engine that answers but keeps refusing to start one container (state left behind by an
   * unclean engine restart, e.g. "failed to start shim: ... file exists") never will: after
   * START_FAILURES_BEFORE_REPLACING refusals the container is removed and the next pass creates a
   * fresh one from the same spec (the workspace lives outside it, so nothing is lost), as the
   * kubelet replaces a pod sandbox. Failures while the engine is unreachable do not count.
   */
  async #replaceIfUnstartable(id: string, error: unknown): Promise<void> {
    const engineUp = await this.#deps.runtime.ping().then(
      () => true,
      () => false,
    );
    if (!engineUp) return;
    const failures = (this.#startFailures.get(id) ?? 0) + 1;
    if (failures < START_FAILURES_BEFORE_REPLACING) {
      this.#startFailures.set(id, failures);
      return;
    }
    this.#startFailures.delete(id);
    await this.#deps.runtime.remove(id);
    throw new ReconcileStepError(
      `the engine refused to start the container ${failures} times (${(error as Error).message}); removed it, a new one is created from the same spec`,
      { cause: error, reason: 'ContainerUnstartable' },
    );
  }

  async #waitForHealthy(name: string, port: number, signal: AbortSignal): Promise<boolean> {
    const deadline = this.#now() + (this.#deps.healthWaitMs ?? 10_000);
    for (;;) {
      const containers: ObservedContainer[] = await this.#deps.runtime.listFor(name);
      const container = containers.find((c) => c.hostPort === port && c.state === 'running');
      if (container?.health === 'healthy') return true;
      if (container?.health === 'unhealthy' || !container) return false;
      if (this.#now() > deadline || signal.aborted) return false;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
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

/** A step failed; its reason goes into status and events, and the queue backs off. */
export class ReconcileStepError extends Error {
  readonly reason: string;
  constructor(message: string, options: { cause?: unknown; reason?: string } = {}) {
    super(message, { cause: options.cause });
    this.name = 'ReconcileStepError';
    this.reason = options.reason ?? 'ReconcileFailed';
  }
}

/** The generation had converged before: anything found wrong now is drift, not progress. */
function isConverged(customer: Customer): boolean {
  const { status } = customer;
  return status.observedGeneration === customer.generation && (status.phase === 'Ready' || status.phase === 'Suspended');
}

function describeFailure(error: unknown): { reason: string; message: string; terminal: boolean } {
  if (error instanceof PortsExhaustedError) return { reason: 'PortsExhausted', message: error.message, terminal: false };
  if (error instanceof ReconcileStepError) return { reason: error.reason, message: error.message, terminal: false };
  if (error instanceof DependencyError) {
    const dependency = error.dependency.charAt(0).toUpperCase() + error.dependency.slice(1);
    return { reason: `${dependency}Failed`, message: error.message, terminal: false };
  }
  return { reason: 'ReconcileFailed', message: (error as Error).message ?? String(error), terminal: false };
}

function need<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('internal: action needs the resolved customer');
  return value;
}

export { CONTROLLER as CUSTOMER_CONTROLLER_NAME };

/** Why a reconcile's signal was aborted (NotLeaderError, ReconcileTimeoutError, shutdown). */
function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('reconcile aborted');
}
