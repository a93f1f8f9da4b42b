import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local Telegram Bot API server for the real OpenClaw gateway (`channels.telegram.apiRoot`),
 * speaking the wire format its Telegram channel uses: `POST /bot<token>/<method>` with a JSON (or
 * form) body, answering `{ok: true, result}`. Enough of the API for a whole conversation: the bot
 * long-polls `getUpdates`, a test plays a Telegram user with `userSays`, and what the bot sends
 * back (`sendMessage` and friends) is recorded for `waitForMessage`.
 *
 * It listens on every interface, so containers reach it through their bridge's gateway address.
 */

export interface BotMessage {
  token: string;
  method: string;
  chatId: number;
  text: string;
}

export interface FakeBotApi {
  /** Where the server listens, for a given host (the containers' bridge gateway, 127.0.0.1 ...). */
  urlFor(host: string): string;
  /** Every method called, in order, by token. */
  calls: Array<{ token: string; method: string }>;
  /** What the bot sent to chats. */
  sent: BotMessage[];
  /** A Telegram user writes to the bot: queued for its next getUpdates. */
  userSays(token: string, user: { id: number; firstName: string; username?: string }, text: string): void;
  /** Waits for the bot to send a message to `chatId` matching `test`, sent after `since` messages. */
  waitForMessage(chatId: number, test: (text: string) => boolean, options?: { since?: number; timeoutMs?: number }): Promise<BotMessage>;
  close(): Promise<void>;
}

interface Update {
  update_id: number;
  message: Record<string, unknown>;
}

const LONG_POLL_CAP_MS = 20_000;

export async function startFakeBotApi(): Promise<FakeBotApi> {
  const updates = new Map<string, Update[]>();
  const waiters = new Map<string, Array<() => void>>();
  const sent: BotMessage[] = [];
  const sentWaiters = new Set<() => void>();
  const calls: FakeBotApi['calls'] = [];
  let nextUpdateId = 1;
  let nextMessageId = 1000;

  const wake = (token: string) => {
    for (const resolve of waiters.get(token) ?? []) resolve();
    waiters.delete(token);
  };

  const botOf = (token: string) => ({
    id: Number(token.split(':')[0]),
    is_bot: true,
    first_name: 'Blytz Test Bot',
    username: `blytz_${token.split(':')[0]}_bot`,
    can_join_groups: false,
    can_read_all_group_messages: false,
    supports_inline_queries: false,
  });

  const server: Server = createServer((req, res) => {
    void handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) res.writeHead(500).end(String(error));
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const match = /^\/bot([^/]+)\/([A-Za-z]+)$/.exec(url.pathname);
    const send = (body: unknown): void => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    if (!match) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: false, error_code: 404, description: 'Not Found' }));
      return;
    }
    const token = decodeURIComponent(match[1] as string);
    const method = match[2] as string;
    const params = { ...Object.fromEntries(url.searchParams), ...(await readBody(req)) };
    calls.push({ token, method });

    switch (method) {
      case 'getMe':
        return send({ ok: true, result: botOf(token) });
      case 'getUpdates': {
        const offset = Number(params.offset ?? 0);
        const timeoutMs = Math.min(Number(params.timeout ?? 0) * 1000, LONG_POLL_CAP_MS);
        const pending = () => (updates.get(token) ?? []).filter((u) => u.update_id >= offset);
        // Confirmed updates (below offset) are forgotten, as Telegram does.
        updates.set(token, pending());
        if (pending().length === 0 && timeoutMs > 0) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, timeoutMs);
            const list = waiters.get(token) ?? [];
            list.push(() => {
              clearTimeout(timer);
              resolve();
            });
            waiters.set(token, list);
            req.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
          });
        }
        if (res.destroyed) return;
        return send({ ok: true, result: pending() });
      }
      case 'sendMessage':
      case 'editMessageText': {
        const chatId = Number(params.chat_id);
        const text = String(params.text ?? '');
        sent.push({ token, method, chatId, text });
        for (const notify of [...sentWaiters]) notify();
        return send({
          ok: true,
          result: {
            message_id: nextMessageId++,
            date: Math.floor(Date.now() / 1000),
            chat: { id: chatId, type: 'private' },
            from: botOf(token),
            text,
          },
        });
      }
      case 'getChat':
        return send({ ok: true, result: { id: Number(params.chat_id), type: 'private' } });
      case 'getMyCommands':
        return send({ ok: true, result: [] });
      case 'getWebhookInfo':
        return send({ ok: true, result: { url: '', has_custom_certificate: false, pending_update_count: 0 } });
      default:
        // deleteWebhook, setMyCommands, deleteMyCommands, sendChatAction, setMessageReaction ...
        return send({ ok: true, result: true });
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    urlFor: (host) => `http://${host}:${port}`,
    calls,
    sent,
    userSays(token, user, text) {
      const list = updates.get(token) ?? [];
      list.push({
        update_id: nextUpdateId++,
        message: {
          message_id: nextMessageId++,
          date: Math.floor(Date.now() / 1000),
          chat: { id: user.id, type: 'private', first_name: user.firstName, ...(user.username ? { username: user.username } : {}) },
          from: { id: user.id, is_bot: false, first_name: user.firstName, ...(user.username ? { username: user.username } : {}) },
          text,
        },
      });
      updates.set(token, list);
      wake(token);
    },
    waitForMessage(chatId, test, options = {}) {
      const since = options.since ?? 0;
      const timeoutMs = options.timeoutMs ?? 60_000;
      const find = () => sent.slice(since).find((m) => m.chatId === chatId && test(m.text));
      return new Promise((resolve, reject) => {
        const found = find();
        if (found) return resolve(found);
        const check = () => {
          const hit = find();
          if (!hit) return;
          clearTimeout(timer);
          sentWaiters.delete(check);
          resolve(hit);
        };
        const timer = setTimeout(() => {
          sentWaiters.delete(check);
          const seen = sent.slice(since).map((m) => `${m.method} ${m.chatId}: ${m.text.slice(0, 200)}`);
          reject(new Error(`no matching message to chat ${chatId} within ${timeoutMs} ms; sent: ${JSON.stringify(seen)}`));
        }, timeoutMs);
        sentWaiters.add(check);
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const token of [...waiters.keys()]) wake(token);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return {};
  const type = req.headers['content-type'] ?? '';
  if (type.includes('application/json')) return JSON.parse(text) as Record<string, unknown>;
  if (type.includes('application/x-www-form-urlencoded')) return Object.fromEntries(new URLSearchParams(text));
  if (type.includes('multipart/form-data')) {
    // Only the plain fields a text message carries.
    const fields: Record<string, string> = {};
    for (const part of text.split(/--[^\r\n]+/)) {
      const m = /name="([^"]+)"\r\n\r\n([\s\S]*?)\r\n$/.exec(part);
      if (m) fields[m[1] as string] = m[2] as string;
    }
    return fields;
  }
  return {};
}
