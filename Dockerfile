# syntax=docker/dockerfile:1
# The Blytz control plane image (`blytz serve` by default). Used by deploy/compose/; see
# docs/deploy.md. Build from the project root:  docker build -t blytz/control-plane:local .

ARG NODE_IMAGE=node:24-bookworm-slim

# 1. Build: every dependency (TypeScript included), then compile src/ into dist/.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

# 2. Production dependencies only (no TypeScript, vitest, eslint, ...).
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force

# 3. Runtime: compiled code, production node_modules, templates; runs as a non-root user.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    BLYTZ_DATA_DIR=/var/lib/blytz \
    HOST=0.0.0.0 \
    PORT=8080
# uid:gid 1000:1000 on purpose: customer workspace files must belong to the template's
# container user (templates/personal-assistant/template.json, "user": "1000:1000"), and blytz
# only chowns when it runs as root. The node image's own `node` user is 1000:1000: rename it.
RUN groupmod --new-name blytz node \
 && usermod --login blytz --home /var/lib/blytz node \
 && mkdir -p /var/lib/blytz \
 && chown blytz:blytz /var/lib/blytz \
 && chmod 0700 /var/lib/blytz
WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY templates ./templates
RUN ln -s /app/bin/blytz /usr/local/bin/blytz
USER blytz:blytz
EXPOSE 8080
# /healthz answers 200 while the process serves. HOST may be 127.0.0.1 (host network) or
# 0.0.0.0; either way the loopback reaches it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
# --max-semi-space-size=16: V8's young generation capped at 2 x 16 MiB, as bin/blytz says why.
ENTRYPOINT ["node", "--enable-source-maps", "--max-semi-space-size=16", "/app/dist/cli/main.js"]
CMD ["serve"]
