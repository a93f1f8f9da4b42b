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
 * (the render marker there is what `observe` compares), and every write is also copied into the
 * customer's Secret, which the running pod sees without a restart. The purge also deletes the
 * PVC (workspace and memory) and the Secret.
 */
export class KubernetesWorkspaces implements Workspaces {
  constructor(
    private readonly inner: Workspaces,
    private readonly runtime: Pick<KubernetesRuntime, 'writeFiles' | 'removeWorkspace' | 'listVolumes'>,
  ) {}

  loadTemplate(name: string): Promise<TemplateManifest> {
    return this.inner.loadTemplate(name);
  }

  render(input: WorkspaceInput): Promise<RenderedWorkspace> {
    return this.inner.render(input);
  }

  observe(customer: string): Promise<ObservedWorkspace> {
    return this.inner.observe(customer);
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
