import type { EventSource, WorldEventSink } from './event-source.js';
import type { ChangeFeed } from '../store/change-feed.js';

/**
 * The store's change feed as an EventSource: a changed customer is enqueued at live priority;
 * a gap (the LISTEN connection was lost and restored) means notifications may be missing, so
 * everything is resynced.
 */
export function changeFeedSource(feed: ChangeFeed): EventSource {
  return {
    start: (sink: WorldEventSink) =>
      feed.start({
        onChange: (name) => sink.enqueue(name),
        onGap: (reason) => sink.resync(reason),
      }),
    stop: () => feed.stop(),
  };
}
