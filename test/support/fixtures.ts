import { randomBytes } from 'node:crypto';
import { customerSpecSchema, type CustomerSpecInput, type DesiredCustomer } from '../../src/domain/customer.js';
import { SecretBox } from '../../src/store/secret-box.js';

export const TEST_BOT_TOKEN = '123456789:AAbbccddeeffgghhiijjkkllmmnnooppqqr';

export function testSecretBox(): SecretBox {
  return new SecretBox(randomBytes(32));
}

/** A unique customer name, so parallel test files never share containers, routes or rows. */
export function uniqueName(prefix = 't'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

export function desiredCustomer(name: string, spec: Partial<CustomerSpecInput> = {}, labels: Record<string, string> = {}): DesiredCustomer {
  return {
    name,
    labels,
    spec: customerSpecSchema.parse({
      email: `${name}@example.com`,
      displayName: 'Ada',
      instructions: 'I am a freelance developer.\n- keep my calendar\n- summarise email',
      ...spec,
    }),
  };
}

/** The probes the templates declare, which the stand-in image answers like the OpenClaw gateway. */
export const STUB_PROBES = {
  startup: { path: '/startupz', expect: { ok: true, status: 'started' } },
  liveness: { path: '/healthz', expect: { ok: true, status: 'live' } },
  readiness: { path: '/readyz', expect: { ready: true } },
} as const satisfies import('../../src/domain/probes.js').Probes;

/** What a ContainerSpec needs for health: the stub's probes, a start timeout, and /tmp writable. */
export function stubHealth(startTimeoutSeconds = 30): {
  probes: import('../../src/domain/probes.js').Probes;
  startTimeoutSeconds: number;
  tmpfs: string[];
} {
  return { probes: structuredClone(STUB_PROBES) as import('../../src/domain/probes.js').Probes, startTimeoutSeconds, tmpfs: ['/tmp'] };
}

/** DesiredDefaults as `blytz serve` builds them, for tests that make a reconciler by hand. */
export function testDesiredDefaults(
  overrides: Partial<import('../../src/controller/customer/desired.js').DesiredDefaults> = {},
): import('../../src/controller/customer/desired.js').DesiredDefaults {
  return {
    baseDomain: 'blytz.localhost',
    customerImage: 'blytz/assistant-stub:dev',
    containerPort: 18789,
    publicOrigins: (host) => [`https://${host}`],
    trustedProxies: ['172.17.0.1'],
    ...overrides,
  };
}
