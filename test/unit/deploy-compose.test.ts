import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config.js';
import { customerFromRouteId } from '../../src/domain/naming.js';
import { includedModelAccess } from '../../src/models/included-access.js';
import { serverSettings } from '../../src/proxy/caddy/caddy-json.js';

/**
 * The single-host deployment (deploy/compose, Dockerfile, .env.example, deploy/systemd) read
 * the way Docker Compose, Docker and systemd read them, checked against what the code needs.
 * `docker compose config` / `docker-compose config` and `systemd-analyze verify` run too when
 * this machine has them.
 */

const ROOT = resolve(import.meta.dirname, '../..');
/** Where the kits make the model gateway listen: docker0's address, the port the tenant ruleset opens. */
const KIT_GATEWAY = '172.17.0.1:8090';
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string | number | boolean | null>;
  env_file?: string[];
  volumes?: string[];
  ports?: string[];
  networks?: string[];
  network_mode?: string;
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
  group_add?: string[];
  read_only?: boolean;
  cap_drop?: string[];
  security_opt?: string[];
}
interface Compose {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
  networks?: Record<string, unknown>;
}

const composeText = read('deploy/compose/docker-compose.yml');
const compose = parse(composeText) as Compose;
const services = compose.services;
const postgres = services['postgres']!;
const caddy = services['caddy']!;
const blytz = services['blytz']!;
const env = (service: Service) => service.environment ?? {};

/** `${VAR}`, `${VAR:-default}`, `${VAR:?message}` references of a compose value. */
const INTERPOLATION = /\$\{([A-Z0-9_]+)(?:(?::?[-?])[^}]*)?\}/g;
const isPureInterpolation = (value: string) => /^\$\{[A-Z0-9_]+(?::?[-?][^}]*)?\}$/.test(value);

function envExample(): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of read('.env.example').split('\n')) {
    const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) vars.set(m[1]!, m[2]!);
  }
  return vars;
}

function bootstrap(): { admin: { listen: string }; apps: { http: { servers: Record<string, Record<string, unknown>> } } } {
  return JSON.parse(read('deploy/compose/caddy/bootstrap.json')) as ReturnType<typeof bootstrap>;
}

