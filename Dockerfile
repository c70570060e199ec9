# matrix-interop-bridge container image.
# Node 24 LTS: the tested runtime (CI runs every test on 24; scripts/node.sh pins the same major).
# Build stage: the same steps CI runs (npm ci, then the TypeScript build).
FROM node:24-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
COPY stubs ./stubs
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev

# Runtime stage: production dependencies, the build, ffmpeg for media, a non-root user.
FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 1337 --home-dir /data --shell /usr/sbin/nologin bridge \
 && mkdir -p /data && chown bridge /data
WORKDIR /opt/matrix-interop-bridge
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/config ./config
COPY docker/run.sh ./run.sh
ENV NODE_ENV=production
VOLUME /data
# 29400: appservice (homeserver → bridge) and provisioning API; 29401: the encrypted media the bridge hosts;
# 29402: /metrics, /health and /ready (bound to 127.0.0.1 unless metrics.hostname says otherwise).
EXPOSE 29400 29401 29402
USER bridge
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/matrix-interop-bridge/run.sh"]
