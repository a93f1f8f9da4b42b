import type { EventSource, WorldEventSink } from '../event-source.js';

/**
 * Wraps an event source so that every customer it reports first loses its cached full-pass
 * entry: the reconcile it triggers must observe the world as it is after the event.
 */
export function invalidating(source: EventSource, invalidate: (customer: string) => void): EventSource {
  return {
    start: (sink: WorldEventSink) =>
      source.start({
        enqueue: (customer) => {
          invalidate(customer);
          sink.enqueue(customer);
        },
        resync: (reason) => sink.resync(reason),
      }),
    stop: () => source.stop(),
  };
}