describe('deploy/compose/docker-compose.yml', () => {
  it('runs Postgres, Caddy and blytz serve, with named volumes for their state', () => {
    expect(Object.keys(services).sort()).toEqual(['blytz', 'caddy', 'postgres']);
    expect(Object.keys(compose.volumes).sort()).toEqual(['caddy-config', 'caddy-data', 'postgres-data']);
    expect(postgres.volumes).toContain('postgres-data:/var/lib/postgresql/data');
    expect(caddy.volumes).toContain('caddy-config:/config');
    expect(caddy.volumes).toContain('caddy-data:/data');
    // Every named volume is used by some service.
    const used = Object.values(services).flatMap((s) => (s.volumes ?? []).map((v) => v.split(':')[0]));
    for (const volume of Object.keys(compose.volumes)) expect(used).toContain(volume);
  });

  it('builds blytz from the project Dockerfile and runs `serve` after Postgres is healthy', () => {
    expect(blytz.build).toEqual({ context: '../..', dockerfile: 'Dockerfile' });
    expect(postgres.healthcheck?.test.join(' ')).toContain('pg_isready');
    expect(blytz.depends_on?.['postgres']).toEqual({ condition: 'service_healthy' });
    expect(blytz.depends_on?.['caddy']).toBeDefined();
    expect(blytz.env_file).toEqual(['.env']);
    // The image's own HEALTHCHECK (/healthz) applies: no override that could drift from it.
    expect(blytz.healthcheck).toBeUndefined();
  });

  it('starts Caddy with --resume so the routes blytz wrote survive a restart', () => {
    expect(caddy.command).toEqual(['caddy', 'run', '--resume', '--config', '/etc/caddy/bootstrap.json']);
    expect(caddy.volumes).toContain('./caddy/bootstrap.json:/etc/caddy/bootstrap.json:ro');
  });

  it('keeps the Caddy admin API on the host loopback, unpublished, and points blytz at it', () => {
    // Host network (customer ports are on the host's 127.0.0.1): no port mapping at all.
    expect(caddy.network_mode).toBe('host');
    expect(caddy.ports).toBeUndefined();
    for (const service of Object.values(services)) {
      for (const port of service.ports ?? []) {
        expect(port).not.toMatch(/2019/);
        // Whatever is published is published on the host loopback only.
        expect(port.startsWith('127.0.0.1:')).toBe(true);
      }
    }
    const admin = bootstrap().admin.listen;
    expect(admin).toBe('127.0.0.1:2019');
    expect(env(blytz)['CADDY_ADMIN_URL']).toBe(`http://${admin}`);
  });

  it('gives Caddy and blytz the host network, so both reach customer ports on 127.0.0.1', () => {
    expect(blytz.network_mode).toBe('host');
    expect(env(blytz)['HOST']).toBe('127.0.0.1');
    // Postgres stays on its own bridge network, published on the loopback for blytz.
    expect(postgres.network_mode).toBeUndefined();
    expect(postgres.networks).toEqual(['db']);
    expect(postgres.ports).toEqual(['127.0.0.1:${POSTGRES_PORT:-5433}:5432']);
    expect(env(blytz)['DATABASE_URL']).toMatch(
      /^postgres:\/\/blytz:\$\{POSTGRES_PASSWORD[^}]*\}@127\.0\.0\.1:\$\{POSTGRES_PORT:-5433\}\/blytz$/,
    );
  });

  it('mounts the Docker socket and the data directory at the same path on both sides', () => {
    expect(blytz.volumes).toContain('/var/run/docker.sock:/var/run/docker.sock');
    expect(env(blytz)['DOCKER_HOST']).toBe('unix:///var/run/docker.sock');
    const dataDir = env(blytz)['BLYTZ_DATA_DIR'];
    expect(dataDir).toBe('/var/lib/blytz');
    // The engine resolves customer workspace bind mounts on the host: the paths must agree.
    expect(blytz.volumes).toContain(`${dataDir}:${dataDir}`);
    expect(blytz.group_add?.[0]).toMatch(/^\$\{DOCKER_GID:\?/);
    expect(blytz.read_only).toBe(true);
    expect(blytz.cap_drop).toEqual(['ALL']);
    expect(blytz.security_opt).toContain('no-new-privileges:true');
  });

  it('inlines no secret: secret-looking settings are ${VAR} references to the env file', () => {
    for (const [name, service] of Object.entries(services)) {
      for (const [key, raw] of Object.entries(env(service))) {
        const value = String(raw ?? '');
        if (/PASSWORD|SECRET|TOKEN|_KEY$/.test(key)) {
          expect(isPureInterpolation(value), `${name}.${key} = ${value}`).toBe(true);
        }
        if (/^postgres(ql)?:\/\//.test(value)) {
          const password = /^postgres(?:ql)?:\/\/[^:]+:(.*)@[^@]+$/.exec(value)?.[1] ?? '';
          expect(isPureInterpolation(password), `${name}.${key} password part`).toBe(true);
        }
      }
    }
    // No secret material anywhere in the text (Stripe keys, webhook secrets, bot tokens).
    expect(composeText).not.toMatch(/sk_(live|test)_|rk_(live|test)_|whsec_|\d{6,}:[A-Za-z0-9_-]{30,}/);
    for (const secret of ['BLYTZ_ADMIN_TOKEN', 'BLYTZ_SECRET_KEY', 'STRIPE_SECRET_KEY', 'STRIPE_WEBHOOK_SECRET']) {
      expect(composeText).not.toContain(`${secret}:`);
    }
  });

  it('documents every variable it interpolates in .env.example', () => {
    const example = read('.env.example');
    const referenced = new Set([...composeText.matchAll(INTERPOLATION)].map((m) => m[1]!));
    expect(referenced.size).toBeGreaterThan(3);
    for (const name of referenced) expect(example, name).toMatch(new RegExp(`^#? ?${name}=`, 'm'));
  });
});

