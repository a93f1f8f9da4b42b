import { Router } from 'express';
import { isDns1123Label } from '../domain/naming.js';
import { customerUsageView, type ModelUsageView } from '../models/usage-view.js';
import { HttpError } from './errors.js';

/**
 * Included model access over HTTP:
 * - admin (mounted by `adminApiRouter` under its prefix, so the admin token, Status errors and
 *   the 404 fallback apply): `GET .../customers/:name/model-usage` for `blytz describe`, and
 *   `POST .../customers/:name/model-key/rotate` for `blytz rotate-model-key`;
 * - public, for the status page: `GET /api/customers/:name/model-usage` with the customer's
 *   access token (a missing customer and a wrong token look the same: 404).
 */

export const MODEL_USAGE_SUBPATH = '/model-usage';
export const MODEL_KEY_ROTATE_SUBPATH = '/model-key/rotate';

export interface ModelAccessApi {
  /** Undefined: no such live customer. */
  usage(name: string): Promise<(ModelUsageView & { credentialIssuedAt?: string }) | undefined>;
  /** A new credential now (the old one refused at once) and a reconcile to render it. Undefined: no such live customer. */
  rotate(name: string): Promise<{ rotatedAt: Date; rendered: boolean } | undefined>;
}

/** Thrown as the admin router's own error type, so it answers with a Status. */
export type NotFound = (name: string) => Error;

export function registerModelAccessRoutes(router: Router, customersPath: string, api: ModelAccessApi, notFound: NotFound): void {
  router.get(`${customersPath}/:name${MODEL_USAGE_SUBPATH}`, async (req, res) => {
    const name = req.params['name'] ?? '';
    const view = await api.usage(name);
    if (!view) throw notFound(name);
    res.json({ apiVersion: 'blytz.cloud/v1alpha1', kind: 'ModelUsage', ...view });
  });
  router.post(`${customersPath}/:name${MODEL_KEY_ROTATE_SUBPATH}`, async (req, res) => {
    const name = req.params['name'] ?? '';
    const rotated = await api.rotate(name);
    if (!rotated) throw notFound(name);
    res.json({ name, rotatedAt: rotated.rotatedAt.toISOString(), rendered: rotated.rendered });
  });
}

export interface ModelUsageRouterDeps {
  verifyAccessToken(name: string, token: string): Promise<boolean>;
  usage: ModelAccessApi['usage'];
}

export function createModelUsageRouter(deps: ModelUsageRouterDeps): Router {
  const router = Router();
  router.get(`/api/customers/:name${MODEL_USAGE_SUBPATH}`, async (req, res) => {
    res.set('Cache-Control', 'no-store');
    const name = req.params['name'] ?? '';
    const token = accessToken(req.get('authorization'), req.query['token']);
    const ok = isDns1123Label(name) && token !== undefined && (await deps.verifyAccessToken(name, token));
    const view = ok ? await deps.usage(name) : undefined;
    if (!view) throw new HttpError(404, 'not_found', 'no such customer, or the access token is wrong');
    res.json(customerUsageView(view));
  });
  return router;
}

function accessToken(header: string | undefined, query: unknown): string | undefined {
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (bearer) return bearer[1];
  return typeof query === 'string' && query.length > 0 && query.length <= 200 ? query : undefined;
}
