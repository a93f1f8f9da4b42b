import { RATE_LIMITS } from '../../src/http/rate-limit.js';

/**
 * How often a test asks a customer's status API (`/api/customers/:name/status`), as the
 * customer's page would: at half the rate it allows one client (RATE_LIMITS.status, 120 a
 * minute, counted in fixed windows). Past it every answer is 429 until the window ends: a 50 ms
 * poll for "Suspended" in the real-assistant e2e once spent 45 s that way.
 */
export const STATUS_POLL_MS = (2 * RATE_LIMITS.status.windowMs) / RATE_LIMITS.status.limit;
