import { describe, expect, it } from 'vitest';
import { resolveConnection, sendsInTheClear } from '../../src/cli/client.js';

describe('the admin token never goes over plain HTTP to another machine', () => {
  it.each([
    ['http://127.0.0.1:8080', false],
    ['http://127.9.8.7', false],
    ['http://localhost:8080', false],
    ['http://api.localhost', false],
    ['http://[::1]:8080', false],
    ['https://blytz.example.com', false],
    ['https://203.0.113.5:8443', false],
    ['http://blytz.example.com', true],
    ['http://10.0.0.5:8080', true],
    ['http://[2001:db8::1]:8080', true],
    ['http://127.0.0.1.example.com', true],
    ['http://localhost.example.com', true],
  ])('%s in the clear: %s', (server, clear) => {
    expect(sendsInTheClear(server)).toBe(clear);
  });

  it('refuses with a usage error (exit 2) unless --allow-plain-http, and only when there is a token to send', () => {
    const env = { BLYTZ_DATA_DIR: '/nonexistent' };
    expect(() => resolveConnection({ server: 'http://10.0.0.5:8080', token: 'secret-admin-token' }, env)).toThrow(
      expect.objectContaining({
        exitCode: 2,
        message: expect.stringMatching(/refusing to send the admin token over plain HTTP to 10\.0\.0\.5:8080/),
      }),
    );
    expect(resolveConnection({ server: 'http://10.0.0.5:8080', token: 'secret-admin-token', allowPlainHttp: true }, env)).toEqual(
      {
        server: 'http://10.0.0.5:8080',
        token: 'secret-admin-token',
      },
    );
    expect(resolveConnection({ server: 'http://10.0.0.5:8080' }, env)).toEqual({
      server: 'http://10.0.0.5:8080',
      token: undefined,
    });
    expect(resolveConnection({ server: 'https://10.0.0.5:8443', token: 't' }, env).token).toBe('t');
  });
});
