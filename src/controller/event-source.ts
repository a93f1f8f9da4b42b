/**
 * The controller's contract with whatever tells it where to look: the store's change feed, the
 * Docker event stream, the route sweep, the Kubernetes watches. A source reports only *which*
 * customer to look at again (or that it may have missed some: look at everything), never what
 * changed, so its events are hints, never trusted as state. Adapters implement this file's
 * interfaces; it imports nothing, so depending on it pulls in nothing of the controller.
 */

/** What a source calls: look at this customer again, or at every customer. */
export interface WorldEventSink {
  enqueue(name: string): void;
  /** Events may have been missed: look at everything. */
  resync(reason: string): void;
}

/** Started and stopped with the controller; between the two it calls its sink. */
export interface EventSource {
  start(sink: WorldEventSink): Promise<void>;
  stop(): Promise<void>;
}
