import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { FileWorkspaces } from '../../src/workspace/file-workspaces.js';
import { parseInstructions } from '../../src/workspace/instructions.js';
import { fillPlaceholders, TemplateError } from '../../src/workspace/placeholders.js';
import { renderWorkspace } from '../../src/workspace/render.js';
import { parseTemplateManifest, TemplateManifestError, type ResolvedTemplate } from '../../src/workspace/template-manifest.js';
import type { RenderedWorkspace, WorkspaceInput } from '../../src/workspace/workspace.js';

const TEMPLATES_DIR = fileURLToPath(new URL('../../templates', import.meta.url));
const DEFAULTS = { image: 'example/openclaw:test', containerPort: 18789 };
const BOT_TOKEN = '123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr';
const GATEWAY_TOKEN = 'gw-token-0123456789abcdef';
const MODEL_KEY = 'sk-ant-test-key-do-not-use';

const workspaces = new FileWorkspaces({ dataDir: '/nonexistent-data-dir', templatesDir: TEMPLATES_DIR, defaults: DEFAULTS });

function input(overrides: Partial<WorkspaceInput> = {}, secrets: Partial<WorkspaceInput['secrets']> = {}): WorkspaceInput {
  return {
    customer: 'alice-example-com',
    email: 'alice@example.com',
    displayName: 'Jarvis',
    instructions: "I'm a freelance developer in Lisbon.\n\n- Remind me of invoices\n* Summarise my email every morning\nThanks!",
    plan: 'personal',
    template: 'personal-assistant',
    publicOrigins: ['https://alice-example-com.blytz.localhost'],
    trustedProxies: ['172.17.0.1'],
    ...overrides,
    secrets: { telegramBotToken: BOT_TOKEN, gatewayToken: GATEWAY_TOKEN, ...secrets },
  };
}

function file(rendered: RenderedWorkspace, path: string): string {
  const found = rendered.files.find((f) => f.path === path);
  if (!found) throw new Error(`no rendered file ${path} (have ${rendered.files.map((f) => f.path).join(', ')})`);
  return found.content;
}

/** The parts of openclaw.json the tests look at. */
interface OpenClawJson {
  env?: { vars: Record<string, string> };
  models?: { providers: Record<string, { apiKey?: string }> };
  gateway: { mode: string; port: number; bind: string; auth: { mode: string; token: string } };
  agents: { defaults: { workspace: string; model?: { primary: string } } };
  channels: { telegram: { enabled: boolean; botToken?: string; dmPolicy?: string; apiRoot?: string } };
}

function openclaw(rendered: RenderedWorkspace): OpenClawJson {
  return JSON.parse(file(rendered, 'openclaw.json')) as OpenClawJson;
}

describe('parseInstructions', () => {
  it('takes the first prose line as the description and -/* lines as responsibilities', () => {
    const parsed = parseInstructions(
      '\r\n  I run a bakery.  \r\n- order flour\n  * answer customers \n**not a list**\n-not a list either\n',
    );
    expect(parsed.description).toBe('I run a bakery.');
    expect(parsed.responsibilities).toEqual(['order flour', 'answer customers']);
    expect(parsed.text).toBe('I run a bakery.\n- order flour\n  * answer customers\n**not a list**\n-not a list either');
  });

  it('has no description when the instructions start with a list, and nothing at all when empty', () => {
    expect(parseInstructions('- just a task').description).toBeUndefined();
    expect(parseInstructions('   \n\n')).toEqual({ text: '', description: undefined, responsibilities: [] });
  });
});

describe('fillPlaceholders', () => {
  it('inserts values literally in one pass and rejects unknown placeholders', () => {
    const values = { name: '{{other}} $& $1 ${x}', other: 'SHOULD-NOT-APPEAR' };
    expect(fillPlaceholders('Hi {{name}} / {{ other }}', values, 't')).toBe('Hi {{other}} $& $1 ${x} / SHOULD-NOT-APPEAR');
    expect(fillPlaceholders('{{name}}', { name: '{{other}}', other: 'x' }, 't')).toBe('{{other}}');
    expect(() => fillPlaceholders('{{nmae}}', values, 'AGENTS.md')).toThrow(TemplateError);
    expect(() => fillPlaceholders('{{constructor}}', values, 'AGENTS.md')).toThrow(/unknown placeholder \{\{constructor\}\}/);
  });
});

