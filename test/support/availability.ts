import { Agent } from 'node:http';
import { getWithHost } from './http-get.js';

/** One look at every customer: who did not answer 200, and what each of them answered instead. */
export interface AvailabilitySample {
  at: number;
  down: string[];
  answers: Record<string, string>;
}

/**
 * Each request on a new connection: every route write reloads Caddy's config, which closes idle
 * keep-alive connections, so a client reusing one can meet a reset that has nothing to do with
 * the customer's upstream (browsers retry those; Node's agent does not).
 */
const freshConnections = new Agent({ keepAlive: false });

/**
 * What a customer's host answers through Caddy when it is not 200 (undefined when it is). A reset
 * before any answer is retried once, as browsers retry an idempotent GET: Caddy 2.6 resets
 * connections to all hosts alike while it applies a route write. A customer whose container is
 * being recreated still shows: Caddy answers 502 for it.
 */
export async function notAnswering(caddyPort: number, host: string, path = '/AGENTS.md'): Promise<string | undefined> {
  const get = () => getWithHost(caddyPort, host, path, { agent: freshConnections });
  const res = await get()
    .catch((error: unknown) => ((error as NodeJS.ErrnoException).code === 'ECONNRESET' ? get() : Promise.reject(error)))
    .catch((error: unknown) => ({ status: 0, error: (error as Error).message }));
  if (res.status === 200) return undefined;
  return 'error' in res ? `${res.status} ${res.error}` : String(res.status);
}

/**
 * Looks at every name every `intervalMs`, or as soon as the previous look finished when one takes
 * longer (overlapping looks would load a 2-core machine enough to slow the very rollout they
 * measure), until `stop()`, which resolves to every sample taken.
 */
export function sampleAvailability(
  names: readonly string[],
  check: (name: string) => Promise<string | undefined>,
  intervalMs = 100,
): { stop(): Promise<AvailabilitySample[]> } {
  const samples: AvailabilitySample[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const at = Date.now();
      const results = await Promise.all(names.map(async (name) => [name, await check(name)] as const));
      const answers: Record<string, string> = {};
      for (const [name, answer] of results) if (answer !== undefined) answers[name] = answer;
      samples.push({ at, down: Object.keys(answers), answers });
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, at + intervalMs - Date.now())));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return samples;
    },
  };
}
