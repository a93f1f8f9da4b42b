import type { HttpProbe, Probes, TokenProbe } from '../../domain/probes.js';
import type { ContainerHealth, TokenProbeResult } from '../runtime.js';

/**
 * Container health without an inspect per container. Docker's own health check, when the image
 * has one, shows in the list's Status text ("Up 5 minutes (healthy)"); otherwise the controller
 * runs the template's probes against the published port from the host, like a kubelet.
 */

export interface StatusInfo {
  dockerHealth?: 'healthy' | 'unhealthy' | 'starting';
  /** Seconds since start for a running container, when the Status text says it precisely (under a minute). */
  upSeconds?: number;
}

/**
 * Reads the engine's human Status ("Up Less than a second", "Up 12 seconds (health: starting)",
 * "Up About a minute"). Only the first minute is precise; past it the runtime inspects the
 * container's start time when a failing probe needs its age.
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
  /**
   * Sent as X-Forwarded-For. The assistant trusts the address our requests come from (the bridge
   * gateway: Caddy's requests arrive from it too, through the port publish) as a proxy, and
   * OpenClaw refuses a trusted proxy's request that names no client (403 proxy_attribution_required);
   * so the probe names a client: a documentation address (RFC 5737), never a real one.
   */
  forwardedFor?: string;
}


/** A health body larger than this is not a health answer. */
const MAX_BODY_BYTES = 64 * 1024;

/**
 * Nothing listens on the container port yet. With Docker's userland proxy the host port always
 * accepts, and the proxy then drops the connection (undici: UND_ERR_SOCKET "other side closed").
 */
const NOT_LISTENING = new Set(['ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET']);

/** What one probe found: passed, or why not. */
export type ProbeOutcome = { passed: true } | { passed: false; reason: string };

/**
 * GET http://127.0.0.1:<port><path>: passes on 200 with a JSON body holding every field of
 * `expect`. A 200 with another body (the gateway's Control UI page, which it serves on every
 * unknown path) fails: a probe proves health only by what a healthy answer says.
 */
export async function runProbe(hostPort: number, probe: HttpProbe, options: ProbeOptions): Promise<ProbeOutcome> {
  const url = `http://127.0.0.1:${hostPort}${probe.path}`;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (options.forwardedFor) headers['x-forwarded-for'] = options.forwardedFor;
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(options.timeoutMs), redirect: 'manual', headers });
    text = await readBounded(response);
  } catch (error) {
    const code = socketCode(error);
    if (code !== undefined && NOT_LISTENING.has(code)) return failed(`GET ${probe.path}: nothing answers on host port ${hostPort} (${code})`);
    if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError'))
      return failed(`GET ${probe.path}: no answer within ${options.timeoutMs} ms`);
    return failed(`GET ${probe.path} failed: ${code ?? (error as Error).message}`);
  }
  if (response.status !== 200) return failed(`GET ${probe.path} answered ${response.status}${excerpt(text)}`);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return failed(`GET ${probe.path} answered 200 but not with JSON${excerpt(text)}`);
  }
  const mismatch = firstMismatch(body, probe.expect);
  return mismatch === undefined ? { passed: true } : failed(`GET ${probe.path} answered ${mismatch}`);
}

/** The first expected field the body does not hold, described; undefined when all match. */
export function firstMismatch(body: unknown, expect: HttpProbe['expect']): string | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'a JSON body that is not an object';
  for (const [field, value] of Object.entries(expect)) {
    const actual = (body as Record<string, unknown>)[field];
    if (actual !== value) return `${field}=${JSON.stringify(actual) ?? 'undefined'} (expected ${JSON.stringify(value)})`;
  }
  return undefined;
}

function failed(reason: string): ProbeOutcome {
  return { passed: false, reason };
}

