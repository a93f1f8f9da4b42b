#!/usr/bin/env bash
# Builds blytz/assistant-stub:dev, the local stand-in for the OpenClaw image (no registry here).
# It is busybox only: `httpd` serves the mounted workspace folder on the container port, so
# GET /AGENTS.md shows the rendered file, and a stand-in `openclaw` command records pairing
# approvals. Rebuilt only when its inputs change (the image carries their hash as a label).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-blytz/assistant-stub:dev}
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "build-test-image: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }

inputs_hash=$( (sha256sum "$BUSYBOX" test/image/openclaw-stub.sh test/image/stub-start.sh test/image/stub-front.sh scripts/build-test-image.sh) | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{ index .Config.Labels "cloud.blytz.stub-hash" }}' "$IMAGE" 2>/dev/null || true)
if [ "$current" = "$inputs_hash" ]; then
  echo "[image] $IMAGE up to date" >&2
  exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
mkdir -p "$root"/{bin,etc,tmp,home/node/.openclaw/workspace}
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
install -m 0755 test/image/openclaw-stub.sh "$root/bin/openclaw"
install -m 0755 test/image/stub-start.sh "$root/bin/stub-start"
install -m 0755 test/image/stub-front.sh "$root/bin/stub-front"
printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\n' > "$root/etc/group"
chown -R 1000:1000 "$root/home/node"

# PORT lets a test run a second instance on another port; stub-start serves the probes and the workspace.
tar -C "$root" -c . | docker import \
  --change 'USER 1000:1000' \
  --change 'ENV PORT=18789 OPENCLAW_HOME=/home/node/.openclaw' \
  --change 'EXPOSE 18789' \
  --change 'WORKDIR /home/node' \
  --change "LABEL cloud.blytz.stub-hash=$inputs_hash" \
  --change 'CMD ["/bin/stub-start"]' \
  - "$IMAGE" >/dev/null
echo "[image] built $IMAGE" >&2
