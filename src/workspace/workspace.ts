import type { Probes, TokenProbe } from '../domain/probes.js';
import type { ModelAccessFragment } from './model-access-config.js';

/**
 * A customer's workspace: `$BLYTZ_DATA_DIR/customers/<name>/`, rendered from
 * `templates/<template>/`. The controller imports only this file.
 */

/** A host folder or file the customer's container sees (the runtimes mount what `mounts` lists). */
export interface Mount {
  hostPath: string;
  containerPath: string;
  readOnly: boolean;
}

/** `templates/<name>/template.json`: how a template's container runs. */
export interface TemplateManifest {
  name: string;
  /** Image to run; absent means BLYTZ_CUSTOMER_IMAGE. */
  image?: string;
  /** Port the assistant listens on inside the container; absent means BLYTZ_CONTAINER_PORT. */
  containerPort?: number;
  /** `uid:gid` inside the container; workspace files are owned by it. */
  user: string;
  /** HTTP probes on the container port, each checking the body (see `Probes`). */
  probes: Probes;
  /**
   * How to see the running assistant has taken a configuration the controller wrote (its gateway
   * token in force). A warm pool slot bound to a customer is Ready only once it shows this; a
   * template without it (an assistant that reads its files as they are) needs no such wait.
   */
  configProbe?: TokenProbe;
  /** Writable tmpfs folders in an otherwise read-only root (where the assistant writes outside its state). */
  tmpfs: string[];
  /** Where the customer folder is mounted in the container. */
  mountPath: string;
  /** How long a new container may take to become healthy before it counts as failed. */
  startTimeoutSeconds: number;
  updateStrategy: 'recreate' | 'blueGreen';
  /** Plain, non-secret environment for the container. */
  env: Record<string, string>;
}

export interface WorkspaceInput {
  customer: string;
  email: string;
  displayName: string;
  instructions: string;
  plan: string;
  template: string;
  modelProvider?: string | undefined;
  /** Origins the customer's Control UI is opened from (`https://<name>.<base>`, with a port if not the default). */
  publicOrigins: string[];
  /** Where requests from the proxy (Caddy) reach the assistant from: OpenClaw's trusted proxies. */
  trustedProxies: string[];
  /** Telegram Bot API root, when not Telegram's own (tests, self-hosted Bot API servers). */
  telegramApiRoot?: string | undefined;
  /** Included model access through the control plane's model gateway (customers without their own key). */
  modelAccess?: ModelAccessFragment | undefined;
  secrets: {
    telegramBotToken?: string | undefined;
    modelApiKey?: string | undefined;
    /** Per-customer OpenClaw gateway token: generated once, stable across recreates. */
    gatewayToken: string;
  };
}

export interface RenderedFile {
  /** Relative POSIX path inside the customer folder. */
  path: string;
  content: string;
  /** Secret files are written 0600. */
  secret: boolean;
  /**
   * The file is shared with the assistant, which writes it too (openclaw.json): `content` holds
   * only the controller's fields, and writing merges them into what is on disk, keeping the rest.
   */
  merge?: 'openclaw-config';
}

export interface RenderedWorkspace {
  template: TemplateManifest;
  files: RenderedFile[];
  /** Hash of every rendered file: the workspace is current when the folder's marker equals it. */
  contentHash: string;
}

export interface ObservedWorkspace {
  exists: boolean;
  /** contentHash of the last complete render, read from the folder's marker file. */
  contentHash?: string;
}

export interface Workspaces {
  loadTemplate(name: string): Promise<TemplateManifest>;
  /** Pure rendering: the same input gives the same bytes. */
  render(input: WorkspaceInput): Promise<RenderedWorkspace>;
  observe(customer: string): Promise<ObservedWorkspace>;
  /** Atomic per file (temp + rename); files the assistant wrote itself (memory) are kept. */
  write(customer: string, rendered: RenderedWorkspace): Promise<void>;
  /** Deletes the customer folder (purge after retention). */
  remove(customer: string): Promise<void>;
  /** Customers that have a folder (for purge and orphan checks). */
  list(): Promise<string[]>;
  /** The mounts that give the container its state folder (workspace and openclaw.json). */
  mounts(customer: string, template: TemplateManifest): Mount[];
}
