#!/bin/sh
# Entry point of the stand-in customer image. Like the OpenClaw gateway, it answers the probes
# the templates declare with the same JSON bodies (/healthz, /startupz, /readyz); unlike it, it
# serves the customer's workspace folder, so GET /AGENTS.md shows the rendered file. busybox
# httpd serves one folder, so the probe answers and links to the workspace's entries share a
# folder on the tmpfs at /tmp (the root is read-only); links for new entries are added every second.
# Each connection goes through stub-front, which answers /readyz with OpenClaw's details for a
# caller holding the gateway token in force, and hands every other request to httpd.
home=${OPENCLAW_HOME:-/home/node/.openclaw}
ws=$home/workspace
www=/tmp/www
if ! mkdir -p "$www" 2>/dev/null; then
  echo "stub: /tmp is not writable; serving the workspace only (no probe answers)" >&2
  exec httpd -f -p "$PORT" -h "$ws"
fi
printf '{"ok":true,"status":"live"}' > "$www/healthz"
printf '{"ok":true,"status":"started"}' > "$www/startupz"
printf '{"ready":true}' > "$www/readyz"
date +%s > /tmp/stub-started
link() {
  for f in "$ws"/* "$ws"/.[!.]*; do
    [ -e "$f" ] || continue
    name=${f##*/}
    [ -e "$www/$name" ] || [ -L "$www/$name" ] || ln -s "$f" "$www/$name"
  done
}
link
(while sleep 1; do link; done) &
# A graceful stop, as the gateway's (a Node server closes and lets the requests in flight finish):
# on SIGTERM stop accepting, then wait for every connection's handler (stub-front, then the httpd
# it becomes) to finish. Exiting at once would kill them with the container, and a request Caddy
# sent just before a route switch would end as a 502.
STUB_WWW=$www nc -ll -p "$PORT" -e /bin/stub-front &
listener=$!
in_flight() { ps | grep -v grep | grep -qE 'stub-front|httpd -i'; }
trap 'kill "$listener" 2>/dev/null; while in_flight; do sleep 0.1; done; exit 0' TERM
wait "$listener"
