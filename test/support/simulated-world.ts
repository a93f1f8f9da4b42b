import { stableHash } from '../../src/domain/canonical-json.js';
import { customerFromRouteId, routeId } from '../../src/domain/naming.js';
import type { DesiredRoute, ObservedRoute, RouteTable } from '../../src/proxy/route-table.js';
import {
  PortClashError,
  type ContainerSpec,
  type CustomerRuntime,
  type ExecResult,
  type ObservedContainer,
} from '../../src/runtime/runtime.js';
import type { Mount } from '../../src/workspace/workspace.js';
import type {
  ObservedWorkspace,
  RenderedWorkspace,
  TemplateManifest,
  WorkspaceInput,
  Workspaces,
} from '../../src/workspace/workspace.js';

/**
 * In-memory stand-ins for the adapters, for engine tests and the engine benchmark. They keep
 * what a real world keeps and count every call, so tests assert on the state the controller
 * leaves and on how many list calls a pass costs.
 */
export class SimulatedRuntime implements CustomerRuntime {
  readonly containers = new Map<string, ObservedContainer & { spec: ContainerSpec }>();
  /** Container ids by customer, so a per-customer call costs the same at 10 customers or 10,000 (the engine's label filter is its business). */
  readonly #byCustomer = new Map<string, Set<string>>();
  readonly calls: Record<string, number> = {};
  #nextId = 1;
  /** Set to make every call fail (the engine is down). */
  failing: Error | undefined;
  /** Health of a container just started from this spec (default healthy): `starting` needs a tick. */
  startHealth: (spec: ContainerSpec) => ObservedContainer['health'] = () => 'healthy';

  #count(name: string) {
    this.calls[name] = (this.calls[name] ?? 0) + 1;
    if (this.failing) throw this.failing;
  }

  async list(): Promise<ObservedContainer[]> {
    this.#count('list');
    return [...this.containers.values()].map(strip);
  }

  async listFor(customer: string): Promise<ObservedContainer[]> {
    this.#count('listFor');
    return [...(this.#byCustomer.get(customer) ?? [])].flatMap((id) => {
      const c = this.containers.get(id);
      return c ? [strip(c)] : [];
    });
  }

  async create(spec: ContainerSpec): Promise<string> {
    this.#count('create');
    const mine = [...(this.#byCustomer.get(spec.customer) ?? [])].map((other) => this.containers.get(other));
    if (mine.some((c) => c?.name === `blytz-${spec.customer}`)) {
      throw Object.assign(new Error(`container name blytz-${spec.customer} in use`), { statusCode: 409 });
    }
    const id = `sim${this.#nextId++}`;
    const ids = this.#byCustomer.get(spec.customer) ?? new Set<string>();
    ids.add(id);
    this.#byCustomer.set(spec.customer, ids);
    this.containers.set(id, {
      id,
      customer: spec.customer,
      name: `blytz-${spec.customer}`,
      specHash: spec.specHash,
      state: 'created',
      health: 'unknown',
      hostPort: spec.hostPort,
      image: spec.image,
      ...(spec.ownHash === undefined ? {} : { ownHash: spec.ownHash }),
      ...(spec.generation === undefined ? {} : { generation: spec.generation }),
      spec,
    });
    return id;
  }

  /** Containers the engine refuses to start while it answers everything else (broken engine state). */
  readonly refuseStart = new Set<string>();
  /** Host ports something else on the host holds: starting a container published there clashes. */
  readonly takenPorts = new Set<number>();

  async start(id: string): Promise<void> {
    this.#count('start');
    const c = this.containers.get(id);
    if (!c) throw Object.assign(new Error('no such container'), { statusCode: 404 });
    if (this.refuseStart.has(id)) throw new Error('failed to start shim: file exists');
    if (c.hostPort !== undefined && this.takenPorts.has(c.hostPort)) throw new PortClashError(c.hostPort);
    c.state = 'running';
    c.health = this.startHealth(c.spec);
  }

  async stop(id: string): Promise<void> {
    this.#count('stop');
    const c = this.containers.get(id);
    if (c) {
      c.state = 'exited';
      c.health = 'unknown';
    }
  }

  async remove(id: string): Promise<void> {
    this.#count('remove');
    const c = this.containers.get(id);
    if (c) this.#byCustomer.get(c.customer)?.delete(id);
    this.containers.delete(id);
  }

  async exec(): Promise<ExecResult> {
    this.#count('exec');
    return { exitCode: 0, stdout: '', stderr: '' };
  }

  async ping(): Promise<void> {
    this.#count('ping');
  }

  /** Like the Docker runtime's by default; tests set it to stand in for another runtime. */
  upstreamOf: (customer: string, port: number) => string = (_customer, port) => `127.0.0.1:${port}`;

  upstream(customer: string, port: number): string {
    return this.upstreamOf(customer, port);
  }
}

function strip(c: ObservedContainer & { spec?: ContainerSpec }): ObservedContainer {
  const { spec: _spec, ...rest } = c;
  return { ...rest };
}

export class SimulatedRouteTable implements RouteTable {
  readonly routes = new Map<string, ObservedRoute>();
  readonly calls: Record<string, number> = {};

  #count(name: string) {
    this.calls[name] = (this.calls[name] ?? 0) + 1;
  }

  async ensureServer(): Promise<void> {
    this.#count('ensureServer');
  }

  async list(): Promise<ObservedRoute[]> {
    this.#count('list');
    return [...this.routes.values()].map((r) => structuredClone(r));
  }

  async get(customer: string): Promise<ObservedRoute | undefined> {
    this.#count('get');
    const route = this.routes.get(customer);
    return route && structuredClone(route);
  }

  async ensure(route: DesiredRoute): Promise<'created' | 'replaced' | 'unchanged'> {
    this.#count('ensure');
    const existing = this.routes.get(route.customer);
    const next: ObservedRoute = {
      customer: route.customer,
      id: routeId(route.customer),
      hosts: [route.host],
      target: route.target,
    };
    if (existing && stableHash(existing) === stableHash(next)) return 'unchanged';
    this.routes.set(route.customer, next);
    return existing ? 'replaced' : 'created';
  }

  async ensureMany(routes: DesiredRoute[]): Promise<{ written: number }> {
    this.#count('ensureMany');
    for (const r of routes)
      this.routes.set(r.customer, { customer: r.customer, id: routeId(r.customer), hosts: [r.host], target: r.target });
    return { written: routes.length };
  }

  async remove(customer: string): Promise<boolean> {
    this.#count('remove');
    return this.routes.delete(customer);
  }

  async ping(): Promise<void> {}

  customers(): string[] {
    return [...this.routes.values()].map((r) => customerFromRouteId(r.id) ?? '?');
  }
}

