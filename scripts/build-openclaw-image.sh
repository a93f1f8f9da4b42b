#!/usr/bin/env bash
# Builds ghcr.io/openclaw/openclaw:<pinned> (the upstream tag, so the same name pulls in
# production) from the npm package, without any image registry: a root folder holding Node 24,
# the shared libraries it and the package's native addons need, the installed package and
# busybox for a shell, imported with `docker import`. Non-root (1000:1000), HOME=/home/node,
# `openclaw gateway run` as its command, like the upstream image.
#
# The version comes from src/domain/openclaw.ts (the one place it is written). The package is
# installed once into .tools/openclaw/<version>/; the image is rebuilt only when its inputs
# change (it carries their hash as a label).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=$(sed -n "s/^export const OPENCLAW_VERSION = '\([^']*\)';$/\1/p" src/domain/openclaw.ts)
[ -n "$VERSION" ] || { echo "build-openclaw-image: no OPENCLAW_VERSION in src/domain/openclaw.ts" >&2; exit 1; }
IMAGE=${1:-ghcr.io/openclaw/openclaw:$VERSION}
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "build-openclaw-image: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
scripts/ensure-node.sh
NODE=$(readlink -f .tools/bin/node)
PKG=.tools/openclaw/$VERSION

if [ ! -x "$PKG/node_modules/.bin/openclaw" ]; then
  echo "[openclaw] npm install openclaw@$VERSION (about 650 MB, a minute)" >&2
  rm -rf "$PKG.partial" && mkdir -p "$PKG.partial"
  printf '{"name":"openclaw-image","private":true}\n' > "$PKG.partial/package.json"
  PATH="$(dirname "$NODE"):$PATH" npm install --prefix "$PKG.partial" --no-audit --no-fund --loglevel=error \
    --omit=dev "openclaw@$VERSION" >&2
  rm -rf "$PKG" && mv "$PKG.partial" "$PKG"
fi

inputs_hash=$( (echo "$VERSION"; sha256sum "$NODE" "$BUSYBOX" scripts/build-openclaw-image.sh; \
  cat "$PKG/node_modules/.package-lock.json") | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{ index .Config.Labels "cloud.blytz.image-hash" }}' "$IMAGE" 2>/dev/null || true)
if [ "$current" = "$inputs_hash" ]; then
  echo "[openclaw] $IMAGE up to date" >&2
  exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
mkdir -p "$root"/{bin,usr/bin,usr/local/bin,etc,tmp,opt/openclaw,home/node/.openclaw,home/node/.cache}
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
ln -s /bin/env "$root/usr/bin/env" # the package's bin scripts start with #!/usr/bin/env node
cp "$NODE" "$root/usr/local/bin/node"

# The dynamic loader and every library Node and the package's native addons link against (musl
# builds are skipped: they are for Alpine and never load here).
libs=$( { ldd "$NODE"; find "$PKG/node_modules" -name '*.node' -path '*linux*' ! -path '*musl*' -exec ldd {} \; 2>/dev/null; } |
  awk '/=> \// {print $3} /^[[:space:]]*\/lib/ {print $1}' | sort -u)
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

cp -a "$PKG/node_modules" "$root/opt/openclaw/node_modules"
cat > "$root/usr/local/bin/openclaw" <<'SH'
#!/bin/sh
exec /usr/local/bin/node /opt/openclaw/node_modules/openclaw/openclaw.mjs "$@"
SH
chmod 0755 "$root/usr/local/bin/openclaw"
printf 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\nnode:x:1000:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
chown -R 1000:1000 "$root/home/node"

tar -C "$root" -c . | docker import \
  --change 'USER 1000:1000' \
  --change 'ENV HOME=/home/node PATH=/usr/local/bin:/usr/bin:/bin NODE_ENV=production' \
  --change 'WORKDIR /home/node' \
  --change 'EXPOSE 18789' \
  --change "LABEL cloud.blytz.image-hash=$inputs_hash org.opencontainers.image.version=$VERSION" \
  --change 'CMD ["openclaw", "gateway", "run"]' \
  - "$IMAGE" >/dev/null
# A smoke test: the binary, its libraries and the package load inside the image.
docker run --rm --network none "$IMAGE" openclaw --version >/dev/null ||
  { echo "build-openclaw-image: $IMAGE does not run 'openclaw --version'" >&2; docker image rm "$IMAGE" >/dev/null; exit 1; }
echo "[openclaw] built $IMAGE" >&2