describe('personal-assistant rendering', () => {
  it('is deterministic: the same input gives the same bytes and hashes', async () => {
    const a = await workspaces.render(input());
    const b = await workspaces.render(input());
    expect(b).toEqual(a);
    expect(a.files.map((f) => f.path)).toEqual([
      'openclaw.json',
      'workspace/AGENTS.md',
      'workspace/SOUL.md',
      'workspace/USER.md',
    ]);
    expect(a.files.find((f) => f.path === 'openclaw.json')?.secret).toBe(true);
    expect(a.files.filter((f) => f.secret)).toHaveLength(1);
  });

  it('fills the template defaults for image and container port', async () => {
    const template = await workspaces.loadTemplate('personal-assistant');
    expect(template).toMatchObject({
      name: 'personal-assistant',
      image: DEFAULTS.image,
      containerPort: 18789,
      probes: {
        startup: { path: '/startupz', expect: { ok: true, status: 'started' } },
        liveness: { path: '/healthz', expect: { ok: true, status: 'live' } },
        readiness: { path: '/readyz', expect: { ready: true } },
      },
      tmpfs: ['/tmp', '/home/node/.cache', '/home/node/.openclaw/tmp'],
      user: '1000:1000',
      mountPath: '/home/node/.openclaw',
      startTimeoutSeconds: 120,
      updateStrategy: 'recreate',
      env: {},
    });
  });

  it('puts the name, description, responsibilities and full instructions into the Markdown', async () => {
    const rendered = await workspaces.render(input());
    const agents = file(rendered, 'workspace/AGENTS.md');
    const user = file(rendered, 'workspace/USER.md');
    const soul = file(rendered, 'workspace/SOUL.md');
    expect(soul).toContain('Your name is **Jarvis**.');
    expect(agents).toContain('You are **Jarvis**');
    expect(user).toContain("I'm a freelance developer in Lisbon.");
    expect(user).toContain('- Remind me of invoices\n- Summarise my email every morning\n');
    expect(agents).toContain('- Remind me of invoices\n- Summarise my email every morning\n');
    expect(agents).toContain(
      "I'm a freelance developer in Lisbon.\n\n- Remind me of invoices\n* Summarise my email every morning\nThanks!",
    );
    for (const f of rendered.files) expect(f.content).not.toMatch(/\{\{/);
  });

  it('falls back sensibly when instructions or name are missing', async () => {
    const rendered = await workspaces.render(input({ instructions: '', displayName: '  \n ' }));
    expect(file(rendered, 'workspace/SOUL.md')).toContain('Your name is **Assistant**.');
    expect(file(rendered, 'workspace/USER.md')).toContain('They have not told you about themselves yet');
    expect(file(rendered, 'workspace/USER.md')).toContain('- Answer their questions and help with everyday tasks.');
    expect(file(rendered, 'workspace/AGENTS.md')).toContain('_No instructions yet._');
  });

  it('keeps customer text that looks like a placeholder literal', async () => {
    const rendered = await workspaces.render(
      input({ instructions: 'Call me {{assistantName}} $& ok', displayName: 'Bob {{instructions}}' }),
    );
    expect(file(rendered, 'workspace/USER.md')).toContain('Call me {{assistantName}} $& ok');
    expect(file(rendered, 'workspace/SOUL.md')).toContain('Your name is **Bob {{instructions}}**.');
  });

  it('builds openclaw.json for the gateway: the keys the pinned schema defines', async () => {
    const config = openclaw(
      await workspaces.render(
        input({ modelProvider: 'openai', telegramApiRoot: 'http://127.0.0.1:9/bot-api' }, { modelApiKey: MODEL_KEY }),
      ),
    );
    expect(config).toEqual({
      models: { providers: { openai: { apiKey: MODEL_KEY } } },
      gateway: {
        mode: 'local',
        port: 18789,
        bind: 'lan',
        auth: { mode: 'token', token: GATEWAY_TOKEN },
        controlUi: { allowedOrigins: ['https://alice-example-com.blytz.localhost'] },
        trustedProxies: ['172.17.0.1'],
        reload: { mode: 'hybrid' },
      },
      agents: { defaults: { workspace: '/home/node/.openclaw/workspace', model: { primary: 'openai/gpt-5.4' } } },
      channels: {
        telegram: { enabled: true, botToken: BOT_TOKEN, dmPolicy: 'pairing', apiRoot: 'http://127.0.0.1:9/bot-api' },
      },
    });
  });

  it('turns Telegram off and leaves out the model key and model when not given', async () => {
    const config = openclaw(await workspaces.render(input({}, { telegramBotToken: undefined })));
    expect(config.channels).toEqual({ telegram: { enabled: false } });
    expect(config.env).toBeUndefined();
    expect(config.models).toBeUndefined();
    expect(config.agents.defaults.model).toBeUndefined();
    expect(config.gateway.auth.token).toBe(GATEWAY_TOKEN);
  });

  it('takes the gateway port from the template, and a key without provider as Anthropic with its model', async () => {
    const template: ResolvedTemplate = { ...(await workspaces.loadTemplate('personal-assistant')), containerPort: 3000 };
    const rendered = renderWorkspace(template, [], input({}, { modelApiKey: MODEL_KEY }));
    expect(openclaw(rendered).gateway.port).toBe(3000);
    expect(openclaw(rendered).models).toEqual({ providers: { anthropic: { apiKey: MODEL_KEY } } });
    expect(openclaw(rendered).env).toBeUndefined();
    expect(openclaw(rendered).agents.defaults.model).toEqual({ primary: 'anthropic/claude-sonnet-4-6' });
  });

  it('marks openclaw.json as merged with what the gateway writes, never replaced', async () => {
    const rendered = await workspaces.render(input());
    expect(rendered.files.find((f) => f.path === 'openclaw.json')).toMatchObject({ secret: true, merge: 'openclaw-config' });
    expect(rendered.files.filter((f) => f.merge !== undefined).map((f) => f.path)).toEqual(['openclaw.json']);
  });

  it('serialises values as JSON data, so a hostile token cannot add fields', async () => {
    const hostile = 'x", "bind": "0.0.0.0';
    const config = openclaw(await workspaces.render(input({}, { gatewayToken: hostile })));
    expect(config.gateway.auth.token).toBe(hostile);
    expect(config.gateway.bind).toBe('lan');
  });

  it('keeps secrets out of every file but openclaw.json', async () => {
    const rendered = await workspaces.render(input({}, { modelApiKey: MODEL_KEY }));
    const openclawText = file(rendered, 'openclaw.json');
    for (const secret of [BOT_TOKEN, GATEWAY_TOKEN, MODEL_KEY]) {
      expect(openclawText).toContain(secret);
      for (const f of rendered.files.filter((f) => !f.secret)) expect(f.content).not.toContain(secret);
    }
  });

  it('changes contentHash for the bot token and for instructions, and not otherwise', async () => {
    const base = await workspaces.render(input());
    const again = await workspaces.render(input());
    const newToken = await workspaces.render(input({}, { telegramBotToken: '987654321:ZZbbCCddEEffGGhhIIjjKKllMMnnOOppQQr' }));
    const newInstructions = await workspaces.render(input({ instructions: 'Something else entirely.' }));
    expect(again.contentHash).toBe(base.contentHash);
    expect(newToken.contentHash).not.toBe(base.contentHash);
    expect(newInstructions.contentHash).not.toBe(base.contentHash);
  });
});

describe('template manifests', () => {
  const parse = (value: unknown) => parseTemplateManifest(JSON.stringify(value), 'templates/t/template.json', 't', DEFAULTS);
  const valid = {
    probes: {
      liveness: { path: '/healthz', expect: { ok: true } },
      readiness: { path: '/readyz', expect: { ready: true } },
    },
    user: '1000:1000',
    mountPath: '/data',
    startTimeoutSeconds: 60,
    updateStrategy: 'recreate',
    env: {},
  };

  it('accepts a valid manifest and keeps its own image and port', () => {
    expect(parse({ ...valid, image: 'own/image:1', containerPort: 8080 })).toMatchObject({
      name: 't',
      image: 'own/image:1',
      containerPort: 8080,
    });
  });

  it('names the file and the field that is wrong', () => {
    expect(() => parse({ ...valid, user: 'node' })).toThrow(/templates\/t\/template\.json: field "user" must be "uid:gid"/);
    expect(() => parse({ ...valid, user: '0:0' })).toThrow(/field "user" must not be root/);
    expect(() => parse({ ...valid, mountPath: '/data/../etc' })).toThrow(/field "mountPath"/);
    expect(() => parse({ ...valid, probes: undefined })).toThrow(/field "probes" is required/);
    // A probe must say what a healthy body holds: a status code alone proves nothing.
    expect(() => parse({ ...valid, probes: { ...valid.probes, readiness: { path: '/readyz', expect: {} } } })).toThrow(
      /field "probes.readiness.expect" must name at least one field/,
    );
    expect(() => parse({ ...valid, probes: { ...valid.probes, liveness: { path: 'healthz', expect: { ok: true } } } })).toThrow(
      /field "probes.liveness.path" must be an absolute URL path/,
    );
    expect(() => parse({ ...valid, tmpfs: ['tmp'] })).toThrow(/field "tmpfs.0" must be a normalised absolute path/);
    expect(() => parse({ ...valid, extra: 1 })).toThrow(/unknown field\(s\) extra/);
    expect(() => parse({ ...valid, name: 'other' })).toThrow(/field "name" is "other" but the folder is "t"/);
    expect(() => parseTemplateManifest('{nope', 'templates/t/template.json', 't', DEFAULTS)).toThrow(
      /template\.json: not valid JSON/,
    );
  });

  it('rejects template names that could leave the templates folder', async () => {
    for (const name of ['../templates', 'a/b', '', '.', 'x'.repeat(64), 'a\0b']) {
      await expect(workspaces.loadTemplate(name)).rejects.toThrow(TemplateManifestError);
    }
    await expect(workspaces.loadTemplate('no-such-template')).rejects.toThrow(/does not exist/);
  });
});
