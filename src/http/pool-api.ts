import type { Router } from 'express';
import { ValidationError, type FieldError } from '../domain/customer.js';
import { parsePoolManifest, POOL_KIND, type PoolManifest, type PoolObject } from '../domain/pool.js';
import { StatusError } from './admin-api.js';

/**
 * Warm pools on the admin API, for `blytz apply -f` of a Pool and `blytz get pool`. Mounted by
 * `adminApiRouter` under its prefix (admin token, JSON errors). Kubernetes-style: a Pool object
 * per plan, PUT to apply, GET to read (status: the slots by state).
 */

export const POOLS_SUBPATH = '/pools';

export interface PoolApi {
  list(): Promise<PoolObject[]>;
  /** The pool of a plan (size 0 when never set); undefined for a name that is no plan. */
  get(plan: string): Promise<PoolObject | undefined>;
  /** Sets the pool's size; throws StatusError where pools cannot run (the Kubernetes runtime). */
  apply(manifest: PoolManifest): Promise<{ pool: PoolObject; created: boolean }>;
}

export function registerPoolRoutes(router: Router, prefix: string, api: PoolApi): void {
  const path = `${prefix}${POOLS_SUBPATH}`;
  router.get(path, async (_req, res) => {
    res.json({ apiVersion: 'blytz.cloud/v1alpha1', kind: `${POOL_KIND}List`, metadata: {}, items: await api.list() });
  });
  router.get(`${path}/:plan`, async (req, res) => {
    const pool = await api.get(req.params.plan);
    if (!pool) throw notFound(req.params.plan);
    res.json(pool);
  });
  router.put(`${path}/:plan`, async (req, res) => {
    if (!req.is(['application/json', 'application/*+json'])) {
      throw new StatusError(415, 'UnsupportedMediaType', 'send the Pool as JSON (Content-Type: application/json)');
    }
    const manifest = validatePool(req.params.plan, req.body);
    const { pool, created } = await api.apply(manifest);
    res.status(created ? 201 : 200).json(pool);
  });
}

function validatePool(plan: string, body: unknown): PoolManifest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new StatusError(400, 'BadRequest', 'the request body must be one Pool object (JSON)');
  }
  const causes: FieldError[] = [];
  let manifest: PoolManifest | undefined;
  try {
    manifest = parsePoolManifest(body);
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    causes.push(...error.causes);
  }
  const bodyName = (body as { metadata?: { name?: unknown } }).metadata?.name;
  if (typeof bodyName === 'string' && bodyName !== plan) {
    causes.push({ field: 'metadata.name', message: `must equal the name in the URL (${plan}): a pool is named by its plan` });
  }
  if (causes.length > 0 || !manifest) {
    const summary = causes.map((c) => `${c.field}: ${c.message}`).join(', ');
    throw new StatusError(422, 'Invalid', `Pool "${plan}" is invalid: ${summary}`, { name: plan, kind: POOL_KIND, causes });
  }
  return manifest;
}

function notFound(plan: string): StatusError {
  return new StatusError(404, 'NotFound', `pools "${plan}" not found: a pool is named by its plan`, { name: plan, kind: POOL_KIND });
}
