import express, { Router } from 'express';
import { PAIRING_CODE, type ApprovePairing, type PairingOutcome } from '../controller/customer/pairing.js';
import { isDns1123Label } from '../domain/naming.js';
import type { Logger } from '../observability/logger.js';
import { DependencyError } from '../resilience/guard.js';
import { HttpError } from './errors.js';
import { RATE_LIMITS, rateLimit, type RateLimit } from './rate-limit.js';
import type { RateLimitBackend } from '../store/rate-limit-counters.js';
import { sessionToken } from './session.js';

/**
 * `POST /api/customers/:name/pairing` (contract section 3.1): the customer approves the Telegram
 * pairing code their assistant sent them. Their session (opened with the access token from
 * signup: a cookie, or a bearer token) proves who they are; the
 * approval itself runs inside their container through the injected `approvePairing`, so this
 * module knows nothing about Docker or Kubernetes.
 */

export interface PairingApiDeps {
  /** BillingStore.verifySession: the session is a live one of this customer. */
  verifySession(name: string, sessionToken: string): Promise<boolean>;
  approvePairing: ApprovePairing;
  rateLimits: RateLimitBackend;
  logger: Logger;
  limit?: RateLimit;
}

export function createPairingApiRouter(deps: PairingApiDeps): Router {
  const router = Router();
  router.post(
    '/api/customers/:name/pairing',
    // Before the token check: the budget also caps guessing tokens, not only guessing codes.
    rateLimit({ ...(deps.limit ?? RATE_LIMITS.pairing), backend: deps.rateLimits, name: 'pairing', logger: deps.logger }),
    express.json({ limit: '1kb' }),
    async (req, res) => {
      res.set('Cache-Control', 'no-store');
      const param = req.params['name'];
      const name = typeof param === 'string' ? param : '';
      const token = sessionToken(req);
      const known = isDns1123Label(name) && token !== undefined && (await deps.verifySession(name, token));
      // Session first, then the code: without it a caller learns nothing, not even the code rules.
      if (!known) throw new HttpError(404, 'not_found', 'no such customer, or the session is not valid');
      const code = parseCode(req.body);

      let result: PairingOutcome;
      try {
        result = await deps.approvePairing(name, code);
      } catch (error) {
        return rethrowRuntimeError(error, deps.logger, name);
      }
      const { outcome } = result;
      // The customer's name only: the code is a short-lived credential and the token a lasting one.
      deps.logger.info({ customer: name, outcome }, 'telegram pairing');
      if (result.outcome === 'failed') {
        deps.logger.warn({ customer: name, reason: result.message }, 'telegram pairing: the approve command failed');
        throw new HttpError(
          502,
          'pairing_failed',
          'your assistant could not approve the code right now (this is not about the code); please try again in a minute',
        );
      }
      if (outcome === 'not_running') {
        throw new HttpError(
          409,
          'assistant_not_running',
          'your assistant is not running right now; wait until the status page says Ready, then try again',
        );
      }
      if (outcome === 'rejected') {
        throw new HttpError(
          422,
          'pairing_rejected',
          'that code was not accepted: it is wrong or has expired. Send your bot a new message on Telegram to get a fresh code',
        );
      }
      res.json({ approved: true });
    },
  );
  return router;
}

/** Codes are case-insensitive to type (OpenClaw prints capitals); surrounding spaces are forgiven. */
function parseCode(body: unknown): string {
  const raw = (body as { code?: unknown } | null | undefined)?.code;
  const code = typeof raw === 'string' ? raw.trim().toUpperCase() : '';
  if (!PAIRING_CODE.test(code)) {
    throw new HttpError(400, 'invalid', 'the pairing code is malformed', [
      { field: 'code', message: 'must be 8 characters: letters A-Z and digits 0-9' },
    ]);
  }
  return code;
}

function rethrowRuntimeError(error: unknown, logger: Logger, customer: string): never {
  // runtime/exec-output.ts defines ExecTimeoutError; matched by name so this module needs no runtime import.
  if (error instanceof Error && error.name === 'ExecTimeoutError') {
    logger.warn({ customer }, 'telegram pairing: the approve command timed out');
    throw new HttpError(504, 'pairing_timeout', 'your assistant did not answer in time; please try again in a minute');
  }
  if (error instanceof DependencyError || typeof (error as { dependency?: unknown } | undefined)?.dependency === 'string') {
    logger.warn({ customer, err: error }, 'telegram pairing: runtime unavailable');
    throw new HttpError(
      503,
      'dependency_unavailable',
      'your assistant cannot be reached right now; please try again in a minute',
      undefined,
      {
        'Retry-After': '30',
      },
    );
  }
  throw error;
}
