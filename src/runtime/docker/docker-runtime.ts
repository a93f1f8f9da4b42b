import Docker from 'dockerode';
import { containerName, CUSTOMER_LABEL, NEXT_CONTAINER_SUFFIX, SPEC_HASH_LABEL } from '../../domain/naming.js';
import type { Guard } from '../../resilience/guard.js';
import { httpStatusOf, isPortClashMessage } from '../../resilience/transient.js';
import {
  PortClashError,
  type ContainerSpec,
  type ContainerState,
  type CustomerRuntime,
  type ExecResult,
  type ObservedContainer,
  type PoolRuntime,
  type TokenProbeResult,
} from '../runtime.js';
import { poolEngineKey } from '../../domain/pool.js';
import type { TokenProbe } from '../../domain/probes.js';
import { identityOf } from './identity.js';
import { containerConfig, DEFAULT_LOG_ROTATION, type LogRotation } from './container-config.js';
import { ContainerNotRunningError } from '../exec-output.js';
import { runExec } from './exec.js';
import {
  judgeContainer,
  mapLimit,
  parseProbesLabel,
  parseStatus,
  probeLegacyPath,
  runTokenProbe,
  type ProbeOptions,
  type ProbeResult,
} from './health.js';
import { customerNetworkName, CustomerNetworks } from './networks.js';
import {
  checkExtraLabels,
  CONTAINER_PORT_LABEL,
  GENERATION_LABEL,
  HEALTH_PATH_LABEL,
  HOST_PORT_LABEL,
  labelFilter,
  OWN_HASH_LABEL,
  POOL_SLOT_LABEL,
  PROBES_LABEL,
  START_TIMEOUT_LABEL,
} from '../../domain/labels.js';

export interface DockerRuntimeOptions {
  /** Defaults to `new Docker()`, which honours DOCKER_HOST. */
  docker?: Docker;
  /** Stamped on created containers and required when listing (see labels.ts). */
  extraLabels?: Record<string, string>;
  /** Health probes in flight at once during list(). Default 8. */
  probeConcurrency?: number;
  /** Default 2000 ms: a healthy assistant answers in milliseconds. */
  probeTimeoutMs?: number;
  /** X-Forwarded-For the probes send (see ProbeOptions.forwardedFor); unset: none. */
  probeForwardedFor?: string;
  /** Grace period `stop` gives the process before SIGKILL. Default 30. */
  stopTimeoutSeconds?: number;
  logRotation?: LogRotation;
  /** BLYTZ_DOCKER_NETWORK_POOL: where customer networks get their subnets (networks.ts). */
  networkPool?: string;
}

const STATES = new Set<ContainerState>(['created', 'running', 'paused', 'restarting', 'removing', 'exited', 'dead']);

function isStatus(error: unknown, ...statuses: number[]): boolean {
  const status = httpStatusOf(error);
  return status !== undefined && statuses.includes(status);
}

function positivePort(value: string | undefined): number | undefined {
  const n = Number(value);
  return Number.isInteger(n) && n > 0 && n < 65536 ? n : undefined;
}

/**
 * CustomerRuntime on a Docker engine (dockerode). Every engine call goes through the `docker`
 * Guard (timeout, retries for transient failures, breaker, metrics). Health probes of the
 * customer's own port do not: a broken assistant says nothing about the engine's health.
 */
/** Which of our containers a listing is for (see `#list`). */
type Listing = 'customers' | 'pool';

export class DockerRuntime implements CustomerRuntime, PoolRuntime {
  readonly #docker: Docker;
  readonly #guard: Guard;
  readonly #extraLabels: Record<string, string>;
  readonly #probeConcurrency: number;
  readonly #probe: ProbeOptions;
  readonly #stopTimeoutSeconds: number;
  readonly #logRotation: LogRotation;
  readonly #networks: CustomerNetworks;

