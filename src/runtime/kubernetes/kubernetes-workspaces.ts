import type { Mount } from '../../workspace/workspace.js';
import type {
  ObservedWorkspace,
  RenderedWorkspace,
  TemplateManifest,
  WorkspaceInput,
  Workspaces,
} from '../../workspace/workspace.js';
import type { KubernetesRuntime } from './kubernetes-runtime.js';

/**
 * Workspaces for BLYTZ_RUNTIME=kubernetes: the controller still renders into its own folder
 * (the render marker beside it is what `observe` compares, with the Secret's presence), and every
 * write is also copied into the customer's Secret, which the running pod sees without a restart
 * (openclaw.json, which the pod's seed merges at start, through a new pod: KubernetesRuntime.writeFiles). The purge also deletes the
 * PVC (workspace and memory) and the Secret.
 */
export class KubernetesWorkspaces implements Workspaces {
  constructor(
    private readonly inner: Workspaces,
    private readonly runtime: Pick<KubernetesRuntime, 'writeFiles' | 'hasFiles' | 'removeWorkspace' | 'listVolumes'>,
  ) {}

  loadTemplate(name: string): Promise<TemplateManifest> {
    return this.inner.loadTemplate(name);
  }

  render(input: WorkspaceInput): Promise<RenderedWorkspace> {
    return this.inner.render(input);
  }

  /**
   * The controller's own render, current only while the customer's Secret is there too: the
   * pods read their files from it, and it is looked at here (by name) rather than listed.
   */
  async observe(customer: string): Promise<ObservedWorkspace> {
    const local = await this.inner.observe(customer);
    if (local.contentHash === undefined) return local;
    return (await this.runtime.hasFiles(customer)) ? local : { exists: true };
  }

  async write(customer: string, rendered: RenderedWorkspace): Promise<void> {
    await this.inner.write(customer, rendered);
    await this.runtime.writeFiles(
      customer,
      rendered.files.map((f) => ({ path: f.path, content: Buffer.from(f.content, 'utf8') })),
    );
  }

  async remove(customer: string): Promise<void> {
    await this.runtime.removeWorkspace(customer);
    await this.inner.remove(customer);
  }

  /** Customers with a local folder or a volume in the cluster. */
  async list(): Promise<string[]> {
    const [local, volumes] = await Promise.all([this.inner.list(), this.runtime.listVolumes()]);
    return [...new Set([...local, ...volumes])].sort();
  }

  mounts(customer: string, template: TemplateManifest): Mount[] {
    return this.inner.mounts(customer, template);
  }
}
