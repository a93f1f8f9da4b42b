import type { Router } from 'express';
import { customerNameSchema } from '../domain/customer.js';
import type { BackupRecord, RestoreRecord } from '../store/backup-records.js';
import { StatusError } from './api-status.js';

/**
 * Backups and restores on the admin API, for `blytz backup create|list|restore`. Mounted by
 * `adminApiRouter` under its prefix (admin token, JSON errors). Every write only asks: it
 * records a pending backup or restore, which the backup controller carries out.
 */

export interface BackupApi {
  list(customer: string | undefined): Promise<BackupRecord[]>;
  get(id: number): Promise<BackupRecord | undefined>;
  /** Asks for a backup of the customer now; undefined when there is no such customer. */
  create(customer: string): Promise<BackupRecord | undefined>;
  restores(customer: string | undefined): Promise<RestoreRecord[]>;
  getRestore(id: number): Promise<RestoreRecord | undefined>;
  /** Asks for backup `id` to be restored into `customer`; throws StatusError when it cannot be. */
  restore(id: number, customer: string): Promise<RestoreRecord>;
}

const GROUP_VERSION = 'blytz.cloud/v1alpha1';

export function backupView(b: BackupRecord): Record<string, unknown> {
  return {
    id: b.id,
    customer: b.customer,
    reason: b.reason,
    state: b.state,
    attempts: b.attempts,
    requestedAt: b.requestedAt.toISOString(),
    finishedAt: b.finishedAt?.toISOString() ?? null,
    sizeBytes: b.sizeBytes,
    sha256: b.sha256,
    openclawVersion: b.openclawVersion,
    runtime: b.runtime,
    storage: b.storage,
    location: b.location,
    files: b.files,
    durationMs: b.durationMs,
    message: b.message,
  };
}

export function restoreView(r: RestoreRecord): Record<string, unknown> {
  return {
    id: r.id,
    backupId: r.backupId,
    customer: r.customer,
    reason: r.reason,
    step: r.step,
    requestedAt: r.requestedAt.toISOString(),
    finishedAt: r.finishedAt?.toISOString() ?? null,
    message: r.message,
  };
}

function idOf(value: string | undefined): number {
  const id = Number(value);
  if (!Number.isSafeInteger(id) || id <= 0) throw new StatusError(400, 'BadRequest', `"${value ?? ''}" is not a backup id`);
  return id;
}

function customerOf(value: unknown, what: string): string {
  const parsed = customerNameSchema.safeParse(value);
  if (!parsed.success) throw new StatusError(400, 'BadRequest', `${what}: ${parsed.error.issues[0]?.message ?? 'invalid name'}`);
  return parsed.data;
}

export function registerBackupRoutes(router: Router, prefix: string, api: BackupApi): void {
  router.get(`${prefix}/backups`, async (req, res) => {
    const customer = typeof req.query['customer'] === 'string' ? customerOf(req.query['customer'], 'customer') : undefined;
    const [backups, restores] = await Promise.all([api.list(customer), api.restores(customer)]);
    res.json({
      apiVersion: GROUP_VERSION,
      kind: 'BackupList',
      metadata: {},
      items: backups.map(backupView),
      restores: restores.map(restoreView),
    });
  });
  router.get(`${prefix}/backups/:id`, async (req, res) => {
    const backup = await api.get(idOf(req.params['id']));
    if (!backup) throw new StatusError(404, 'NotFound', `backup ${req.params['id']} not found`);
    res.json(backupView(backup));
  });
  router.post(`${prefix}/customers/:name/backups`, async (req, res) => {
    const name = customerOf(req.params['name'], 'customer');
    const backup = await api.create(name);
    if (!backup) throw new StatusError(404, 'NotFound', `customer ${name} not found`);
    res.status(202).json(backupView(backup));
  });
  router.post(`${prefix}/backups/:id/restore`, async (req, res) => {
    const id = idOf(req.params['id']);
    const body = (req.body ?? {}) as { customer?: unknown };
    const backup = await api.get(id);
    if (!backup) throw new StatusError(404, 'NotFound', `backup ${id} not found`);
    const target = body.customer === undefined ? backup.customer : customerOf(body.customer, 'customer');
    res.status(202).json(restoreView(await api.restore(id, target)));
  });
  router.get(`${prefix}/restores/:id`, async (req, res) => {
    const restore = await api.getRestore(idOf(req.params['id']));
    if (!restore) throw new StatusError(404, 'NotFound', `restore ${req.params['id']} not found`);
    res.json(restoreView(restore));
  });
}
