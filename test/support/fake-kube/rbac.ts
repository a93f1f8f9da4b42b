import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

/**
 * RBAC as kube-apiserver's authorizer applies it, for the fake API server: a request is allowed
 * when a rule of a Role bound to its user in the request's namespace (or of a ClusterRole bound
 * anywhere it applies) names its API group, resource (with subresource), verb and, where the rule
 * lists resourceNames, its object. Everything else is 403 Forbidden with the real server's
 * message. No rule means no access: there are no implicit grants beyond discovery.
 *
 * Request attributes follow the apiserver's mapping of HTTP to verbs: GET of one object `get`,
 * of a collection `list` (`watch` with ?watch=true), POST `create`, PUT `update`, PATCH `patch`,
 * DELETE `delete` (`deletecollection` on a collection). A WebSocket upgrade to pods/exec is a GET,
 * so `get`, and since Kubernetes 1.35 (AuthorizePodWebsocketUpgradeCreatePermission) also needs
 * `create`: the fake asks for both.
 */

type Json = Record<string, unknown>;

export interface RequestAttributes {
  verb: string;
  /** '' for the core group. */
  group: string;
  resource: string;
  subresource?: string | undefined;
  name?: string | undefined;
  /** Undefined for cluster-scoped requests (and lists across all namespaces). */
  namespace?: string | undefined;
}

interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames: string[];
}

interface Grant {
  /** Undefined: every namespace (a ClusterRoleBinding). */
  namespace: string | undefined;
  rules: PolicyRule[];
}

/** The user name a service account's token authenticates as. */
export function serviceAccountUser(namespace: string, name: string): string {
  return `system:serviceaccount:${namespace}:${name}`;
}

export class RbacAuthorizer {
  readonly #roles = new Map<string, PolicyRule[]>(); // `${namespace}/${name}`
  readonly #clusterRoles = new Map<string, PolicyRule[]>();
  readonly #bindings: Array<{ namespace: string | undefined; roleKind: string; roleName: string; users: string[] }> = [];

  /**
   * Installs Roles, RoleBindings, ClusterRoles and ClusterRoleBindings (as `kubectl apply -n
   * namespace -f` would: namespaced objects without a namespace land in `namespace`, and a
   * ServiceAccount subject without one means the binding's).
   */
  install(objects: readonly Json[], namespace: string): void {
    for (const object of objects) {
      const metadata = (object['metadata'] as Json | undefined) ?? {};
      const name = String(metadata['name'] ?? '');
      const objectNamespace = typeof metadata['namespace'] === 'string' ? metadata['namespace'] : namespace;
      switch (object['kind']) {
        case 'Role':
          this.#roles.set(`${objectNamespace}/${name}`, rulesOf(object));
          break;
        case 'ClusterRole':
          this.#clusterRoles.set(name, rulesOf(object));
          break;
        case 'RoleBinding':
        case 'ClusterRoleBinding': {
          const cluster = object['kind'] === 'ClusterRoleBinding';
          const roleRef = (object['roleRef'] as Json | undefined) ?? {};
          const users = ((object['subjects'] as Json[] | undefined) ?? []).flatMap((subject) => {
            if (subject['kind'] === 'ServiceAccount') {
              const saNamespace = typeof subject['namespace'] === 'string' ? subject['namespace'] : objectNamespace;
              return [serviceAccountUser(saNamespace, String(subject['name']))];
            }
            return subject['kind'] === 'User' ? [String(subject['name'])] : [];
          });
          this.#bindings.push({
            namespace: cluster ? undefined : objectNamespace,
            roleKind: String(roleRef['kind']),
            roleName: String(roleRef['name']),
            users,
          });
          break;
        }
      }
    }
  }

  allows(user: string, request: RequestAttributes): boolean {
    return this.#grants(user).some(
      (grant) =>
        (grant.namespace === undefined || grant.namespace === request.namespace) &&
        grant.rules.some((rule) => ruleAllows(rule, request)),
    );
  }

  #grants(user: string): Grant[] {
    return this.#bindings
      .filter((binding) => binding.users.includes(user))
      .map((binding) => ({
        namespace: binding.namespace,
        rules:
          (binding.roleKind === 'Role'
            ? this.#roles.get(`${binding.namespace ?? ''}/${binding.roleName}`)
            : this.#clusterRoles.get(binding.roleName)) ?? [],
      }));
  }
}

function rulesOf(role: Json): PolicyRule[] {
  return ((role['rules'] as Json[] | undefined) ?? []).map((rule) => ({
    apiGroups: strings(rule['apiGroups']),
    resources: strings(rule['resources']),
    verbs: strings(rule['verbs']),
    resourceNames: strings(rule['resourceNames']),
  }));
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.map(String) : [];
}

function ruleAllows(rule: PolicyRule, request: RequestAttributes): boolean {
  const resource = request.subresource ? `${request.resource}/${request.subresource}` : request.resource;
  const matches = (list: string[], value: string) => list.includes('*') || list.includes(value);
  if (!matches(rule.apiGroups, request.group) || !matches(rule.verbs, request.verb)) return false;
  if (!matches(rule.resources, resource) && !(request.subresource && rule.resources.includes(`${request.resource}/*`)))
    return false;
  // resourceNames narrow to named objects: never a create, nor a list or watch of everything.
  if (rule.resourceNames.length === 0) return true;
  return request.name !== undefined && rule.resourceNames.includes(request.name);
}

/** kube-apiserver's message for a refused request, e.g. `secrets is forbidden: User "..." cannot list resource "secrets" in API group "" in the namespace "ns"`. */
export function forbiddenMessage(user: string, request: RequestAttributes): string {
  const qualified = request.group ? `${request.resource}.${request.group}` : request.resource;
  const subject = request.name !== undefined ? `${qualified} "${request.name}"` : qualified;
  const resource = request.subresource ? `${request.resource}/${request.subresource}` : request.resource;
  const scope = request.namespace !== undefined ? `in the namespace "${request.namespace}"` : 'at the cluster scope';
  return `${subject} is forbidden: User "${user}" cannot ${request.verb} resource "${resource}" in API group "${request.group}" ${scope}`;
}

/** The kit's Role, RoleBinding and ClusterRoles (deploy/kubernetes/rbac.yaml). */
export function kitRbac(): Json[] {
  const file = join(import.meta.dirname, '..', '..', '..', 'deploy', 'kubernetes', 'rbac.yaml');
  return parseAllDocuments(readFileSync(file, 'utf8'))
    .map((doc) => doc.toJS() as Json | null)
    .filter((doc): doc is Json => doc !== null);
}

/** The service account the kit's controller runs as (deploy/kubernetes/serviceaccount.yaml). */
export const KIT_SERVICE_ACCOUNT = 'blytz-controller';
