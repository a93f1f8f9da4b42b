import { Router } from 'express';
import type { Config } from '../config.js';
import { isDns1123Label } from '../domain/naming.js';
import { includedModelAccess } from '../models/included-access.js';
import { customerUsageView, type ModelUsageAnswer } from '../models/usage-view.js';
import { sessionToken } from './session.js';
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
  usage(name: string): Promise<ModelUsageAnswer | undefined>;
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

/** What `blytz doctor` says about included model access (presence only, never a key). */
export type ModelGatewayConfig = Pick<
  Config,
  | 'BLYTZ_MODEL_GATEWAY_LISTEN'
  | 'BLYTZ_MODEL_DEFAULT'
  | 'BLYTZ_MODEL_SOURCE_CHECK'
  | 'BLYTZ_OPENAI_API_KEY'
  | 'BLYTZ_ANTHROPIC_API_KEY'
>;

export function modelGatewayCheck(config: ModelGatewayConfig): { name: string; status: 'ok' | 'warn'; message: string } {
  const included = includedModelAccess(config);
  if (!included.offered) {
    return {
      name: 'models',
      status: 'warn',
      message: `included model access not offered: ${included.reason}; signup asks for a key of the customer's own`,
    };
  }
  const keys = [
    config.BLYTZ_ANTHROPIC_API_KEY ? 'Anthropic' : undefined,
    config.BLYTZ_OPENAI_API_KEY ? 'OpenAI' : undefined,
  ].filter(Boolean);
  const sourceCheck =
    config.BLYTZ_MODEL_SOURCE_CHECK === 'off' ? '; source check OFF: keys work from anywhere that reaches it' : '';
  return {
    name: 'models',
    status: config.BLYTZ_MODEL_SOURCE_CHECK === 'off' ? 'warn' : 'ok',
    message: `model gateway on ${config.BLYTZ_MODEL_GATEWAY_LISTEN}, default ${config.BLYTZ_MODEL_DEFAULT}, platform keys: ${keys.join(', ')}${sourceCheck}`,
  };
}

export interface ModelUsageRouterDeps {
  /** BillingStore.verifySession: the session (cookie or Bearer) is a live one of this customer. */
  verifySession(name: string, sessionToken: string): Promise<boolean>;
  usage: ModelAccessApi['usage'];
}

export function createModelUsageRouter(deps: ModelUsageRouterDeps): Router {
  const router = Router();
  router.get(`/api/customers/:name${MODEL_USAGE_SUBPATH}`, async (req, res) => {
    res.set('Cache-Control', 'no-store');
    const name = req.params['name'] ?? '';
    const token = sessionToken(req);
    const ok = isDns1123Label(name) && token !== undefined && (await deps.verifySession(name, token));
    const view = ok ? await deps.usage(name) : undefined;
    if (!view) throw new HttpError(404, 'not_found', 'no such customer, or the session is not theirs');
    res.json(customerUsageView(view));
  });
  return router;
}