  constructor(guard: Guard, options: DockerRuntimeOptions = {}) {
    this.#guard = guard;
    this.#docker = options.docker ?? new Docker();
    this.#extraLabels = checkExtraLabels(options.extraLabels ?? {});
    this.#probeConcurrency = options.probeConcurrency ?? 8;
    this.#probe = {
      timeoutMs: options.probeTimeoutMs ?? 2000,
      ...(options.probeForwardedFor === undefined ? {} : { forwardedFor: options.probeForwardedFor }),
    };
    // OpenClaw drains its work and writes its state on SIGTERM; it needs more than Docker's 10 s under load.
    this.#stopTimeoutSeconds = options.stopTimeoutSeconds ?? 30;
    this.#logRotation = options.logRotation ?? DEFAULT_LOG_ROTATION;
    this.#networks = new CustomerNetworks({
      docker: this.#docker,
      guard,
      extraLabels: this.#extraLabels,
      ...(options.networkPool ? { pool: options.networkPool } : {}),
    });
  }

  /** The engine client, for the event source sharing this runtime's connection settings. */
  get docker(): Docker {
    return this.#docker;
  }

  /** Every container serving a customer (a pool slot not yet claimed is the pool's, not listed). */
  list(): Promise<ObservedContainer[]> {
    return this.#list(labelFilter(this.#extraLabels), 'customers', false);
  }

  /** Every warm pool slot's container, claimed or not. */
  listPool(): Promise<ObservedContainer[]> {
    return this.#list([...labelFilter(this.#extraLabels), POOL_SLOT_LABEL], 'pool', false);
  }

  /**
   * One customer's containers, each running one as the engine has it now: the list is the
   * engine's cached view, which still says running for a moment after the process died (the die
   * event goes out before the view is updated), while inspect waits for the container's lock and
   * so answers once the engine is done with the exit. A repair seen this way starts the container
   * when the engine can, not when the next look happens to come.
   */
  async listFor(customer: string): Promise<ObservedContainer[]> {
    // Its own (labelled with it) and a pool slot's it claimed (named after it; labels cannot change).
    const [own, claimed] = await Promise.all([
      this.#list(labelFilter(this.#extraLabels, { [CUSTOMER_LABEL]: customer }), 'customers', true),
      this.#list([...labelFilter(this.#extraLabels), POOL_SLOT_LABEL], 'customers', true, [`^/${containerName(customer)}$`]),
    ]);
    return [...own, ...claimed.filter((c) => c.customer === customer && !own.some((o) => o.id === c.id))];
  }

  async #list(labels: string[], listing: Listing, exact: boolean, names?: string[]): Promise<ObservedContainer[]> {
    const infos = await this.#guard('listContainers', (abortSignal) =>
      this.#docker.listContainers({ all: true, filters: { label: labels, ...(names ? { name: names } : {}) }, abortSignal }),
    );
    const observed = await mapLimit(infos, this.#probeConcurrency, (info) => this.#observe(info, listing, exact));
    return observed.filter((container): container is ObservedContainer => container !== undefined);
  }

  /** The container as listed (`exact`: a running one as inspected now); undefined once it is gone, or not the listing's. */
  async #observe(info: Docker.ContainerInfo, listing: Listing, exact: boolean): Promise<ObservedContainer | undefined> {
    const labels = info.Labels ?? {};
    const name = (info.Names?.[0] ?? '').replace(/^\//, '');
    const identity = identityOf(labels, name);
    // A slot no customer has claimed is the pool's; a customers' listing leaves it out.
    if (listing === 'customers' && identity.poolSlot !== undefined && identity.customer === undefined) return undefined;
    let state: ContainerState = STATES.has(info.State as ContainerState) ? (info.State as ContainerState) : 'dead';
    let status = info.Status ?? '';
    let startedAt: number | undefined;
    if (exact && state === 'running') {
      const current = await this.#inspectState(info.Id);
      if (!current) return undefined; // removed since the list
      state = STATES.has(current.Status as ContainerState) ? (current.Status as ContainerState) : 'dead';
      if (state === 'running') startedAt = Date.parse(current.StartedAt);
      else status = exitedMessage(current);
    }
    const containerPort = positivePort(labels[CONTAINER_PORT_LABEL]);
    // The label is what we asked for; a hand-made container with our marks may only have a port in the list.
    const hostPort =
      positivePort(labels[HOST_PORT_LABEL]) ??
      info.Ports?.find(
        (p) => p.Type === 'tcp' && p.PublicPort > 0 && (containerPort === undefined || p.PrivatePort === containerPort),
      )?.PublicPort;
    const customer = identity.customer ?? '';
    // A container on a network other than its customer's own (one made before customers had
    // networks, on Docker's shared bridge) is not what we would create: it reads as another
    // spec, so it is recreated (paced like any fleet change, its own inputs being the same). A
    // pool slot's network is its own, and stays its own after a customer claims it.
    const ownNetwork = customerNetworkName(
      identity.poolSlot === undefined ? customer : poolEngineKey(identity.poolSlot, this.#extraLabels['cloud.blytz.instance']),
    );
    const isolated = info.HostConfig?.NetworkMode === ownNetwork;
    const specHash = labels[SPEC_HASH_LABEL];
    const observed: ObservedContainer = {
      id: info.Id,
      customer,
      name,
      specHash: specHash === undefined || isolated ? specHash : `${specHash}+shared-network`,
      state,
      health: 'unknown',
    };
    if (hostPort !== undefined) observed.hostPort = hostPort;
    if (observed.name.endsWith(NEXT_CONTAINER_SUFFIX)) observed.provisional = true;
    if (identity.poolSlot !== undefined) observed.poolSlot = identity.poolSlot;
    if (info.Image) observed.image = info.Image;
    if (labels[OWN_HASH_LABEL] !== undefined) observed.ownHash = labels[OWN_HASH_LABEL];
    const generation = Number(labels[GENERATION_LABEL]);
    if (labels[GENERATION_LABEL] !== undefined && Number.isInteger(generation)) observed.generation = generation;
    const health = await this.#health(info.Id, state, status, hostPort, labels, startedAt);
    observed.health = health.health;
    if (health.message !== undefined) observed.healthMessage = health.message;
    if ((health.health === 'unhealthy' || health.health === 'starting') && state === 'running') await this.#confirmRunning(observed);
    return observed;
  }

  /**
   * The engine's container list lags behind a container's death: right after `docker kill` (and
   * even when its `die` event arrives) the list still says "running", and the probe finds nothing
   * listening. Before such a container is called unhealthy (and restarted as one), inspect, which
   * is current, says whether it is still running; a dead one is reported as it is: exited, with
   * its exit code. Only failing containers pay for the extra call (listFor has inspected a
   * running one already; this covers the full listing and a death between inspect and probe).
   */
  async #confirmRunning(observed: ObservedContainer): Promise<void> {
    const inspected = await this.#guard('inspectContainer', (abortSignal) =>
      this.#docker.getContainer(observed.id).inspect({ abortSignal }),
    ).catch(() => undefined); // gone meanwhile, or the engine hiccuped: the list's view stands
    const status = inspected?.State;
    if (!status || status.Running || !STATES.has(status.Status as ContainerState)) return;
    observed.state = status.Status as ContainerState;
    observed.health = 'unknown';
    observed.healthMessage = exitedMessage(status);
  }

  async #health(
    id: string,
    state: ContainerState,
    status: string,
    hostPort: number | undefined,
    labels: Record<string, string>,
    startedAt: number | undefined,
  ): Promise<ProbeResult> {
    // Not running: no health to speak of; the engine's Status ("Exited (137) 3 seconds ago") says why.
    if (state !== 'running') return { health: 'unknown', message: status || state };
    const parsed = parseStatus(status);
    if (parsed.dockerHealth) {
      return parsed.dockerHealth === 'unhealthy'
        ? { health: 'unhealthy', message: `Docker health check failing (${status})` }
        : { health: parsed.dockerHealth };
    }
    if (hostPort === undefined) return { health: 'unknown', message: 'no host port to probe' };
    const probes = parseProbesLabel(labels[PROBES_LABEL]);
    if (probes) {
      const startTimeoutSeconds = Number(labels[START_TIMEOUT_LABEL]);
      const uptime = async () =>
        startedAt !== undefined && !Number.isNaN(startedAt)
          ? Math.max(0, (Date.now() - startedAt) / 1000)
          : this.#uptimeSeconds(id, parsed.upSeconds);
      return judgeContainer(
        { hostPort, probes, startTimeoutSeconds: Number.isFinite(startTimeoutSeconds) ? startTimeoutSeconds : 0 },
        uptime,
        this.#probe,
      );
    }
    const legacyPath = labels[HEALTH_PATH_LABEL];
    if (legacyPath?.startsWith('/')) return probeLegacyPath(hostPort, legacyPath, this.#probe);
    return { health: 'unknown', message: 'no probes declared' };
  }

  /** The container's state as the engine has it now; undefined when it is gone. */
  async #inspectState(id: string): Promise<Docker.ContainerInspectInfo['State'] | undefined> {
    return this.#guard('inspectContainer', async (abortSignal) => {
      try {
        return (await this.#docker.getContainer(id).inspect({ abortSignal } as Docker.ContainerInspectOptions)).State;
      } catch (error) {
        if (isStatus(error, 404)) return undefined;
        throw error;
      }
    });
  }

  /**
   * Seconds since the container started: the list's Status text when it is precise (the first
   * minute), else one inspect. Undefined when the engine cannot say.
   */
  async #uptimeSeconds(id: string, fromStatus: number | undefined): Promise<number | undefined> {
    if (fromStatus !== undefined && fromStatus < 60) return fromStatus;
    const info = await this.#guard('inspectContainer', (abortSignal) => this.#docker.getContainer(id).inspect({ abortSignal })).catch(
      () => undefined,
    );
    const startedAt = Date.parse(info?.State?.StartedAt ?? '');
    return Number.isNaN(startedAt) ? fromStatus : Math.max(0, (Date.now() - startedAt) / 1000);
  }

  async create(spec: ContainerSpec): Promise<string> {
    const network = await this.#networks.ensure(spec.poolSlot === undefined ? spec.customer : { poolSlot: spec.poolSlot });
    const config = containerConfig(spec, this.#extraLabels, this.#logRotation, network);
    // Not retried: when a first attempt timed out after the engine created the container, a
    // second would only meet a 409 name conflict. The next reconcile observes and carries on.
    const container = await this.#guard(
      'createContainer',
      (abortSignal) => this.#docker.createContainer({ ...config, abortSignal }),
      { retry: false },
    );
    return container.id;
  }

  /** Containers publish distinct host ports, so a new one can start beside the old (blue-green). */
  readonly sideBySide = true;

  /** Renames a blue-green update's container (`blytz-<name>_next`) to `blytz-<name>`. */
  async adopt(id: string, customer: string): Promise<void> {
    const name = containerName(customer);
    await this.#guard('renameContainer', async (abortSignal) => {
      const container = this.#docker.getContainer(id);
      const info = await container.inspect({ abortSignal } as Docker.ContainerInspectOptions);
      if (info.Name.replace(/^\//, '') === name) return; // a retry after the engine renamed it
      await container.rename({ name, abortSignal });
    });
  }

  async start(id: string): Promise<void> {
    await this.#guard('startContainer', async (abortSignal) => {
      try {
        await this.#docker.getContainer(id).start({ abortSignal });
      } catch (error) {
        if (isStatus(error, 304)) return; // already running
        if (isStatus(error, 500) && isPortClashMessage((error as Error).message)) {
          throw new PortClashError(await this.#clashingPort(id, (error as Error).message), { cause: error });
        }
        throw error;
      }
    });
  }

  /** The port a clash is about: from the engine's message ("Bind for 127.0.0.1:31000 failed"), else from the container. */
  async #clashingPort(id: string, message: string): Promise<number> {
    const fromMessage = /(?:Bind for|listen tcp4?6?) [^\s]*:(\d+)/.exec(message)?.[1];
    if (fromMessage !== undefined) return Number(fromMessage);
    const info = await this.#docker.getContainer(id).inspect();
    return positivePort(info.Config.Labels?.[HOST_PORT_LABEL]) ?? 0;
  }

  async seesHostFile(id: string, hostPath: string): Promise<boolean> {
    const path = await this.#guard('inspectContainer', async (abortSignal) => {
      try {
        const info = await this.#docker.getContainer(id).inspect({ abortSignal } as Docker.ContainerInspectOptions);
        if (!info.State.Running) return undefined;
        const mount = info.Mounts.find((m) => m.Type === 'bind' && (hostPath === m.Source || hostPath.startsWith(`${m.Source}/`)));
        return mount ? `${mount.Destination}${hostPath.slice(mount.Source.length)}` : undefined;
      } catch (error) {
        if (isStatus(error, 404)) return undefined;
        throw error;
      }
    });
    if (path === undefined) return false;
    // Asked inside the container: the engine's own file API (archive) resolves bind mounts by
    // their host path again, so it would see the new folder where the container does not.
    try {
      return (await this.exec(id, ['test', '-e', path], 10_000)).exitCode === 0;
    } catch (error) {
      if (error instanceof ContainerNotRunningError) return false;
      throw error;
    }
  }

  async stop(id: string): Promise<void> {
    await this.#guard(
      'stopContainer',
      async (abortSignal) => {
        try {
          await this.#docker.getContainer(id).stop({ t: this.#stopTimeoutSeconds, abortSignal });
        } catch (error) {
          if (isStatus(error, 304, 404)) return; // already stopped, or gone: the goal holds
          throw error;
        }
      },
      // The engine waits out the grace period before answering.
      { timeoutMs: (this.#stopTimeoutSeconds + 20) * 1000 },
    );
  }

  async remove(id: string): Promise<void> {
    const owner = await this.#guard('inspectContainer', async (abortSignal) => {
      try {
        const info = await this.#docker.getContainer(id).inspect({ abortSignal } as Docker.ContainerInspectOptions);
        const labels = info.Config.Labels ?? {};
        const slot = Number(labels[POOL_SLOT_LABEL]);
        // A slot's network is its own, also once claimed: it goes with the slot's container.
        return labels[CUSTOMER_LABEL] ?? (Number.isSafeInteger(slot) && slot > 0 ? { poolSlot: slot } : undefined);
      } catch (error) {
        if (isStatus(error, 404)) return undefined;
        throw error;
      }
    });
    await this.#guard('removeContainer', async (abortSignal) => {
      try {
        await this.#docker.getContainer(id).remove({ force: true, v: false, abortSignal });
      } catch (error) {
        // 404: already gone. 409 "removal already in progress": it will be gone.
        if (isStatus(error, 404) || (isStatus(error, 409) && /already in progress/i.test((error as Error).message))) return;
        throw error;
      }
    });
    // The customer's network goes with its last container; networks a crash left without one go
    // too, once old enough (a network just made for a container about to be created stays).
    if (owner) await this.#networks.releaseIfUnused(owner);
    await this.#networks.pruneIdle();
  }

  /**
   * A claimed slot's container becomes the customer's: renamed `blytz-<customer>` (its labels
   * stay the slot's; the store holds the binding). Idempotent: a retry after the engine renamed it
   * finds the name done. Undefined when the slot has no container any more.
   */
  async bindPoolContainer(slot: number, customer: string): Promise<string | undefined> {
    const name = containerName(customer);
    const [info] = await this.#guard('listContainers', (abortSignal) =>
      this.#docker.listContainers({
        all: true,
        filters: { label: labelFilter(this.#extraLabels, { [POOL_SLOT_LABEL]: String(slot) }) },
        abortSignal,
      }),
    );
    if (!info) return undefined;
    if ((info.Names?.[0] ?? '').replace(/^\//, '') !== name) {
      await this.#guard('renameContainer', async (abortSignal) => {
        const container = this.#docker.getContainer(info.Id);
        const current = await container.inspect({ abortSignal } as Docker.ContainerInspectOptions);
        if (current.Name.replace(/^\//, '') === name) return;
        await container.rename({ name, abortSignal });
      });
    }
    return info.Id;
  }

  probeToken(hostPort: number, probe: TokenProbe, token: string): Promise<TokenProbeResult> {
    return runTokenProbe(hostPort, probe, token, this.#probe);
  }

  async exec(id: string, command: string[], timeoutMs = 30_000): Promise<ExecResult> {
    // Not retried: the command may have had its effect (a pairing approved) before a failure.
    // The guard's timeout is a backstop; runExec's own timeout fires first and is not a
    // dependency failure, so a slow command never opens the engine's breaker.
    return this.#guard('exec', (signal) => runExec(this.#docker, id, command, timeoutMs, signal), {
      retry: false,
      timeoutMs: timeoutMs + 10_000,
    });
  }

  /**
   * Where traffic published on a host port (Caddy's, the probes') reaches a customer's container
   * from: the host end of the customer's own network, its subnet's first address. Every customer
   * network comes from the pool, so the pool names them all in one entry (no other tenant can
   * send from inside it: networks.ts and the host's filter keep them apart).
   */
  async bridgeGateways(): Promise<string[]> {
    return [this.#networks.pool];
  }

  /** Whether the engine has the image locally (no registry is asked): a rollout checks once before it starts. */
  async imagePresent(image: string): Promise<boolean> {
    return this.#guard('inspectImage', async (abortSignal) => {
      try {
        // dockerode passes abortSignal through like elsewhere; its typings do not list it here.
        await this.#docker.getImage(image).inspect({ abortSignal } as Docker.ImageInspectOptions);
        return true;
      } catch (error) {
        if (isStatus(error, 404)) return false;
        throw error;
      }
    });
  }

  /** Containers publish their port on the host's loopback only: Caddy runs beside them. */
  upstream(_customer: string, port: number): string {
    return `127.0.0.1:${port}`;
  }

  async ping(): Promise<void> {
    // dockerode accepts { abortSignal } here too; its typings only know the no-argument form.
    const ping = this.#docker.ping.bind(this.#docker) as unknown as (opts: { abortSignal: AbortSignal }) => Promise<unknown>;
    await this.#guard('ping', (abortSignal) => ping({ abortSignal }));
  }
}

/** What a container that is no longer running says of its end. */
function exitedMessage(state: { ExitCode: number; OOMKilled: boolean }): string {
  return `Exited (${state.ExitCode})${state.OOMKilled ? ' (out of memory)' : ''}`;
}
