/** How a customer's container shows it is healthy: declared by its template, run by the runtime. */

/**
 * One HTTP probe: GET `path` on the container port must answer 200 with a JSON body holding every
 * field of `expect` (a subset match). A catch-all page answering 200 on every path is not healthy.
 */
export interface HttpProbe {
  path: string;
  expect: Record<string, string | number | boolean>;
}

/**
 * The Kubernetes trio: `startup` passes once the process has started (until then, and within
 * the template's start timeout, failures mean "starting"); `liveness` failing after that means
 * the process is broken and is restarted; `readiness` says it may take traffic (routes, rollouts
 * and blue-green switches wait for it). Without a startup probe, liveness stands in for it.
 */
export interface Probes {
  startup?: HttpProbe;
  liveness: HttpProbe;
  readiness: HttpProbe;
}

/**
 * The client a probe names in X-Forwarded-For. The assistant refuses a request from an address it
 * trusts as its proxy that names no client (OpenClaw: 403 proxy_attribution_required), and a
 * probe may come from such an address (on Docker the bridge gateway, which Caddy's requests come
 * from too), so every probe names one: a documentation address (RFC 5737), never a real client.
 */
export const PROBE_CLIENT_ADDRESS = '192.0.2.1';

/**
 * How to see which gateway token an assistant has in force (a template's `configProbe`): GET
 * `path` with `Authorization: Bearer <token>`; the token is in force when the JSON answer holds
 * `authorizedField`, which the assistant shows only to a caller its auth accepts (OpenClaw's
 * `/readyz` adds its details, `uptimeMs` among them, for an authorized caller only). The
 * controller uses it to see a pooled gateway take a customer's configuration: the new token is
 * written in the same file, and applied in the same reload, as the rest of it.
 */
export interface TokenProbe {
  path: string;
  authorizedField: string;
}
