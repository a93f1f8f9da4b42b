import type { BackupGate } from '../../backup/backup-gate.js';
import type { Customer, CustomerStatus } from '../../domain/customer.js';
import { sameJson } from '../../domain/canonical-json.js';
import { customerUrl } from '../../domain/naming.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { RouteTable } from '../../proxy/route-table.js';
import { dependencyOf } from '../../resilience/guard.js';
import type { CustomerRuntime } from '../../runtime/runtime.js';
import type { ControllerStore, HostPorts, ReconcileView } from '../../store/store.js';
import { PortsExhaustedError } from '../../store/errors.js';
import type { ModelAccessFragment } from '../../workspace/model-access-config.js';
import type { Workspaces } from '../../workspace/workspace.js';
import { TerminalError, type Reconciler, type ReconcileResult } from '../controller.js';
import type { Admission, Rollouts } from '../rollout/rollouts.js';
import { resolveCustomer, TemplateError, type DesiredDefaults, type ResolvedCustomer } from './desired.js';
import { FleetUpdates } from './fleet-updates.js';
import { LOOK, lookAgain } from './look-again.js';
import { describeFailure, Executor, ReconcileStepError, type ExecuteOutcome, type KnownPorts } from './execute.js';
import { WorldCache, WorldObserver, type DesiredRead } from './observe.js';
import type { BindOutcome, PoolBinder } from './pool-binding.js';
import { plan, type Action, type Observed, type UpstreamOf } from './plan.js';
import { ReconcileEvents } from './reconcile-events.js';
import { RestartBackoff, type RestartBackoffOptions } from './restart-backoff.js';
import { computeStatus, failedStatus, isConverged, type StatusInput } from './status.js';

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
  /**
   * The port customer hosts are served on, shown in their URL (`http://<host>:8081`); absent
   * when it is the scheme's own (80, 443) or unknown.
   */
  publicPort?: number | undefined;
  retentionMs: number;
  /** How long one reconcile waits for a new container to turn healthy before routing to it. */
  healthWaitMs?: number;
  /** How long a container the route just left keeps serving before it is stopped (execute.ts ROUTE_DRAIN_MS). */
  routeDrainMs?: number;
  now?: () => number;
  /** When given, full passes list the world once and reconciles read from it. */
  cache?: WorldCache;
  /** When given, fleet-wide changes are paced by rollouts (without it they apply at once). */
  rollouts?: Rollouts;
  /** A rollout slot was freed: wake the customers waiting for one. */
  onRolloutProgress?: () => void;
  /** How restarts of a container that stays unhealthy are spaced (default: 30 s doubling to 5 min). */
  restartBackoff?: RestartBackoffOptions;
  /** The included model's openclaw.json fragment for a customer, when the model gateway is on (desired.ts). */
  modelAccess?: (name: string) => Promise<ModelAccessFragment | undefined>;
  /**
   * Backups (src/backup/): a restore holds the customer stopped; a fleet rollout and the purge
   * wait for a backup first; a failed update puts back the state from before it.
   */
  backups?: BackupGate;
  /** Warm pools (Docker): a new customer is bound to a pre-started assistant (pool-binding.ts). */
  pool?: PoolBinder;
}

