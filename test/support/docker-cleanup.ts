import type Docker from 'dockerode';

/**
 * Removes what a test made on the shared engine under its instance label: containers first, then
 * the per-customer networks (runtime/docker/networks.ts), which Docker keeps until removed. Only
 * objects with this label: other engineers' tests share the engine.
 */
export async function removeInstanceObjects(docker: Docker, label: string, value: string): Promise<void> {
  const filters = { label: [`${label}=${value}`] };
  const containers = await docker.listContainers({ all: true, filters });
  await Promise.all(
    containers.map((c) =>
      docker
        .getContainer(c.Id)
        .remove({ force: true })
        .catch(() => {}),
    ),
  );
  const networks = await docker.listNetworks({ filters });
  await Promise.all(
    networks.map((n) =>
      docker
        .getNetwork(n.Id)
        .remove()
        .catch(() => {}),
    ),
  );
}
