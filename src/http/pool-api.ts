import type { Router } from 'express';
import { PLAN_NAMES, ValidationError, type FieldError, type PlanName } from '../domain/customer.js';
import {
  DEFAULT_POOL_TEMPLATE,
  parsePoolManifest,
  poolObject,
  POOL_KIND,
  type PoolManifest,
  type PoolObject,
  type PoolSpec,
  type PoolStatus,
} from '../domain/pool.js';
import { StatusError } from './api-status.js';

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

/** What the pool API needs of the store (store/pool-store.ts). */
export interface PoolSource {
  list(): Promise<Array<PoolSpec & { generation: number; createdAt: Date; status: PoolStatus }>>;
  apply(spec: PoolSpec): Promise<{ created: boolean }>;
}

/**
 * The PoolApi on the store: every plan listed (a plan never set shows size 0), a size applied and
 * the pool controller woken. `unavailable`: why pools cannot run here (the Kubernetes runtime); a
 * size above 0 is then refused, and every pool says why.
 */
export function storePoolApi(source: PoolSource, options: { onChange: () => void; unavailable?: string | undefined }): PoolApi {
  const list = async (): Promise<PoolObject[]> => {
    const stored = await source.list();
    return PLAN_NAMES.map((plan: PlanName) => {
      const pool = stored.find((p) => p.plan === plan) ?? {
        plan,
        size: 0,
        template: DEFAULT_POOL_TEMPLATE,
        generation: 0,
        status: { ready: 0, warming: 0, bound: 0, retiring: 0 },
      };
      return poolObject(pool, options.unavailable);
    });
  };
  return {
    list,
    get: async (plan) => (await list()).find((p) => p.metadata.name === plan),
    apply: async (manifest) => {
      const plan = manifest.metadata.name;
      if (options.unavailable && manifest.spec.size > 0) {
        throw new StatusError(422, 'Invalid', `Pool "${plan}" is invalid: spec.size: ${options.unavailable}`, {
          name: plan,
          kind: POOL_KIND,
          causes: [{ field: 'spec.size', message: options.unavailable }],
        });
      }
      const { created } = await source.apply({ plan, size: manifest.spec.size, template: manifest.spec.template });
      options.onChange();
      const pool = (await list()).find((p) => p.metadata.name === plan) as PoolObject;
      return { pool, created };
    },
  };
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
