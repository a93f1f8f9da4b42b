import { stringify } from 'yaml';
import { customerCrd } from './crd.js';

export { customerCrd };

/** The CRD as the YAML file under deploy/kubernetes/ (generated; see scripts/gen-crd.mjs). */
export function crdYaml(): string {
  const header = '# Generated from src/domain/customer.ts by scripts/gen-crd.mjs: do not edit by hand.\n';
  return header + stringify(customerCrd(), { lineWidth: 0 });
}