/** The customer controller's name: the `controller` label of its metrics and log lines. */
export const CUSTOMER_CONTROLLER_NAME = 'customer';

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
  /** Each Ready customer's serving container, as its last reconcile saw it (see #repair). */
  readonly #serving = new Map<string, Serving>();

  /** Where routes point: the runtime knows (loopback for Docker, the Service on Kubernetes). */
  readonly #upstreamOf: UpstreamOf;
  readonly #observer: WorldObserver;
  readonly #executor: Executor;
  readonly #updates: FleetUpdates;

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
    this.#updates = new FleetUpdates({ ...deps, now: this.#now });
  }

  /** Every name the store or the world knows: orphans are reconciled (removed) too. */
  listKeys(): Promise<string[]> {
    return this.#observer.listKeys();
  }

  /** A live event for this customer: whatever a full pass cached about it may be older. */
  invalidate(name: string): void {
    this.#observer.invalidate(name);
  }

  /**
   * Observe, plan, execute, write status; then say when to look again. Each step is a room of
   * its own: observe.ts, plan.ts (pure), execute.ts, status.ts (pure). The events it records are
   * written with the status, in one statement.
   */
  async reconcile(name: string, signal: AbortSignal): Promise<ReconcileResult> {
    const events = new ReconcileEvents();
    try {
      return await this.#reconcile(name, signal, events);
    } finally {
      // Events not written with a status (there was none to write, or a step threw) go on their
      // own; not after an abort: that reconcile no longer speaks for the customer.
      const left = events.take();
      if (left.length > 0 && !signal.aborted) await this.#deps.store.writeStatusAndEvents(name, undefined, left).catch(() => {});
    }
  }

  /** The sequence; each step is a method below, each room a file of its own. */
  async #reconcile(name: string, signal: AbortSignal, events: ReconcileEvents): Promise<ReconcileResult> {
    const started = this.#now();
    const seen = await this.#observe(name, events, signal);
    const result = this.#plan(seen);
    const { customer, resolved } = seen;
    if (!customer || !resolved) return this.#tearDown(name, result.actions, seen.observed, events, signal);
    if (customer.spec.paused) {
      await this.#writeStatus(customer, resolved, seen.observed, events, { note: result.note });
      return {};
    }
    // Claimed, and its gateway is still taking the customer's configuration: no route to it yet.
    if (seen.bind?.kind === 'pending') {
      if (signal.aborted) throw abortReason(signal);
      const status = await this.#writeStatus(customer, resolved, seen.observed, events, { note: seen.bind.note });
      this.#trackProvisioning(customer, status, started);
      return { requeueAfterMs: LOOK.bindMs };
    }
    const { run, after } = await this.#act(name, { ...seen, customer, resolved }, result, events, signal);
    return this.#conclude(name, { ...seen, customer, resolved }, result, { run, after, started }, events);
  }

  /**
   * Observe: what the store wants and the customer's containers, then (after any repair or pool
   * bind) the template resolved and the rest of the world, and what a fleet update allows.
   */
  async #observe(name: string, events: ReconcileEvents, signal: AbortSignal): Promise<Seen> {
    const read = await this.#observer.desiredAndContainers(name);
    // A restore replacing the customer's state holds it as if suspended: stopped, page shown.
    const hold = read.view?.customer.spec.state === 'active' ? await this.#deps.backups?.holdOf(name) : undefined;
    if (hold && read.view) read.view = asSuspended(read.view);
    const { view } = read;
    const repair = await this.#repair(name, read, events, signal);
    if (repair && !repair.failure) await this.#observer.relist(name, read);
    let resolved = view ? await this.#resolve(view, events) : undefined;
    // A new customer takes a warm pool slot, when one is ready (pool-binding.ts); a claim made
    // earlier is finished here, after a crash too.
    const bind =
      view && resolved && this.#deps.pool
        ? await this.#deps.pool.bind(view, resolved, read.containers, events, signal)
        : undefined;
    if (bind && bind.kind !== 'none') await this.#observer.relist(name, read);
    const observed = await this.#observer.world(name, read);
    this.#restarts.observed(name, observed.containers, this.#now());
    // A fleet-wide change waits for a backup, then its rollout's slot; a customer sent back gets
    // its previous image.
    const { backupWait, admission } = await this.#updates.gate(name, view, resolved, observed);
    if (view && resolved?.fleet && admission?.rollbackImage !== undefined && admission.rollbackImage !== resolved.fleet.image) {
      resolved = await resolveCustomer(view, this.#deps, admission.rollbackImage);
    }
    return { view, customer: view?.customer, resolved, observed, hold, repair, bind, backupWait, admission };
  }

  /** Plan: pure. */
  #plan(seen: Seen): ReturnType<typeof plan> {
    return plan({
      desired: seen.resolved?.desired,
      observed: seen.observed,
      now: this.#now(),
      retentionMs: this.#deps.retentionMs,
      recreateAllowed: seen.backupWait ? false : (seen.admission?.recreateAllowed ?? true),
      upstreamOf: this.#upstreamOf,
      sideBySide: this.#deps.runtime.sideBySide === true,
      updatesInPlace: this.#deps.runtime.updatesInPlace === true,
      removesInBackground: this.#deps.runtime.removesInBackground === true,
    });
  }

  /** Gone from the store: tear down what the world still has (an orphan); no status to write. */
  async #tearDown(
    name: string,
    actions: Action[],
    observed: Observed,
    events: ReconcileEvents,
    signal: AbortSignal,
  ): Promise<ReconcileResult> {
    this.#serving.delete(name);
    if (actions.length > 0) this.invalidate(name);
    await this.#executor.execute(name, actions, undefined, signal, true, events, knownPorts(observed));
    // A container removed in the background may leave parts for a later pass (its NetworkPolicy).
    const removing = this.#deps.runtime.removesInBackground && actions.some((a) => a.type === 'removeContainer');
    return removing ? { requeueAfterMs: LOOK.teardownMs } : {};
  }

  /**
   * Execute, then look at the world as the actions left it. A listing in flight must not hand a
   * later reconcile the world from before these actions: invalidated before and after them.
   */
  async #act(
    name: string,
    seen: Seen & { customer: Customer; resolved: ResolvedCustomer },
    result: ReturnType<typeof plan>,
    events: ReconcileEvents,
    signal: AbortSignal,
  ): Promise<{ run: RunOutcome; after: Observed }> {
    const { customer, resolved, observed, repair } = seen;
    if (result.actions.length > 0) this.invalidate(name);
    const converged = isConverged(customer);
    // Work to do on a customer not up yet: say so before doing it (waiting for a new container's
    // health can take seconds), so `blytz get` shows Provisioning rather than nothing, then Ready.
    if (result.actions.length > 0 && customer.spec.state === 'active' && !signal.aborted) {
      const provisioning = await this.#writeProvisioning(customer, resolved, observed, result.note);
      if (provisioning) customer.status = provisioning;
    }
    const ports = knownPorts(observed);
    // A repair that failed stands for this pass (the plan holds the same start): no second try.
    const run = repair?.failure ? repair : await this.#execute(name, result.actions, resolved, signal, converged, events, ports);
    // Aborted (leadership lost, shutdown, reconcile timeout): an action in flight may have
    // finished, but this reconcile no longer speaks for the customer. No status, event or
    // rollout report: a new leader (or the next attempt) observes and writes them.
    if (signal.aborted) throw abortReason(signal);
    if (result.actions.length === 0) return { run, after: observed };
    this.invalidate(name);
    // The ports as the actions left them, unless one failed: then as the store has them.
    const after = await this.#observer.observe(name, run.failure ? undefined : ports, undefined, seen.view?.binding);
    if (!run.failure && isColdStart(customer, result.actions))
      this.#deps.metrics.assistantStarts.inc({ plan: customer.spec.plan, source: 'cold' });
    return { run, after };
  }

  /** Status from the world after the actions, the rollout's report, and when to look again. */
  async #conclude(
    name: string,
    seen: Seen & { customer: Customer; resolved: ResolvedCustomer },
    result: ReturnType<typeof plan>,
    outcome: { run: RunOutcome; after: Observed; started: number },
    events: ReconcileEvents,
  ): Promise<ReconcileResult> {
    const { customer, resolved, admission, backupWait } = seen;
    const { run, after } = outcome;
    const status = await this.#writeStatus(customer, resolved, after, events, {
      failure: run.failure,
      note: run.waitNote ?? seen.hold,
      heldHash: result.waitingForRollout?.heldHash,
      rollout: admission?.condition ?? (backupWait ? { reason: 'WaitingForBackup', message: backupWait } : undefined),
    });
    this.#trackProvisioning(customer, status, outcome.started);
    if (status.phase === 'Ready' && customer.status.phase !== 'Ready') this.#deps.backups?.stateReadable(name);
    this.#rememberServing(customer, status, after, result.waitingForRollout?.heldHash ?? resolved.desired.specHash);
    // A failed update goes back to the previous image at once (and to its state, fleet-updates.ts).
    const heldBack = !!result.waitingForRollout;
    const progress = admission && (await this.#updates.report({ name, admission, resolved, after, status, heldBack }));
    if (progress?.failed && !run.failure) return { requeueAfterMs: 50 };
    if (backupWait) return { requeueAfterMs: LOOK.rolloutWaitMs };

    // Let the queue back off on a failure; the status already says why.
    if (run.failure && run.retryAfterMs === undefined)
      throw new ReconcileStepError(run.failure.message, { cause: run.failedWith, reason: run.failure.reason });
    const purged = result.actions.some((action) => action.type === 'markDeleted');
    return lookAgain({ customer, status, run, admission, after, purged, retentionMs: this.#deps.retentionMs, now: this.#now() });
  }

  /**
   * Repair before anything else: the container this controller last saw serving the customer,
   * at the generation the store still wants, found stopped (killed, crashed, stopped by hand) is
   * started at once, before the template is rendered and the rest of the world read, none of
   * which can change what to do with it; as a kubelet restarts a pod's container from the spec it
   * holds. Then the reconcile goes on as ever and sees it running (or, when the start failed,
   * reports that failure as its own). Once per convergence: a container that dies again before
   * it is seen serving takes the ordinary path. Undefined when there was nothing to repair.
   */
  async #repair(name: string, read: DesiredRead, events: ReconcileEvents, signal: AbortSignal): Promise<RunOutcome | undefined> {
    const serving = this.#serving.get(name);
    const customer = read.view?.customer;
    if (!serving || !customer) return undefined;
    const [container, ...others] = read.containers;
    const stopped = container?.state === 'exited' || container?.state === 'created';
    const same =
      customer.generation === serving.generation &&
      customer.spec.state === 'active' &&
      !customer.spec.paused &&
      others.length === 0 &&
      container?.id === serving.containerId &&
      container.specHash === serving.specHash &&
      container.hostPort === serving.port;
    if (!same || !stopped) return undefined;
    this.#serving.delete(name);
    this.invalidate(name);
    const start: Action = { type: 'startContainer', id: container.id, drift: 'container_stopped' };
    return this.#execute(name, [start], undefined, signal, true, events, { current: serving.port });
  }

  /** A Ready customer's serving container, for the next repair; anything else forgets it. */
  #rememberServing(customer: Customer, status: CustomerStatus, after: Observed, specHash: string): void {
    const active = status.phase === 'Ready' && customer.spec.state === 'active' && !customer.spec.paused;
    const container = active
      ? after.containers.find((c) => c.hostPort === after.port && c.specHash === specHash && c.state === 'running')
      : undefined;
    if (container && after.port !== undefined) {
      this.#serving.set(customer.name, {
        generation: customer.generation,
        containerId: container.id,
        specHash,
        port: after.port,
      });
    } else {
      this.#serving.delete(customer.name);
    }
  }

  /** The customer against its template; a template no retry can fix fails it terminally. */
  async #resolve(view: ReconcileView, events: ReconcileEvents): Promise<ResolvedCustomer> {
    try {
      return await resolveCustomer(view, this.#deps);
    } catch (error) {
      if (!(error instanceof TemplateError)) throw error;
      const failure = { reason: 'TemplateInvalid', message: error.message, terminal: true };
      const changed = await this.#deps.store.updateStatus(
        view.customer.name,
        failedStatus(view.customer, failure, new Date(this.#now())),
      );
      if (changed) events.record('Warning', failure.reason, failure.message);
      // No retry fixes a missing template: status says Failed and the queue does not retry.
      throw new TerminalError(error.message, { cause: error });
    }
  }

  /** Runs the actions; a failed step becomes the status's failure (and an event), not an exception. */
  async #execute(
    name: string,
    actions: Action[],
    resolved: ResolvedCustomer | undefined,
    signal: AbortSignal,
    converged: boolean,
    events: ReconcileEvents,
    ports: KnownPorts,
  ): Promise<RunOutcome> {
    try {
      return await this.#executor.execute(name, actions, resolved, signal, converged, events, ports);
    } catch (error) {
      if (signal.aborted) throw abortReason(signal);
      const failure = describeFailure(error);
      events.record('Warning', failure.reason, failure.message);
      // A dependency's failure is reported once by the controller (collapsed while it lasts).
      const level = dependencyOf(error) === undefined ? 'warn' : 'debug';
      this.#deps.logger[level]({ customer: name, reason: failure.reason, err: error }, 'reconcile step failed');
      return {
        failure,
        failedWith: error,
        ...(error instanceof PortsExhaustedError ? { retryAfterMs: LOOK.portsExhaustedMs } : {}),
      };
    }
  }

  async #writeStatus(
    customer: Customer,
    resolved: ResolvedCustomer,
    observed: Observed,
    events: ReconcileEvents,
    why: StatusWhy,
  ): Promise<CustomerStatus> {
    const status = computeStatus(this.#statusInput(customer, resolved, observed, why));
    // Written only when it changed, with the reconcile's events: a steady-state pass costs no
    // store writes, a busy one a single statement.
    const changed = !sameJson(status, customer.status);
    const recorded = events.take();
    if (changed || recorded.length > 0) {
      await this.#deps.store.writeStatusAndEvents(customer.name, changed ? status : undefined, recorded);
    }
    return status;
  }

  #statusInput(customer: Customer, resolved: ResolvedCustomer, observed: Observed, why: StatusWhy): StatusInput {
    return {
      name: customer.name,
      generation: customer.generation,
      state: customer.spec.state,
      paused: customer.spec.paused,
      desired: why.heldHash === undefined ? resolved.desired : { ...resolved.desired, specHash: why.heldHash },
      rollout: why.rollout,
      observed,
      previous: customer.status,
      url: customerUrl(this.#deps.publicScheme, resolved.desired.host, this.#deps.publicPort),
      failure: why.failure,
      note: why.note,
      upstreamOf: this.#upstreamOf,
      restartHoldOf: (containerId) => this.#restarts.hold(customer.name, containerId, this.#now()),
      purgePending:
        customer.spec.state === 'cancelled' &&
        customer.cancelledAt !== null &&
        customer.cancelledAt.getTime() + this.#deps.retentionMs <= this.#now() &&
        observed.workspace.exists,
      now: new Date(this.#now()),
    };
  }

  /**
   * The status before this pass's actions, written only when it says Provisioning and the stored
   * one does not (a first start, a spec change being applied); a degraded customer being repaired
   * keeps its phase. Returns what was written.
   */
  async #writeProvisioning(
    customer: Customer,
    resolved: ResolvedCustomer,
    observed: Observed,
    note: string | undefined,
  ): Promise<CustomerStatus | undefined> {
    if (customer.status.phase === 'Provisioning') return undefined;
    const status = computeStatus(this.#statusInput(customer, resolved, observed, { note }));
    if (status.phase !== 'Provisioning') return undefined;
    await this.#deps.store.updateStatus(customer.name, status);
    return status;
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

type Failure = ReturnType<typeof describeFailure>;

/** Why the status says what it says, beside what the world shows. */
interface StatusWhy {
  failure?: Failure | undefined;
  note?: string | undefined;
  /** The spec hash of the container a rollout holds back (it is the one that serves: status judges it). */
  heldHash?: string | undefined;
  rollout?: { reason: string; message: string } | undefined;
}

/** The container a Ready customer was served by, at the generation it was Ready at. */
interface Serving {
  generation: number;
  containerId: string;
  specHash: string;
  port: number;
}

/** What the execute step came to: a failure (status and events say why), or a note on what it waits for. */
/** What observing found and decided before the plan: the inputs of everything after it. */
interface Seen {
  view: ReconcileView | undefined;
  customer: Customer | undefined;
  resolved: ResolvedCustomer | undefined;
  observed: Observed;
  /** Why a restore holds the customer stopped, if one does. */
  hold: string | undefined;
  /** The repair-first start, when there was one. */
  repair: RunOutcome | undefined;
  bind: BindOutcome | undefined;
  /** Why a fleet update waits for a backup, if it does. */
  backupWait: string | undefined;
  admission: Admission | undefined;
}

interface RunOutcome extends ExecuteOutcome {
  failure?: Failure;
  /** The error behind `failure`, kept as the cause of the error the queue sees. */
  failedWith?: unknown;
  /** Look again after this long instead of backing off (no port free: another may be soon). */
  retryAfterMs?: number;
}

/** A new customer's first container, started for it (no port held before): not from a warm pool. */
function isColdStart(customer: Customer, actions: Action[]): boolean {
  return (
    customer.spec.state === 'active' &&
    actions.some((a) => a.type === 'reservePort' && a.slot === undefined) &&
    actions.some((a) => a.type === 'createContainer' && a.slot === undefined)
  );
}

/** The customer as planned while a restore holds it: suspended (container stopped, page shown). */
function asSuspended(view: ReconcileView): ReconcileView {
  return { ...view, customer: { ...view.customer, spec: { ...view.customer.spec, state: 'suspended' } } };
}

/** The ports a reconcile starts its actions with: as observed. */
function knownPorts(observed: Observed): KnownPorts {
  const ports: KnownPorts = {};
  if (observed.port !== undefined) ports.current = observed.port;
  if (observed.nextPort !== undefined) ports.next = observed.nextPort;
  return ports;
}

/** Why a reconcile's signal was aborted (NotLeaderError, ReconcileTimeoutError, shutdown). */
function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('reconcile aborted');
}
