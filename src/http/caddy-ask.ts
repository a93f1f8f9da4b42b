import { Router } from 'express';
import { errorBody } from './errors.js';

/**
 * `GET /api/caddy/ask?domain=HOST`: Caddy's on-demand TLS permission check. Before Caddy
 * requests a certificate during a TLS handshake for an unknown name, it asks this URL and
 * proceeds only on 200. Without the check anyone could point DNS names at the server and make
 * it request certificates for them, burning the CA's rate limits (Let's Encrypt: 50
 * certificates per registered domain per week).
 *
 * 200 only when `isReachableHost` says the host belongs to a customer that should be
 * reachable; 404 for everything else, malformed hosts included (Caddy treats any non-2xx as
 * "no"). The answer reveals no more than requesting the host itself would; still, expose it
 * only where Caddy can reach it (contract 3.1).
 */

export interface CaddyAskDeps {
  /** Whether `host` (lowercase, no port, no trailing dot) is a customer host that should be served. */
  isReachableHost(host: string): Promise<boolean>;
}

const MAX_HOST_LENGTH = 253;
const LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** The host in canonical form, or undefined when it is not a plain DNS name. */
export function normaliseAskHost(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined; // missing, or repeated (?domain=a&domain=b)
  const host = value.toLowerCase().replace(/\.$/, '');
  if (host.length === 0 || host.length > MAX_HOST_LENGTH) return undefined;
  const labels = host.split('.');
  if (labels.length < 2 || !labels.every((label) => LABEL.test(label))) return undefined;
  return host;
}

export function createCaddyAskRouter(deps: CaddyAskDeps): Router {
  const router = Router();
  router.get('/api/caddy/ask', async (req, res) => {
    const host = normaliseAskHost(req.query['domain']);
    if (host !== undefined && (await deps.isReachableHost(host))) {
      res.status(200).json({ domain: host, allowed: true });
      return;
    }
    res.status(404).json(errorBody('not_found', 'no customer is served at this host'));
  });
  return router;
}