export const SIMULATED_TEMPLATE: TemplateManifest = {
  name: 'personal-assistant',
  probes: {
    liveness: { path: '/healthz', expect: { ok: true } },
    readiness: { path: '/readyz', expect: { ready: true } },
  },
  tmpfs: ['/tmp'],
  user: '1000:1000',
  mountPath: '/home/node/.openclaw',
  startTimeoutSeconds: 120,
  updateStrategy: 'recreate',
  env: {},
};

export class SimulatedWorkspaces implements Workspaces {
  readonly folders = new Map<string, string>();
  readonly calls: Record<string, number> = {};

  #count(name: string) {
    this.calls[name] = (this.calls[name] ?? 0) + 1;
  }

  async loadTemplate(name: string): Promise<TemplateManifest> {
    if (name !== 'personal-assistant') throw new Error(`no template ${name}`);
    return SIMULATED_TEMPLATE;
  }

  async render(input: WorkspaceInput): Promise<RenderedWorkspace> {
    const config = { token: input.secrets.telegramBotToken ?? null, gateway: input.secrets.gatewayToken };
    const files = [
      { path: 'workspace/AGENTS.md', content: `# ${input.displayName}\n${input.instructions}\n`, secret: false },
      { path: 'openclaw.json', content: JSON.stringify(config), secret: true, merge: 'openclaw-config' as const },
    ];
    return { template: SIMULATED_TEMPLATE, files, contentHash: stableHash(files) };
  }

  async observe(customer: string): Promise<ObservedWorkspace> {
    this.#count('observe');
    const hash = this.folders.get(customer);
    return hash === undefined ? { exists: false } : { exists: true, contentHash: hash };
  }

  async write(customer: string, rendered: RenderedWorkspace): Promise<void> {
    this.#count('write');
    this.folders.set(customer, rendered.contentHash);
  }

  async remove(customer: string): Promise<void> {
    this.#count('remove');
    this.folders.delete(customer);
  }

  async list(): Promise<string[]> {
    return [...this.folders.keys()];
  }

  mounts(customer: string, template: TemplateManifest): Mount[] {
    return [{ hostPath: `/data/customers/${customer}`, containerPath: template.mountPath, readOnly: false }];
  }
}
