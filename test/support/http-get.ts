import { request as httpRequest, type Agent, type IncomingHttpHeaders } from 'node:http';

export interface HostResponse {
  status: number;
  body: string;
  headers: IncomingHttpHeaders;
}

/**
 * GET http://127.0.0.1:<port><path> (or another local `address`) with a `Host` header (fetch does
 * not let a caller set it).
 * Always settles within `timeoutMs`: a response cut off mid-body (a container removed while
 * Caddy streams it) rejects instead of waiting forever; Node emits no 'error' on a response
 * nobody listens to for errors, and never emits 'end' on one that was aborted.
 */
export function getWithHost(
  port: number,
  host: string,
  path = '/',
  options: { timeoutMs?: number; agent?: Agent; address?: string; headers?: Record<string, string> } = {},
): Promise<HostResponse> {
  const timeoutMs = options.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: options.address ?? '127.0.0.1',
        port,
        path,
        headers: { ...options.headers, host },
        agent: options.agent,
        signal: AbortSignal.timeout(timeoutMs),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
        res.on('error', reject);
        res.on('close', () => {
          if (!res.complete) reject(new Error(`response from ${host}${path} was cut off`));
        });
      },
    );
    req.on('error', reject);
    req.end();
  });
}