async function readBounded(response: Response): Promise<string> {
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await reader.cancel();
      break;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function excerpt(text: string): string {
  const oneLine = text.replace(/\s+/g, ' ').trim();
  if (oneLine === '') return '';
  return `: ${oneLine.length > 120 ? `${oneLine.slice(0, 120)}...` : oneLine}`;
}

/** A running container to judge: where to reach it, what it declares, how long it may take to start. */
export interface ProbeTarget {
  hostPort: number;
  probes: Probes;
  startTimeoutSeconds: number;
}

/**
 * Judges a running container by its declared probes, as a kubelet would, in as few requests as
 * the common case needs:
 * - readiness passes: healthy (it takes traffic; routes, rollouts and blue-green wait for this);
 * - otherwise, the startup probe (liveness when none is declared) fails: starting while the
 *   container is younger than its start timeout, unhealthy (restarted) after;
 * - started but liveness fails: unhealthy;
 * - alive but not ready: unready (kept, not routed to, not restarted: e.g. a channel it cannot reach).
 * `uptimeSeconds` is asked only when a failure needs the container's age.
 */
export async function judgeContainer(
  target: ProbeTarget,
  uptimeSeconds: () => Promise<number | undefined>,
  options: ProbeOptions,
): Promise<ProbeResult> {
  const { probes, hostPort } = target;
  const ready = await runProbe(hostPort, probes.readiness, options);
  if (ready.passed) return { health: 'healthy' };

  const started = await runProbe(hostPort, probes.startup ?? probes.liveness, options);
  if (!started.passed) {
    const age = await uptimeSeconds();
    if (age === undefined || age < target.startTimeoutSeconds) return { health: 'starting', message: `starting: ${started.reason}` };
    return { health: 'unhealthy', message: `not started after ${Math.round(age)} s (start timeout ${target.startTimeoutSeconds} s): ${started.reason}` };
  }
  if (probes.startup) {
    const alive = await runProbe(hostPort, probes.liveness, options);
    if (!alive.passed) return { health: 'unhealthy', message: `liveness probe failing: ${alive.reason}` };
  }
  return { health: 'unready', message: `not ready: ${ready.reason}` };
}

/**
 * Whether the assistant on `hostPort` has `token` in force (see TokenProbe in domain/probes.ts):
 * a JSON answer holding the field only an authorized caller is shown. Named the same client
 * as the health probes (a trusted proxy's request must name one). A refused token counts against
 * the assistant's own failed-auth limit for that client, so callers ask sparingly.
 */
export async function runTokenProbe(hostPort: number, probe: TokenProbe, token: string, options: ProbeOptions): Promise<TokenProbeResult> {
  const headers: Record<string, string> = { accept: 'application/json', authorization: `Bearer ${token}` };
  if (options.forwardedFor) headers['x-forwarded-for'] = options.forwardedFor;
  try {
    const response = await fetch(`http://127.0.0.1:${hostPort}${probe.path}`, {
      signal: AbortSignal.timeout(options.timeoutMs),
      redirect: 'manual',
      headers,
    });
    const text = await readBounded(response);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return 'refused';
    }
    const shown = typeof body === 'object' && body !== null && Object.hasOwn(body, probe.authorizedField);
    // Shown also when not ready (a 503 with the reasons): the token is in force either way.
    return shown ? 'accepted' : 'refused';
  } catch {
    return 'unreachable';
  }
}

/** The probes label as the runtime wrote it; undefined for anything else (a hand-made container's junk). */
export function parseProbesLabel(label: string | undefined): Probes | undefined {
  if (label === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(label);
  } catch {
    return undefined;
  }
  const probe = (p: unknown): p is HttpProbe =>
    typeof p === 'object' &&
    p !== null &&
    typeof (p as HttpProbe).path === 'string' &&
    (p as HttpProbe).path.startsWith('/') &&
    typeof (p as HttpProbe).expect === 'object' &&
    (p as HttpProbe).expect !== null;
  if (typeof value !== 'object' || value === null) return undefined;
  const { startup, liveness, readiness } = value as Record<string, unknown>;
  if (!probe(liveness) || !probe(readiness) || (startup !== undefined && !probe(startup))) return undefined;
  return startup === undefined ? { liveness, readiness } : { startup, liveness, readiness };
}

/**
 * Containers made before probes were declared carry only a health path: any answer below 500
 * counts as healthy, as it did then. They are replaced by the next rollout.
 */
export async function probeLegacyPath(hostPort: number, path: string, options: ProbeOptions): Promise<ProbeResult> {
  const url = `http://127.0.0.1:${hostPort}${path}`;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(options.timeoutMs), redirect: 'manual' });
    await response.body?.cancel();
    if (response.status < 500) return { health: 'healthy' };
    return { health: 'unhealthy', message: `health probe GET ${path} answered ${response.status}` };
  } catch (error) {
    return { health: 'unhealthy', message: `health probe GET ${path} failed: ${socketCode(error) ?? (error as Error).message}` };
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
