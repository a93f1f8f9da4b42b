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
