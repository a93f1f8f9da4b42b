import type { Writable } from 'node:stream';
import type { PlanResources } from '../domain/customer.js';
import type { Probes, TokenProbe } from '../domain/probes.js';
import type { Mount } from '../workspace/workspace.js';

/**
 * Where customers' assistants run. One interface, one real implementation per engine
 * (docker/, kubernetes/); the controller imports only this file.
 */

/**
 * Each of a container's tmpfs folders (ContainerSpec.tmpfs) holds at most this many MiB: memory,
 * counted against the container's memory limit as it fills (Docker's tmpfs, a Kubernetes emptyDir
 * of medium Memory alike).
 */
export const TMPFS_MIB = 256;

/** Everything the runtime needs to run one customer's container. Contains no secret values. */
export interface ContainerSpec {
  customer: string;
  image: string;
  containerPort: number;
  hostPort: number;
  /** `uid:gid` the process runs as (never root). */
  user: string;
  mounts: Mount[];
  /** Plain settings only: secrets travel in mounted 0600 files, never in Env. */
  env: Record<string, string>;
  resources: PlanResources;
  /** The template's probes, run on the container port (body checked, see domain/probes.ts). */
  probes: Probes;
  /** How long it may take to start before failing probes mean broken (the plan's CPU counted in). */
  startTimeoutSeconds: number;
  /** Writable tmpfs folders; everything else outside the mounts is read-only. */
  tmpfs: string[];
  /** Hash of everything that needs a new container when it changes (label `cloud.blytz.spec-hash`). */
  specHash: string;
  /**
   * Hash of the customer's own inputs in specHash (plan, template, secrets), label
   * `cloud.blytz.own-hash`: a spec hash change with the same own hash is a fleet-wide change
   * (image, template manifest, plan limits), which a rollout paces.
   */
  ownHash?: string;
  /** The customer's generation when the container was made (label `cloud.blytz.generation`). */
  generation?: number;
  /**
   * `next`: a blue-green update's new container, made beside the serving one (on Docker named
   * `blytz-<name>_next` until `adopt` renames it). Default: the customer's one container.
   */
  slot?: 'next';
  /** The template's update strategy (the Kubernetes Deployment strategy follows it). Default recreate. */
  updateStrategy?: 'recreate' | 'blueGreen';
  /**
   * A warm pool slot's container (see domain/pool.ts): named `blytz-pool_<id>`, on a network of
   * its own, labelled with the slot instead of a customer; `customer` then holds the slot's key
   * (`pool_<id>`). Everything else, hardening included, is a customer container's.
   */
  poolSlot?: number;
}

export type ContainerState = 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead';
/**
 * `healthy`: ready (routes go to it); `unready`: alive and started but its readiness probe fails
 * (kept, not routed to, not restarted); `starting`: within its start timeout; `unhealthy`: broken,
 * restarted; `unknown`: not running, or nothing to probe.
 */
export type ContainerHealth = 'healthy' | 'unready' | 'unhealthy' | 'starting' | 'unknown';

export interface ObservedContainer {
  id: string;
  /** Value of the `cloud.blytz.customer` label. */
  customer: string;
  name: string;
  specHash: string | undefined;
  state: ContainerState;
  health: ContainerHealth;
  /** Why it is unhealthy or stopped (last probe error, exit code, OOM), for status messages. */
  healthMessage?: string;
  hostPort?: number;
  /** The image it was created from (the rollback target of a fleet rollout). */
  image?: string;
  /** Value of `cloud.blytz.own-hash`, when present. */
  ownHash?: string;
  /** Value of `cloud.blytz.generation`, when present. */
  generation?: number;
  /**
   * Made as a blue-green update's new container and not yet adopted under the customer's own
   * container name (Docker: named `blytz-<name>_next`). The planner adopts it once it is alone.
   */
  provisional?: boolean;
  /**
   * Made as a warm pool slot (label `cloud.blytz.pool-slot`): its `specHash` and `ownHash` are the
   * slot's own until the customer controller maps them through the customer's binding.
   */
  poolSlot?: number;
}

/**
 * A token probe (a template's `configProbe`): whether the assistant answers with this token in
 * force: `accepted` (the answer shows what only an authorized caller sees), `refused` (it
 * answered, without it), `unreachable` (no answer).
 */
