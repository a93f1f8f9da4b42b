import { readFileSync } from 'node:fs';
import {
  KubeConfig,
  Observable,
  PatchStrategy,
  setHeaderOptions,
  type ConfigurationOptions,
  type RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';
import { httpStatusOf } from '../resilience/transient.js';

/** Shared bits of talking to the Kubernetes API with @kubernetes/client-node. */

const SERVICE_ACCOUNT_NAMESPACE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/** In a pod: the service account's cluster config; elsewhere: $KUBECONFIG or ~/.kube/config. */
export function loadKubeConfig(env: NodeJS.ProcessEnv = process.env): KubeConfig {
  const kc = new KubeConfig();
  if (env['KUBERNETES_SERVICE_HOST']) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

/**
 * The namespace to work in: $BLYTZ_NAMESPACE (read by main, passed here as `explicit`), else the
 * pod's own namespace, else the kubeconfig context's, else `default`.
 */
export function currentNamespace(kc: KubeConfig, explicit?: string): string {
  if (explicit) return explicit;
  try {
    const fromPod = readFileSync(SERVICE_ACCOUNT_NAMESPACE, 'utf8').trim();
    if (fromPod) return fromPod;
  } catch {
    // not in a pod
  }
  const context = kc.getContextObject(kc.getCurrentContext());
  return context?.namespace ?? 'default';
}

/** Patch options for the generated clients, whose own default Content-Type is JSON patch. */
export const MERGE_PATCH: ConfigurationOptions = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
export const JSON_PATCH: ConfigurationOptions = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

/**
 * Options that abort a generated client call with `signal`: client-node's calls take no signal
 * themselves, and a call that nothing cuts off can hang for as long as its TCP connection lives.
 */
export function withSignal(signal: AbortSignal, options: ConfigurationOptions = {}): ConfigurationOptions {
  const middleware = {
    pre: (context: RequestContext) => {
      context.setSignal(signal);
      return new Observable(Promise.resolve(context));
    },
    post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
  };
  return { ...options, middleware: [...(options.middleware ?? []), middleware], middlewareMergeStrategy: 'append' };
}

export function isNotFound(error: unknown): boolean {
  return httpStatusOf(error) === 404;
}

export function isConflict(error: unknown): boolean {
  return httpStatusOf(error) === 409;
}

export function isGone(error: unknown): boolean {
  return httpStatusOf(error) === 410;
}

/** The short message of an API error (its Status.message when the server sent one). */
export function apiMessage(error: unknown): string {
  const body = (error as { body?: unknown }).body;
  if (typeof body === 'string') {
    try {
      const parsed = JSON.parse(body) as { message?: unknown };
      if (typeof parsed.message === 'string') return parsed.message;
    } catch {
      // not JSON
    }
  } else if (body && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string') {
    return (body as { message: string }).message;
  }
  return error instanceof Error ? error.message : String(error);
}

/** A minimal view of any Kubernetes object. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    deletionTimestamp?: string | Date;
    creationTimestamp?: string | Date;
  };
  spec?: unknown;
  status?: unknown;
}
