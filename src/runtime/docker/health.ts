import type { ContainerHealth } from '../runtime.js';

/**
 * Container health without an inspect per container. Docker's own health check, when the image
 * has one, shows in the list's Status text ("Up 5 minutes (healthy)"); otherwise the controller
 * probes the published port from the host, like a kubelet's HTTP readiness probe.
 */

export interface StatusInfo {
  dockerHealth?: 'healthy' | 'unhealthy' | 'starting';
  /** Seconds since start for a running container, when the Status text says it precisely (under a minute). */
  upSeconds?: number;
}

/**
 * Reads the engine's human Status ("Up Less than a second", "Up 12 seconds (health: starting)",
 * "Up About a minute"). Only the first minute is precise, and only that matters: it decides
 * whether a refused connection is a container still starting or a broken one.
 */
export function parseStatus(status: string): StatusInfo {
  const info: StatusInfo = {};
  if (/\(health: starting\)/.test(status)) info.dockerHealth = 'starting';
  else if (/\(unhealthy\)/.test(status)) info.dockerHealth = 'unhealthy';
  else if (/\(healthy\)/.test(status)) info.dockerHealth = 'healthy';
  const up = /^Up (Less than a second|(\d+) seconds?|About a minute|(\d+) minutes?)/.exec(status);
  if (up) {
    if (up[1] === 'Less than a second') info.upSeconds = 0;
    else if (up[2] !== undefined) info.upSeconds = Number(up[2]);
    else if (up[3] !== undefined) info.upSeconds = Number(up[3]) * 60;
    else info.upSeconds = 60;
  }
  return info;
}

export interface ProbeResult {
  health: ContainerHealth;
  message?: string;
}

export interface ProbeOptions {
  timeoutMs: number;
  /** A failed probe this soon after start means "starting", not "unhealthy". */
  startingGraceSeconds: number;
}

/**
 * Nothing listens on the container port yet. With Docker's userland proxy the host port always
 * accepts, and the proxy then drops the connection (undici: UND_ERR_SOCKET "other side closed").
 */
const NOT_LISTENING = new Set(['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET']);

/**
 * GET http://127.0.0.1:<port><path>: any answer below 500 is healthy (the process serves).
 * Within `startingGraceSeconds` of its start a failing container is still starting, whatever
 * the failure (refused, 5xx, no answer), like a Kubernetes startup probe: otherwise one that
 * answers 503 while it warms up would be restarted on every pass, never getting the chance.
 */
export async function probeHttp(
  hostPort: number,
  path: string,
  upSeconds: number | undefined,
  options: ProbeOptions,
): Promise<ProbeResult> {
  const result = await probeOnce(hostPort, path, options.timeoutMs);
  if (result.health === 'unhealthy' && upSeconds !== undefined && upSeconds < options.startingGraceSeconds) {
    return { health: 'starting', message: `starting: ${result.message ?? 'not healthy yet'}` };
  }
  return result;
}

async function probeOnce(hostPort: number, path: string, timeoutMs: number): Promise<ProbeResult> {
  const url = `http://127.0.0.1:${hostPort}${path}`;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
    await response.body?.cancel();
    if (response.status < 500) return { health: 'healthy' };
    return { health: 'unhealthy', message: `health probe GET ${path} answered ${response.status}` };
  } catch (error) {
    const code = socketCode(error);
    if (code !== undefined && NOT_LISTENING.has(code)) {
      return { health: 'unhealthy', message: `health probe GET ${path}: nothing answers on host port ${hostPort} (${code})` };
    }
    if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError')) {
      return { health: 'unhealthy', message: `health probe GET ${path}: no answer within ${timeoutMs} ms` };
    }
    return { health: 'unhealthy', message: `health probe GET ${path} failed: ${code ?? (error as Error).message}` };
  }
}

function socketCode(error: unknown): string | undefined {
  let e: unknown = error;
  for (let i = 0; i < 4 && e && typeof e === 'object'; i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Runs `fn` over `items` with at most `limit` in flight; results keep the input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  return results;
}