describe('deploy/compose/caddy/bootstrap.json', () => {
  const server = bootstrap().apps.http.servers['blytz']!;

  it('is the server block blytz owns, with the settings blytz would give it', () => {
    expect(Object.keys(bootstrap().apps.http.servers)).toEqual([loadConfig({}).BLYTZ_CADDY_SERVER]);
    const want = serverSettings(loadConfig({}).BLYTZ_CADDY_LISTEN, undefined);
    for (const [key, value] of Object.entries(want)) expect(server[key]).toEqual(value);
  });

  it('routes the base domain to blytz with a route blytz treats as foreign (never as an orphan)', () => {
    const routes = server['routes'] as Array<{ '@id': string; match: unknown; handle: unknown }>;
    expect(routes).toHaveLength(1);
    const site = routes[0]!;
    expect(customerFromRouteId(site['@id'])).toBeUndefined();
    expect(site.match).toEqual([{ host: ['{env.BLYTZ_BASE_DOMAIN}'] }]);
    // Public paths only (test/integration/deploy-caddy.test.ts sends the rest through a real Caddy).
    const [subroute] = site.handle as Array<{ handler: string; routes: Array<{ handle: unknown }> }>;
    expect(subroute?.handler).toBe('subroute');
    expect(subroute?.routes[0]?.handle).toEqual([
      { handler: 'reverse_proxy', upstreams: [{ dial: '127.0.0.1:{env.BLYTZ_PORT}' }] },
    ]);
    // The placeholders are fed by the caddy service's environment, from the same variables.
    expect(env(caddy)['BLYTZ_BASE_DOMAIN']).toBe('${BLYTZ_BASE_DOMAIN:-blytz.localhost}');
    expect(env(caddy)['BLYTZ_PORT']).toBe(env(blytz)['PORT']);
  });
});

