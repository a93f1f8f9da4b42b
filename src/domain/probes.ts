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
