import type { ErrorRequestHandler } from 'express';
import type { FieldError } from '../domain/customer.js';
import type { Logger } from '../observability/logger.js';

/** An error with an HTTP status; the body is always `{error: {code, message, fields?}}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields?: FieldError[],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function errorBody(code: string, message: string, fields?: FieldError[]) {
  return { error: fields ? { code, message, fields } : { code, message } };
}

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    if (error instanceof HttpError) {
      res.set(error.headers).status(error.status).json(errorBody(error.code, error.message, error.fields));
      return;
    }
    // body-parser errors carry a status (413 too large, 400 bad JSON).
    const e = error as { status?: number; type?: string; message?: string };
    if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
      const code = e.type === 'entity.too.large' ? 'payload_too_large' : 'bad_request';
      const message = e.type === 'entity.parse.failed' ? 'request body is not valid JSON' : (e.message ?? 'bad request');
      res.status(e.status).json(errorBody(code, message));
      return;
    }
    logger.error({ err: error, path: req.path, requestId: res.locals['requestId'] }, 'request failed');
    res.status(500).json(errorBody('internal', 'internal error; see the server log for this request id'));
  };
}
