import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { canonicalJson } from '../domain/canonical-json.js';
import type { Customer } from '../domain/customer.js';
import { isConflict, isNotFound, JSON_PATCH, MERGE_PATCH, type KubeObject } from '../kube-api/client.js';
import type { Guard } from '../resilience/guard.js';
import { CUSTOMER_FINALIZER, CUSTOMER_GROUP, CUSTOMER_PLURAL, CUSTOMER_VERSION } from './crd.js';
import { crStatus, specProblemStatus, type CrStatus, type GenerationLink, type SpecProblem } from './customer-status.js';

/**
 * What the controller writes to Customer resources: its finalizer (added before the store learns
 * of a customer, removed once the teardown finished) and the status subresource (the store's
 * status, generations translated; or why the spec was not accepted). Every call goes through
 * the `kubernetes` guard; the object passed in is the last one seen, and each write is
 * conditional on it, so a write never undoes a change it did not see.
 */

/** What the source knows of one resource, and the writer reads. */
export interface ResourceView {
  object: KubeObject;
  link?: GenerationLink | undefined;
  problem?: SpecProblem | undefined;
}

export interface CustomerResourceWriterOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  guard: Guard;
}

export class CustomerResourceWriter {
  readonly #custom: CustomObjectsApi;
  readonly #namespace: string;
  readonly #guard: Guard;

  constructor(options: CustomerResourceWriterOptions) {
    this.#custom = options.kubeConfig.makeApiClient(CustomObjectsApi);
    this.#namespace = options.namespace;
    this.#guard = options.guard;
  }

  #ref(name: string) {
    return { group: CUSTOMER_GROUP, version: CUSTOMER_VERSION, namespace: this.#namespace, plural: CUSTOMER_PLURAL, name };
  }

  /** Adds our finalizer; the patched object, or undefined when the resource changed or went meanwhile. */
  async addFinalizer(name: string, object: KubeObject): Promise<KubeObject | undefined> {
    try {
      return (await this.#guard('addFinalizer', () =>
        this.#custom.patchNamespacedCustomObject(
          {
            ...this.#ref(name),
            // resourceVersion makes it conditional: a merge patch replaces the whole list.
            body: {
              metadata: {
                resourceVersion: object.metadata?.resourceVersion,
                finalizers: [...(object.metadata?.finalizers ?? []), CUSTOMER_FINALIZER],
              },
            },
          },
          MERGE_PATCH,
        ),
      )) as KubeObject;
    } catch (error) {
      if (isConflict(error) || isNotFound(error)) return undefined;
      throw error;
    }
  }

  /**
   * The status the resource should show: the store's (`customer`, undefined when the store has
   * none to show) with a spec problem added, keeping what `shown` (the status the resource shows)
   * says where nothing changed. Undefined when there is nothing to show.
   */
  desiredStatus(view: ResourceView, customer: Customer | undefined, shown: unknown): CrStatus | undefined {
    const previous = (shown ?? {}) as Record<string, unknown>;
    const crGeneration = Number(view.object.metadata?.generation ?? 1);
    let status = customer ? crStatus(customer, view.link, previous) : undefined;
    if (view.problem) status = specProblemStatus(status ?? {}, view.problem, crGeneration, previous);
    return status;
  }

  /** Writes `status` when the resource shows another (`shown`); true when a write was made. */
  async syncStatus(name: string, shown: unknown, status: CrStatus | undefined): Promise<boolean> {
    if (!status || canonicalJson(status) === canonicalJson(shown ?? {})) return false;
    try {
      await this.#guard('writeStatus', () =>
        this.#custom.patchNamespacedCustomObjectStatus(
          {
            ...this.#ref(name),
            // `add` replaces the member when present: stale fields do not linger as with a merge.
            body: [{ op: 'add', path: '/status', value: status }],
          },
          JSON_PATCH,
        ),
      );
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  /**
   * Removes our finalizer from a resource being deleted once the store says the teardown
   * finished (Terminated for the current generation, or the customer is gone). True when removed.
   */
  async releaseIfTornDown(name: string, object: KubeObject, customer: Customer | undefined): Promise<boolean> {
    const finalizers = object.metadata?.finalizers ?? [];
    if (!object.metadata?.deletionTimestamp || !finalizers.includes(CUSTOMER_FINALIZER)) return false;
    // An older Terminated (a previous cancel) says nothing about this one.
    if (customer && !(customer.status.phase === 'Terminated' && customer.status.observedGeneration === customer.generation))
      return false;
    try {
      await this.#guard('removeFinalizer', () =>
        this.#custom.patchNamespacedCustomObject(
          {
            ...this.#ref(name),
            // `test` first: another controller's finalizer added meanwhile is never dropped.
            body: [
              { op: 'test', path: '/metadata/finalizers', value: finalizers },
              { op: 'replace', path: '/metadata/finalizers', value: finalizers.filter((f) => f !== CUSTOMER_FINALIZER) },
            ],
          },
          JSON_PATCH,
        ),
      );
      return true;
    } catch (error) {
      // 404: already gone; 409/422: changed meanwhile, its next event brings us back here.
      if (isNotFound(error) || isConflict(error) || (error as { code?: unknown }).code === 422) return false;
      throw error;
    }
  }
}
