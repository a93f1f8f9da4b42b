import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local stand-in for Telegram's Bot API (TELEGRAM_API_BASE), speaking its wire format:
 * `GET /bot<token>/getMe` -> `{ok: true, result: {id, is_bot, first_name, username}}`, and
 * `{ok: false, error_code: 401, description: "Unauthorized"}` for a token it does not know.
 */
export interface FakeTelegram {
  url: string;
  /** getMe calls answered, by token. */
  calls: string[];
  /** Every request that reached the server, whatever the mode. */
  hits: number;
  /** `ok`; `error`: 502 like Telegram's front end when the API is down; `down`: connections are cut. */
  mode: 'ok' | 'error' | 'down';
  /** Tokens Telegram does not know (401). Every other well-formed token is a bot. */
  invalidTokens: Set<string>;
  /** Tokens that belong to users, not bots. */
  userTokens: Set<string>;
  close(): Promise<void>;
}

export function botUsername(token: string): string {
  return `blytz_${token.split(':')[0]}_bot`;
}

export async function startFakeTelegram(): Promise<FakeTelegram> {
  const fake: Omit<FakeTelegram, 'url' | 'close'> = {
    calls: [],
    hits: 0,
    mode: 'ok',
    invalidTokens: new Set(),
    userTokens: new Set(),
  };
  const server: Server = createServer((req, res) => {
    const match = /^\/bot([^/]+)\/getMe$/.exec(new URL(req.url ?? '/', 'http://x').pathname);
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    fake.hits += 1;
    if (fake.mode === 'down') {
      req.socket.destroy();
      return;
    }
    if (fake.mode === 'error') {
      res.writeHead(502, { 'content-type': 'text/html' }).end('<html><body>502 Bad Gateway</body></html>');
      return;
    }
    if (!match) {
      send(404, { ok: false, error_code: 404, description: 'Not Found' });
      return;
    }
    const token = decodeURIComponent(match[1] as string);
    fake.calls.push(token);
    if (fake.invalidTokens.has(token) || !/^\d+:[\w-]+$/.test(token)) {
      send(401, { ok: false, error_code: 401, description: 'Unauthorized' });
      return;
    }
    const id = Number(token.split(':')[0]);
    const isBot = !fake.userTokens.has(token);
    send(200, {
      ok: true,
      result: {
        id,
        is_bot: isBot,
        first_name: 'Test Bot',
        ...(isBot ? { username: botUsername(token), can_join_groups: true } : {}),
      },
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(fake, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  });
}
