/** The stored object changed since the caller read it (resourceVersion mismatch) or a unique key is taken. */
export class ConflictError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ConflictError';
  }
}

export class NotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotFoundError';
  }
}

/** Every host port in BLYTZ_PORT_RANGE is reserved. */
export class PortsExhaustedError extends Error {
  constructor(range: { from: number; to: number }) {
    super(`no free host port in ${range.from}-${range.to}: raise BLYTZ_PORT_RANGE or remove customers`);
    this.name = 'PortsExhaustedError';
  }
}

export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  const e = error as { code?: string; constraint?: string; message?: string } | undefined;
  if (e?.code !== '23505') return false;
  if (!constraint) return true;
  return e.constraint === constraint || (e.message ?? '').includes(constraint);
}
