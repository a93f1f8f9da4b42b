import type { Request, Response } from 'express';

/**
 * The customer's session: opened once with the single-use access token from signup (the link in
 * the status URL and in Stripe's success URL), then carried as an HttpOnly cookie (a browser) or
 * a bearer token (a program). SameSite=Strict keeps other sites' pages from using it (no
 * cross-site request carries it), HttpOnly keeps the page's own scripts from reading it, and
 * Secure (on an https site) keeps it off plain HTTP.
 */

export const SESSION_COOKIE = 'blytz_session';
const SESSION_MAX_AGE_SECONDS = 30 * 86_400;
const TOKEN = /^[A-Za-z0-9_-]{16,200}$/;

/** The session token of a request: `Authorization: Bearer`, else the cookie. */
export function sessionToken(req: Request): string | undefined {
  const bearer = req.get('authorization')?.match(/^Bearer\s+(\S{1,200})$/i)?.[1];
  if (bearer) return bearer;
  const cookie = cookieValue(req.get('cookie'), SESSION_COOKIE);
  return cookie !== undefined && TOKEN.test(cookie) ? cookie : undefined;
}

export function setSessionCookie(res: Response, token: string, secure: boolean): void {
  res.append('Set-Cookie', cookie(token, SESSION_MAX_AGE_SECONDS, secure));
}

export function clearSessionCookie(res: Response, secure: boolean): void {
  res.append('Set-Cookie', cookie('', 0, secure));
}

function cookie(value: string, maxAge: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${value}; Path=/; Max-Age=${maxAge}; HttpOnly; SameSite=Strict${secure ? '; Secure' : ''}`;
}

/** One cookie's value from a Cookie header (RFC 6265: `a=1; b=2`), or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
