import { execFileSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileWorkspaces, InvalidWorkspacePathError, MARKER_FILE } from '../../src/workspace/file-workspaces.js';
import type { RenderedWorkspace, WorkspaceInput } from '../../src/workspace/workspace.js';

// Runs on the real filesystem as root (like `blytz serve`), so owners and modes are real.
const TEMPLATES_DIR = fileURLToPath(new URL('../../templates', import.meta.url));
const BOT_TOKEN = '123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr';
const NAME = 'alice-example-com';

function input(instructions = 'I am Alice.\n- keep my calendar'): WorkspaceInput {
  return {
    customer: NAME,
    email: 'alice@example.com',
    displayName: 'Jarvis',
    instructions,
    plan: 'personal',
    template: 'personal-assistant',
    publicOrigins: [`https://${NAME}.blytz.localhost`],
    trustedProxies: ['172.17.0.1'],
    secrets: { telegramBotToken: BOT_TOKEN, gatewayToken: 'gateway-token-abc' },
  };
}

const mode = async (path: string) => (await stat(path)).mode & 0o777;

describe('FileWorkspaces on disk', () => {
  let dataDir: string;
  let workspaces: FileWorkspaces;
  let dir: string;

  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'blytz-ws-'));
    workspaces = new FileWorkspaces({
      dataDir,
      templatesDir: TEMPLATES_DIR,
      defaults: { image: 'img:test', containerPort: 18789 },
    });
    dir = join(dataDir, 'customers', NAME);
  });
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('writes the tree with the right modes and owner', async () => {
    expect(process.getuid?.()).toBe(0); // ownership checks need root, as in production
    await workspaces.write(NAME, await workspaces.render(input()));

    expect(await mode(join(dataDir, 'customers'))).toBe(0o700);
    for (const folder of [dir, join(dir, 'workspace')]) {
      const s = await stat(folder);
      expect([s.mode & 0o777, s.uid, s.gid]).toEqual([0o700, 1000, 1000]);
    }
    const secret = await stat(join(dir, 'openclaw.json'));
    expect([secret.mode & 0o777, secret.uid, secret.gid]).toEqual([0o600, 1000, 1000]);
    for (const name of ['AGENTS.md', 'USER.md', 'SOUL.md']) {
      const s = await stat(join(dir, 'workspace', name));
      expect([s.mode & 0o777, s.uid]).toEqual([0o644, 1000]);
    }
    expect(await readFile(join(dir, 'workspace', 'AGENTS.md'), 'utf8')).toContain('- keep my calendar');
    expect(JSON.parse(await readFile(join(dir, 'openclaw.json'), 'utf8')).channels.telegram.botToken).toBe(BOT_TOKEN);
    // No temp files left behind, and no secret outside openclaw.json.
    const all = [...(await readdir(dir)), ...(await readdir(join(dir, 'workspace')))];
    expect(all.filter((n) => n.includes('tmp'))).toEqual([]);
    for (const name of ['AGENTS.md', 'USER.md', 'SOUL.md']) {
      expect(await readFile(join(dir, 'workspace', name), 'utf8')).not.toContain(BOT_TOKEN);
    }
    expect(await readFile(join(dir, MARKER_FILE), 'utf8')).not.toContain(BOT_TOKEN);
  });

  it('observes missing, then current, then stale after a new render', async () => {
    expect(await workspaces.observe(NAME)).toEqual({ exists: false });
    const first = await workspaces.render(input());
    await workspaces.write(NAME, first);
    expect(await workspaces.observe(NAME)).toEqual({ exists: true, contentHash: first.contentHash });
    const marker = JSON.parse(await readFile(join(dir, MARKER_FILE), 'utf8'));
    expect(marker.contentHash).toBe(first.contentHash);

    const second = await workspaces.render(input('New instructions.'));
    expect(second.contentHash).not.toBe(first.contentHash);
    expect((await workspaces.observe(NAME)).contentHash).not.toBe(second.contentHash);
    await workspaces.write(NAME, second);
    expect(await workspaces.observe(NAME)).toEqual({ exists: true, contentHash: second.contentHash });
  });

  it('counts a workspace as not current when the marker or a rendered file is missing or torn', async () => {
    const rendered = await workspaces.render(input());
    await workspaces.write(NAME, rendered);
    await rm(join(dir, 'workspace', 'SOUL.md'));
    expect(await workspaces.observe(NAME)).toEqual({ exists: true });
    await workspaces.write(NAME, rendered);
    await writeFile(join(dir, MARKER_FILE), '{"contentHash": "abc"'); // torn write
    expect(await workspaces.observe(NAME)).toEqual({ exists: true });
    await rm(join(dir, MARKER_FILE));
    expect(await workspaces.observe(NAME)).toEqual({ exists: true });
  });

  it('a write that fails half way leaves the workspace not current, even for the previous render', async () => {
    const first = await workspaces.render(input());
    await workspaces.write(NAME, first);
    const second = await workspaces.render(input('Second.'));
    // A name too long for the filesystem fails after openclaw.json and AGENTS.md were replaced.
    const failing = {
      ...second,
      files: [...second.files, { path: `workspace/${'z'.repeat(250)}`, content: 'x', secret: false }],
    };
    await expect(workspaces.write(NAME, failing)).rejects.toThrow(/ENAMETOOLONG/);
    const observed = await workspaces.observe(NAME);
    expect(observed).toEqual({ exists: true });
    expect(observed.contentHash).not.toBe(first.contentHash);
    await workspaces.write(NAME, first); // the retry repairs it
    expect(await workspaces.observe(NAME)).toEqual({ exists: true, contentHash: first.contentHash });
    expect(await readFile(join(dir, 'workspace', 'AGENTS.md'), 'utf8')).toContain('I am Alice.');
  });

  it('keeps files the assistant wrote itself when re-rendering', async () => {
    await workspaces.write(NAME, await workspaces.render(input()));
    await mkdir(join(dir, 'workspace', 'memory'));
    await writeFile(join(dir, 'workspace', 'memory', '2026-01-01.md'), 'Alice likes tea.\n');
    await writeFile(join(dir, 'workspace', 'NOTES.md'), 'mine\n');

    await workspaces.write(NAME, await workspaces.render(input('Changed.')));
    expect(await readFile(join(dir, 'workspace', 'memory', '2026-01-01.md'), 'utf8')).toBe('Alice likes tea.\n');
    expect(await readFile(join(dir, 'workspace', 'NOTES.md'), 'utf8')).toBe('mine\n');
    expect(await readFile(join(dir, 'workspace', 'AGENTS.md'), 'utf8')).toContain('Changed.');
  });

  it('removes files it rendered before and no longer renders, but nothing else', async () => {
    const rendered = await workspaces.render(input());
    const withExtra: RenderedWorkspace = {
      ...rendered,
      files: [...rendered.files, { path: 'workspace/OLD.md', content: 'old\n', secret: false }],
    };
    await workspaces.write(NAME, withExtra);
    await writeFile(join(dir, 'workspace', 'MINE.md'), 'mine\n');
    await workspaces.write(NAME, rendered);
    await expect(lstat(join(dir, 'workspace', 'OLD.md'))).rejects.toThrow(/ENOENT/);
    expect(await readFile(join(dir, 'workspace', 'MINE.md'), 'utf8')).toBe('mine\n');
  });

  it('replaces a planted symlink instead of writing through it', async () => {
    const outside = join(dataDir, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'AGENTS.md'), 'host file\n');
    await workspaces.write(NAME, await workspaces.render(input()));
    // The container swaps its workspace folder and a file for links to host paths.
    await rm(join(dir, 'workspace'), { recursive: true });
    await symlink(outside, join(dir, 'workspace'));
    await rm(join(dir, 'openclaw.json'));
    await symlink(join(outside, 'AGENTS.md'), join(dir, 'openclaw.json'));

    await workspaces.write(NAME, await workspaces.render(input()));
    expect(await readFile(join(outside, 'AGENTS.md'), 'utf8')).toBe('host file\n');
    expect((await stat(join(outside, 'AGENTS.md'))).uid).toBe(0);
    expect((await lstat(join(dir, 'workspace'))).isDirectory()).toBe(true);
    expect((await lstat(join(dir, 'openclaw.json'))).isFile()).toBe(true);
  });

  it('does not hang on a FIFO or follow a symlink planted as the marker', async () => {
    const rendered = await workspaces.render(input());
    await workspaces.write(NAME, rendered);
    await rm(join(dir, MARKER_FILE));
    execFileSync('mkfifo', [join(dir, MARKER_FILE)]);
    expect(await workspaces.observe(NAME)).toEqual({ exists: true });
    await rm(join(dir, MARKER_FILE));
    const fake = join(dataDir, 'fake-marker.json');
    await writeFile(fake, JSON.stringify({ contentHash: rendered.contentHash, template: 'personal-assistant', files: [] }));
    await symlink(fake, join(dir, MARKER_FILE));
    expect(await workspaces.observe(NAME)).toEqual({ exists: true });
  });

  it('rejects hostile customer names everywhere', async () => {
    const rendered = await workspaces.render(input());
    const template = rendered.template;
    for (const name of ['../x', 'a/b', '', 'x'.repeat(64), 'a\0b', '..', '.', 'A', '-a', 'a.b']) {
      await expect(workspaces.write(name, rendered)).rejects.toThrow(InvalidWorkspacePathError);
      await expect(workspaces.observe(name)).rejects.toThrow(InvalidWorkspacePathError);
      await expect(workspaces.remove(name)).rejects.toThrow(InvalidWorkspacePathError);
      expect(() => workspaces.mounts(name, template)).toThrow(InvalidWorkspacePathError);
    }
    expect(await readdir(dataDir)).toEqual([]); // nothing was created anywhere
    // 63 characters is the longest valid name.
    await workspaces.write('x'.repeat(63), rendered);
    expect(await workspaces.list()).toEqual(['x'.repeat(63)]);
  });

  it('rejects rendered file paths that leave the customer folder', async () => {
    const rendered = await workspaces.render(input());
    for (const path of ['../evil', '/etc/passwd', 'workspace/../../evil', MARKER_FILE, 'a//b', '']) {
      const hostile = { ...rendered, files: [{ path, content: 'x', secret: false }] };
      await expect(workspaces.write(NAME, hostile)).rejects.toThrow(InvalidWorkspacePathError);
    }
    expect(await readdir(dataDir)).toEqual([]);
  });

  it('lists customer folders and removes one', async () => {
    expect(await workspaces.list()).toEqual([]);
    await workspaces.write(NAME, await workspaces.render(input()));
    await workspaces.write('bob', await workspaces.render({ ...input(), customer: 'bob' }));
    await writeFile(join(dataDir, 'customers', 'stray-file'), ''); // not a folder: not a customer
    expect(await workspaces.list()).toEqual([NAME, 'bob'].sort());

    await workspaces.remove(NAME);
    await expect(lstat(dir)).rejects.toThrow(/ENOENT/);
    expect(await workspaces.list()).toEqual(['bob']);
    await workspaces.remove(NAME); // idempotent
  });

  it('mounts the whole state folder read-write, openclaw.json included (OpenClaw renames its config into place)', async () => {
    const template = await workspaces.loadTemplate('personal-assistant');
    expect(workspaces.mounts(NAME, template)).toEqual([{ hostPath: dir, containerPath: '/home/node/.openclaw', readOnly: false }]);
  });

  it('merges openclaw.json: keeps what the gateway wrote, enforces our fields, writes nothing when nothing of ours changed', async () => {
    const first = await workspaces.render(input());
    await workspaces.write(NAME, first);
    const configPath = join(dir, 'openclaw.json');
    // The gateway records its paired owner and metadata, renaming its own file into place.
    const written = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, Record<string, unknown>>;
    written.meta = { lastTouchedVersion: '2026.9.6' };
    written.commands = { ownerAllowFrom: ['telegram:4242'] };
    (written.channels!.telegram as Record<string, unknown>).allowFrom = ['4242'];
    await writeFile(`${configPath}.tmp`, JSON.stringify(written, null, 2));
    execFileSync('mv', [`${configPath}.tmp`, configPath]);
    const before = await stat(configPath);
    // Our fields did not change: the workspace is still current and a re-render writes nothing.
    expect(await workspaces.observe(NAME)).toEqual({ exists: true, contentHash: first.contentHash });
    await workspaces.write(NAME, first);
    expect((await stat(configPath)).ino).toBe(before.ino);

    // A new instruction re-renders the Markdown; the config keeps the owner.
    await workspaces.write(NAME, await workspaces.render(input('I now run a bakery.')));
    const kept = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, Record<string, unknown>>;
    expect(kept.commands).toEqual({ ownerAllowFrom: ['telegram:4242'] });
    expect(kept.meta).toEqual({ lastTouchedVersion: '2026.9.6' });
    expect(kept.channels!.telegram).toMatchObject({ allowFrom: ['4242'], botToken: BOT_TOKEN, dmPolicy: 'pairing' });
    expect((await stat(configPath)).mode & 0o777).toBe(0o600);
  });

  it('sees a field of ours changed by the assistant as drift, and the next write puts it back', async () => {
    const rendered = await workspaces.render(input());
    await workspaces.write(NAME, rendered);
    const configPath = join(dir, 'openclaw.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as { channels: { telegram: Record<string, unknown> } };
    config.channels.telegram.dmPolicy = 'open'; // anyone could talk to the bot
    await writeFile(configPath, JSON.stringify(config));
    expect(await workspaces.observe(NAME)).toEqual({ exists: true });
    await workspaces.write(NAME, rendered);
    expect(JSON.parse(await readFile(configPath, 'utf8')).channels.telegram.dmPolicy).toBe('pairing');
    expect(await workspaces.observe(NAME)).toEqual({ exists: true, contentHash: rendered.contentHash });
  });

  it('a config that is not JSON is kept beside for support and replaced by ours', async () => {
    await workspaces.write(NAME, await workspaces.render(input()));
    await writeFile(join(dir, 'openclaw.json'), '{ torn');
    await workspaces.write(NAME, await workspaces.render(input()));
    expect(await readFile(join(dir, 'openclaw.json.unreadable'), 'utf8')).toBe('{ torn');
    expect((await stat(join(dir, 'openclaw.json.unreadable'))).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(join(dir, 'openclaw.json'), 'utf8')).gateway.auth.token).toBe('gateway-token-abc');
  });
});