export type TokenProbeResult = 'accepted' | 'refused' | 'unreachable';

/**
 * What warm pools need of a runtime (Docker only in this version): its slots' containers, made,
 * listed and handed to a customer. See domain/pool.ts.
 */
export interface PoolRuntime {
  /** Every pool slot's container, bound or not, with health (one list call). */
  listPool(): Promise<ObservedContainer[]>;
  /**
   * Makes a claimed slot's container the customer's: renamed `blytz-<customer>` (idempotent).
   * Returns its id, or undefined when the slot has no container any more.
   */
  bindPoolContainer(slot: number, customer: string): Promise<string | undefined>;
  /** GET `path` on the host port with `Authorization: Bearer <token>`; see TokenProbeResult. */
  probeToken(hostPort: number, probe: TokenProbe, token: string): Promise<TokenProbeResult>;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** `start` failed because the host port is taken by something else: move to another port. */
export class PortClashError extends Error {
  constructor(readonly port: number, options?: { cause?: unknown }) {
    super(`host port ${port} is already in use on this host`, options);
    this.name = 'PortClashError';
  }
}

export interface CustomerRuntime {
  /** Every managed container, with one list call (label filter), health included. */
  list(): Promise<ObservedContainer[]>;
  /** The managed containers of one customer (normally zero or one). */
  listFor(customer: string): Promise<ObservedContainer[]>;
  /**
   * Creates (does not start) the container `blytz-<customer>` (a `next` slot spec: the
   * provisional `blytz-<customer>_next`); returns its id.
   */
  create(spec: ContainerSpec): Promise<string>;
  /**
   * Whether a customer's new container can run beside its old one on a second host port, so the
   * planner can update blue-green templates by starting, switching the route, then removing
   * (Docker). Without it (Kubernetes: the Deployment's own strategy) updates are planned as recreate.
   */
  readonly sideBySide?: boolean;
  /**
   * Gives a provisional container (see `ObservedContainer.provisional`) the customer's own
   * container name; called only when it is the customer's only container. Idempotent.
   */
  adopt?(id: string, customer: string): Promise<void>;
  /**
   * `create` on an existing container updates it in place, by the runtime's own update strategy,
   * keeping its address and volume (Kubernetes). The planner then updates rather than removes
   * and creates (see `PlanInput.updatesInPlace`).
   */
  readonly updatesInPlace?: boolean;
  /**
   * Restarts it (a new process, same container), where the runtime has a restart of its own;
   * otherwise the controller stops and starts it.
   */
  restart?(id: string): Promise<void>;
  /**
   * Whether the running container sees the host file `hostPath` through its bind mounts, as it
   * sees them now (Docker: a container keeps the folder it mounted at its start, even once that
   * folder is renamed away). False for a file it does not see, or a container not running. Asked
   * inside the container (`test -e`): a hostile one can only fool it about its own folder.
   */
  seesHostFile?(id: string, hostPath: string): Promise<boolean>;
  /** Starts it; idempotent. Throws PortClashError when the host port is taken. */
  start(id: string): Promise<void>;
  /** Stops it, keeping it; idempotent. */
  stop(id: string): Promise<void>;
  /** Removes it (force); a missing container is not an error. */
  remove(id: string): Promise<void>;
  /**
   * `remove` returns before the container is gone (Kubernetes: the Deployment stays, `removing`,
   * until its pods have stopped); the controller looks again until it is. Default false.
   */
  readonly removesInBackground?: boolean;
  /**
   * Runs a command inside the customer's running container with its stdout streamed into
   * `stdout` (unbounded: a backup of the state). Kubernetes only, where the state is reached
   * through the pod; the result's stdout is empty.
   */
  execStream?(id: string, command: string[], stdout: Writable, timeoutMs?: number): Promise<ExecResult>;
  /** Runs a command inside the customer's running container. */
  exec(id: string, command: string[], timeoutMs?: number): Promise<ExecResult>;
  /** Throws when the engine does not answer (for /readyz and doctor). */
  ping(): Promise<void>;
  /**
   * The `host:port` the proxy dials to reach the customer's assistant on its reserved port:
   * `127.0.0.1:<port>` for containers published on this host, the Service's cluster DNS name
   * on Kubernetes. Pure (no I/O), so planner and status can use it.
   */
  upstream(customer: string, port: number): string;
}
