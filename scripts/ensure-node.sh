#!/usr/bin/env bash
# Makes .tools/bin/node a Node 24 LTS: the system's when it already is 24, otherwise the `node@24`
# package from the npm registry (it ships the binary). Every make target puts .tools/bin first
# on PATH, so npm, tsc and vitest all run on it.
set -euo pipefail
cd "$(dirname "$0")/.."
WANT=24
mkdir -p .tools/bin
have() { "$1" -e "process.exit(process.versions.node.split('.')[0] === '$WANT' ? 0 : 1)" 2>/dev/null; }
if [ -x .tools/bin/node ] && have .tools/bin/node; then exit 0; fi
if command -v node >/dev/null && have "$(command -v node)"; then
  ln -sf "$(command -v node)" .tools/bin/node
else
  command -v npm >/dev/null || { echo "ensure-node: npm is needed to fetch Node $WANT (apt-get install npm)" >&2; exit 1; }
  echo "[node] installing Node $WANT into .tools (system node: $(node --version 2>/dev/null || echo none))" >&2
  npm install --no-audit --no-fund --silent --prefix .tools "node@$WANT" >/dev/null
  ln -sf ../node_modules/node/bin/node .tools/bin/node
fi
# npm and npx run on whatever `node` is first on PATH.
for tool in npm npx; do
  if [ ! -e ".tools/bin/$tool" ] && command -v "$tool" >/dev/null; then ln -sf "$(command -v $tool)" ".tools/bin/$tool"; fi
done
have .tools/bin/node || { echo "ensure-node: .tools/bin/node is not Node $WANT" >&2; exit 1; }
