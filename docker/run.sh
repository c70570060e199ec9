#!/bin/sh
# Container entry point. /data holds config.yaml, registration.yaml and the database.
# First start without a config: write the sample and explain; with a config but no
# registration: generate it and explain; otherwise run the bridge.
set -eu
cd /data
APP=/opt/matrix-interop-bridge
if [ ! -f /data/config.yaml ]; then
  cp "$APP/config/config.sample.yaml" /data/config.yaml
  sed -i 's#path: ./bridge.db#path: /data/bridge.db#' /data/config.yaml
  cat <<MSG
No config found: a sample was written to /data/config.yaml.
Edit at least homeserver.url, homeserver.domain, network.gateway_url, network.provider_secret,
network.store_key and network.media.public_url, then start the container again.
MSG
  exit 0
fi
if [ ! -f /data/registration.yaml ]; then
  node "$APP/dist/src/cli.js" -r -u "${BRIDGE_URL:-http://$(hostname):29400}" -c /data/config.yaml -f /data/registration.yaml
  cat <<MSG
A registration was written to /data/registration.yaml (appservice URL ${BRIDGE_URL:-http://$(hostname):29400};
set BRIDGE_URL to change it). Add it to your homeserver (Synapse: app_service_config_files),
restart the homeserver, then start this container again.
MSG
  exit 0
fi
exec node "$APP/dist/src/cli.js" -c /data/config.yaml -f /data/registration.yaml