describe('Dockerfile', () => {
  const text = read('Dockerfile');
  const lines = text
    .replace(/\\\n\s*/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const stages: Array<{ name: string; lines: string[] }> = [];
  for (const line of lines) {
    const from = /^FROM\s+\S+(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (from) stages.push({ name: from[1] ?? '', lines: [] });
    else stages.at(-1)?.lines.push(line);
  }
  const stage = (name: string) => stages.find((s) => s.name === name)!;

  it('builds with npm ci and tsc, and ships production dependencies only', () => {
    expect(stages.map((s) => s.name)).toEqual(['build', 'prod-deps', 'runtime']);
    expect(stage('build').lines).toContain('RUN npm ci --no-audit --no-fund --loglevel=error');
    expect(stage('build').lines).toContain('RUN npx tsc -p tsconfig.build.json');
    expect(stage('prod-deps').lines.some((l) => /^RUN npm ci --omit=dev\b/.test(l))).toBe(true);
    const runtime = stage('runtime').lines;
    expect(runtime).toContain('COPY --from=prod-deps /app/node_modules ./node_modules');
    expect(runtime).toContain('COPY --from=build /app/dist ./dist');
    expect(runtime).toContain('COPY templates ./templates');
    expect(runtime.some((l) => l.startsWith('COPY --from=build /app/node_modules'))).toBe(false);
  });

  it('runs `blytz serve` as a non-root user with a /healthz health check', () => {
    const runtime = stage('runtime').lines;
    const user = runtime.filter((l) => l.startsWith('USER ')).at(-1);
    expect(user).toBe('USER blytz:blytz');
    // The node image's uid:gid 1000:1000, renamed: the template's container user owns workspaces.
    const template = JSON.parse(read('templates/personal-assistant/template.json')) as { user: string };
    expect(template.user).toBe('1000:1000');
    expect(runtime.join('\n')).toMatch(/usermod --login blytz .* node/);
    const healthcheck = runtime.find((l) => l.startsWith('HEALTHCHECK '));
    expect(healthcheck).toMatch(/\/healthz/);
    expect(runtime).toContain('ENTRYPOINT ["node", "--enable-source-maps", "--max-semi-space-size=16", "/app/dist/cli/main.js"]');
    // The image runs the controller with the same Node flags as bin/blytz.
    expect(read('bin/blytz')).toContain(
      'exec "$node" --enable-source-maps --max-semi-space-size=16 "$here/dist/cli/main.js" "$@"',
    );
    expect(runtime).toContain('CMD ["serve"]');
  });

  it('keeps secrets and local state out of the build context', () => {
    const ignored = read('.dockerignore').split('\n');
    for (const entry of ['.env', '**/.env', 'node_modules', 'data', '.git']) expect(ignored).toContain(entry);
  });
});

describe('.env.example', () => {
  const vars = envExample();

  it('lists every configuration variable blytz reads (src/config.ts)', () => {
    const schema = read('src/config.ts');
    const block = schema.slice(
      schema.indexOf('const envSchema = z.object({'),
      schema.indexOf('});', schema.indexOf('const envSchema')),
    );
    const names = [...block.matchAll(/^ {2}([A-Z][A-Z0-9_]+):/gm)].map((m) => m[1]!);
    // Contract section 2, spelled out so a variable lost from config.ts is noticed too.
    const contract = [
      'DATABASE_URL',
      'BLYTZ_DATA_DIR',
      'PORT',
      'HOST',
      'DOCKER_HOST',
      'CADDY_ADMIN_URL',
      'BLYTZ_CADDY_SERVER',
      'BLYTZ_CADDY_LISTEN',
      'BLYTZ_BASE_DOMAIN',
      'BLYTZ_PUBLIC_SCHEME',
      'BLYTZ_CUSTOMER_IMAGE',
      'BLYTZ_CONTAINER_PORT',
      'BLYTZ_PORT_RANGE',
      'BLYTZ_ADMIN_TOKEN',
      'BLYTZ_SECRET_KEY',
      'BLYTZ_WORKERS',
      'BLYTZ_RESYNC_SECONDS',
      'BLYTZ_ROUTE_SWEEP_SECONDS',
      'STRIPE_SECRET_KEY',
      'STRIPE_WEBHOOK_SECRET',
      'STRIPE_PRICE_ID',
      'STRIPE_API_BASE',
      'TELEGRAM_API_BASE',
      'BLYTZ_MAX_CUSTOMERS',
      'BLYTZ_TRUST_PROXY',
      'BLYTZ_RETENTION_DAYS',
      'BLYTZ_RUNTIME',
      'BLYTZ_SOURCE',
      'LOG_LEVEL',
    ];
    expect(names).toEqual(expect.arrayContaining(contract));
    for (const name of new Set([...names, ...contract])) expect(vars.has(name), name).toBe(true);
  });

  it('explains every variable with a comment above it', () => {
    const lines = read('.env.example').split('\n');
    lines.forEach((line, i) => {
      if (/^[A-Z][A-Z0-9_]*=/.test(line)) expect(lines[i - 1], line).toMatch(/^#/);
    });
  });

  it('is a valid configuration as it stands', () => {
    expect(() => loadConfig(Object.fromEntries(vars))).not.toThrow();
  });

  it('holds no secret', () => {
    for (const name of [
      'POSTGRES_PASSWORD',
      'BLYTZ_ADMIN_TOKEN',
      'BLYTZ_SECRET_KEY',
      'STRIPE_SECRET_KEY',
      'STRIPE_WEBHOOK_SECRET',
      'BLYTZ_ANTHROPIC_API_KEY',
      'BLYTZ_OPENAI_API_KEY',
    ]) {
      expect(vars.get(name), name).toBe('');
    }
    expect(vars.get('DATABASE_URL')).toBe('');
  });
});

describe('deploy/systemd/blytz.service', () => {
  const text = read('deploy/systemd/blytz.service');
  const sections = new Map<string, Array<[string, string]>>();
  let current = '';
  for (const line of text.split('\n')) {
    const section = /^\[(\w+)\]$/.exec(line);
    if (section) sections.set((current = section[1]!), []);
    else if (/^[A-Za-z]+=/.test(line))
      sections.get(current)!.push([line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]);
  }
  const service = sections.get('Service')!;
  const value = (key: string) => service.filter(([k]) => k === key).map(([, v]) => v);

  it('runs blytz serve as the blytz user, from an environment file, restarting on failure', () => {
    expect([...sections.keys()]).toEqual(['Unit', 'Service', 'Install']);
    expect(value('User')).toEqual(['blytz']);
    expect(value('SupplementaryGroups')).toEqual(['docker']);
    expect(value('EnvironmentFile')).toEqual(['/etc/blytz/blytz.env']);
    expect(value('ExecStart')).toEqual(['/opt/blytz/bin/blytz serve']);
    expect(value('Restart')).toEqual(['on-failure']);
  });

  it('is hardened, with only the data directory writable', () => {
    expect(value('NoNewPrivileges')).toEqual(['yes']);
    expect(value('ProtectSystem')).toEqual(['strict']);
    expect(value('Environment')).toEqual(['BLYTZ_DATA_DIR=/var/lib/blytz', `BLYTZ_MODEL_GATEWAY_LISTEN=${KIT_GATEWAY}`]);
    expect(value('ReadWritePaths')).toEqual(['/var/lib/blytz']);
    expect(value('StateDirectory')).toEqual(['blytz']);
    for (const key of ['ProtectHome', 'PrivateTmp', 'PrivateDevices', 'RestrictSUIDSGID', 'ProtectKernelModules']) {
      expect(value(key), key).toEqual(['yes']);
    }
    expect(value('CapabilityBoundingSet')).toEqual(['']);
    // V8's JIT needs W+X pages: this one would make node crash at start.
    expect(value('MemoryDenyWriteExecute')).toEqual([]);
  });
});

describe('the model gateway in the single-host kits (issue 23)', () => {
  const nft = read('deploy/host/blytz-tenants.nft');
  const systemdListen = /^Environment=BLYTZ_MODEL_GATEWAY_LISTEN=(.*)$/m.exec(read('deploy/systemd/blytz.service'))?.[1];
  const composeListen = String(env(blytz)['BLYTZ_MODEL_GATEWAY_LISTEN']);

  it('listens on docker0’s address in both kits and in .env.example (an empty line in the env file turns it off)', () => {
    // `${VAR-default}`, not `:-`: an operator's empty value means off, not the default.
    expect(composeListen).toBe(`\${BLYTZ_MODEL_GATEWAY_LISTEN-${KIT_GATEWAY}}`);
    expect(systemdListen).toBe(KIT_GATEWAY);
    expect(envExample().get('BLYTZ_MODEL_GATEWAY_LISTEN')).toBe(KIT_GATEWAY);
    // A host-only bridge's address (Docker's default 172.17.0.0/16), never every address or a public one.
    expect(KIT_GATEWAY).toMatch(/^172\.(1[6-9]|2\d|3[01])\.\d+\.\d+:\d+$/);
  });

  it('offers "Blytz default" with the platform key, and starts without it, not offering it', () => {
    const base = Object.fromEntries(envExample());
    expect(includedModelAccess(loadConfig(base))).toEqual({
      offered: false,
      reason: expect.stringContaining('no platform key') as string,
    });
    const keyed = loadConfig({ ...base, BLYTZ_ANTHROPIC_API_KEY: 'sk-ant-kit' });
    expect(keyed.BLYTZ_MODEL_GATEWAY_LISTEN).toBe(KIT_GATEWAY);
    expect(includedModelAccess(keyed)).toEqual({ offered: true });
  });

  it('opens exactly the gateway’s port to customer containers in the tenant ruleset, and to no other interface', () => {
    const set = /set customer_host_tcp_ports \{[^}]*?elements = \{ ([^}]*) \}/s.exec(nft)?.[1];
    expect(set?.split(',').map((p) => Number(p.trim()))).toEqual([Number(KIT_GATEWAY.split(':')[1])]);
    const input = nft.slice(nft.indexOf('chain input {'));
    const lines = input.split('\n').map((l) => l.trim());
    const keep = lines.findIndex((l) => l.startsWith('iifname != "lo" iifname != "bz-*" tcp dport @customer_host_tcp_ports drop'));
    const others = lines.findIndex((l) => l === 'iifname != "bz-*" accept');
    const customers = lines.findIndex((l) => l === 'tcp dport @customer_host_tcp_ports accept');
    // The port is dropped from elsewhere before anything else on the host is accepted, and
    // accepted from customer networks before their catch-all drop.
    expect(keep).toBeGreaterThan(-1);
    expect(keep).toBeLessThan(others);
    expect(customers).toBeGreaterThan(others);
    expect(customers).toBeLessThan(lines.findIndex((l) => l.startsWith('drop comment "customer to the host itself"')));
  });
});

describe('with the tools of this machine', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'blytz-deploy-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));
  const has = (cmd: string, ...args: string[]) => spawnSync(cmd, args, { stdio: 'ignore' }).status === 0;

  it('systemd-analyze verify accepts the unit, and its exposure score is low (when installed)', () => {
    if (!has('systemd-analyze', '--version')) return;
    // verify checks that ExecStart exists: point it at a binary this machine has.
    const unit = join(scratch, 'blytz.service');
    writeFileSync(unit, read('deploy/systemd/blytz.service').replace('/opt/blytz/bin/blytz serve', '/bin/true serve'));
    const verify = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    expect(verify.stderr + verify.stdout).toBe('');
    expect(verify.status).toBe(0);
    const security = spawnSync('systemd-analyze', ['security', '--offline=true', '--threshold=25', unit], { encoding: 'utf8' });
    expect(security.status, security.stdout.split('\n').slice(-3).join('\n')).toBe(0);
  });

  it('nft accepts the tenant ruleset in check mode, changing nothing (when nft is installed and may)', () => {
    if (!has('nft', '--version') || !has('nft', 'list', 'tables')) return;
    const check = spawnSync('nft', ['-c', '-f', join(ROOT, 'deploy/host/blytz-tenants.nft')], { encoding: 'utf8' });
    expect(check.stderr).toBe('');
    expect(check.status).toBe(0);
  });

  it('docker compose config accepts the compose file (when Compose is installed)', () => {
    const cli = has('docker', 'compose', 'version')
      ? ['docker', 'compose']
      : has('docker-compose', 'version')
        ? ['docker-compose']
        : undefined;
    if (!cli) return;
    const dir = join(scratch, 'compose');
    mkdirSync(join(dir, 'caddy'), { recursive: true });
    copyFileSync(join(ROOT, 'deploy/compose/docker-compose.yml'), join(dir, 'docker-compose.yml'));
    copyFileSync(join(ROOT, 'deploy/compose/caddy/bootstrap.json'), join(dir, 'caddy/bootstrap.json'));
    writeFileSync(join(dir, '.env'), `${read('.env.example')}\nPOSTGRES_PASSWORD=example\nDOCKER_GID=999\n`);
    const [cmd, ...args] = cli;
    const result = spawnSync(cmd!, [...args, '-f', join(dir, 'docker-compose.yml'), 'config', '--quiet'], {
      cwd: dir,
      encoding: 'utf8',
    });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    // Without the password it must refuse to start.
    writeFileSync(join(dir, '.env'), `${read('.env.example')}\nDOCKER_GID=999\n`);
    const refused = spawnSync(cmd!, [...args, '-f', join(dir, 'docker-compose.yml'), 'config', '--quiet'], {
      cwd: dir,
      encoding: 'utf8',
    });
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/POSTGRES_PASSWORD/);
  });
});
