import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Router } from 'express';
import { isDns1123Label } from '../domain/naming.js';
import type { Logger } from '../observability/logger.js';
import { HttpError } from './errors.js';
import { rateLimit, type RateLimit } from './rate-limit.js';
import type { RateLimitBackend } from '../store/rate-limit-counters.js';
import { sessionToken } from './session.js';

/**
 * `GET /api/customers/:name/export`: the customer downloads their assistant's memory (the state
 * folder: workspace, memory files, sessions, databases) as a `.tar.zst` archive they open
 * themselves (`tar --zstd -xf`). No platform secret is in it: openclaw.json comes without the
 * gateway token, the bot token and model keys (the same redaction as backups). The customer's
 * session (the cookie their status link opened, or a Bearer session token) proves who asks; it
 * works while the customer exists, also after cancelling, until the retention purge deletes the
 * folder.
 */

export interface ExportApiDeps {
  /** BillingStore.verifySession: the session is a live one of this customer. */
  verifySession(name: string, sessionToken: string): Promise<boolean>;
  /** Writes the export to a file; undefined when the customer has no state left (purged). */
  exportState(name: string): Promise<{ file: string; sizeBytes: number; cleanup(): Promise<void> } | undefined>;
  rateLimits: RateLimitBackend;
  logger: Logger;
  limit?: RateLimit;
}

/** An export reads the whole folder: a few per hour per client is plenty. */
export const EXPORT_RATE_LIMIT: RateLimit = { limit: 5, windowMs: 3_600_000 };

export function createExportApiRouter(deps: ExportApiDeps): Router {
  const router = Router();
  router.get(
    '/api/customers/:name/export',
    rateLimit({ ...(deps.limit ?? EXPORT_RATE_LIMIT), backend: deps.rateLimits, name: 'export', logger: deps.logger }),
    async (req, res) => {
      res.set('Cache-Control', 'no-store');
      const param = req.params['name'];
      const name = typeof param === 'string' ? param : '';
      const token = sessionToken(req);
      const known = isDns1123Label(name) && token !== undefined && (await deps.verifySession(name, token));
      if (!known) throw new HttpError(404, 'not_found', 'no such customer, or the session is not theirs');
      const exported = await deps.exportState(name);
      if (!exported) throw new HttpError(410, 'gone', "your assistant's memory has been deleted (the retention period ended)");
      try {
        const day = new Date().toISOString().slice(0, 10);
        res.set({
          'Content-Type': 'application/zstd',
          'Content-Length': String(exported.sizeBytes),
          'Content-Disposition': `attachment; filename="${name}-memory-${day}.tar.zst"`,
        });
        await pipeline(createReadStream(exported.file), res);
        deps.logger.info({ customer: name, bytes: exported.sizeBytes }, 'customer export downloaded');
      } finally {
        await exported.cleanup();
      }
    },
  );
  return router;
}
