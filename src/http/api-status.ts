import type { FieldError } from '../domain/customer.js';

/**
 * The admin API's failures, as the Kubernetes API server answers them (metav1.Status), so
 * `kubectl`-style clients and our CLI read one shape. Shared by the admin API's routers
 * (customers, backups, pools).
 */

export type StatusReason =
  | 'Invalid'
  | 'NotFound'
  | 'Conflict'
  | 'AlreadyExists'
  | 'Unauthorized'
  | 'BadRequest'
  | 'UnsupportedMediaType'
  | 'RequestEntityTooLarge'
  | 'TooManyRequests'
  | 'ServiceUnavailable'
  | 'InternalError';

/** metav1.Status, as returned for every failure. */
export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  reason: StatusReason;
  message: string;
  details?: { name?: string; kind?: string; causes?: FieldError[] };
  code: number;
}

/** Thrown inside handlers; rendered as a Status by the router's error handler. */
export class StatusError extends Error {
  constructor(
    readonly code: number,
    readonly reason: StatusReason,
    message: string,
    readonly details?: Status['details'],
  ) {
    super(message);
    this.name = 'StatusError';
  }

  toStatus(): Status {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      reason: this.reason,
      message: this.message,
      ...(this.details ? { details: this.details } : {}),
      code: this.code,
    };
  }
}
