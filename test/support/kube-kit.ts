import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAllYaml, type V1NetworkPolicy } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import type { LooseObject } from './fake-kube-api.js';

/**
 * The shipped Kubernetes kit (deploy/kubernetes) as tests run it: the controller's user and
 * environment from its Deployment, and the kit's NetworkPolicies, read from the files themselves
 * so a test runs what the kit ships, not a copy of it.
 */
const KIT = join(import.meta.dirname, '..', '..', 'deploy', 'kubernetes');

function controllerPod(): LooseObject {
  const [deployment] = parseAllDocuments(readFileSync(join(KIT, 'deployment.yaml'), 'utf8'))
    .map((d) => d.toJS() as LooseObject)
    .filter((o) => o?.['kind'] === 'Deployment');
  return deployment?.['spec']['template']['spec'] as LooseObject;
}

/** The user the kit's controller runs as (its pod's securityContext). */
export function kitUser(): { uid: number; gid: number } {
  const security = controllerPod()['securityContext'] as LooseObject;
  return { uid: Number(security['runAsUser']), gid: Number(security['runAsGroup']) };
}

/**
 * The kit controller's environment: its literal values, without the secrets it reads from files
 * (`*_FILE`) and without `skip` (what a test points elsewhere, such as its own Caddy).
 */
export function kitEnv(skip: readonly string[] = []): Record<string, string> {
  const env = controllerPod()['containers'][0]['env'] as LooseObject[];
  return Object.fromEntries(
    env
      .filter((e) => typeof e['value'] === 'string' && !String(e['name']).endsWith('_FILE') && !skip.includes(String(e['name'])))
      .map((e) => [String(e['name']), String(e['value'])]),
  );
}

/** The kit's NetworkPolicies (Caddy's, the controller's), read as kubectl reads them (client-node's model: `from` is `_from`). */
export function kitNetworkPolicies(): V1NetworkPolicy[] {
  return ['caddy.yaml', 'networkpolicy.yaml']
    .flatMap((file) => loadAllYaml(readFileSync(join(KIT, file), 'utf8')) as Array<{ kind?: string }>)
    .filter((o): o is V1NetworkPolicy => o.kind === 'NetworkPolicy');
}

/** The kit's pod labels of one component (`controller`, `caddy`), as its Deployments set them. */
export function kitLabels(component: 'controller' | 'caddy'): Record<string, string> {
  return { 'app.kubernetes.io/name': 'blytz', 'app.kubernetes.io/component': component };
}
