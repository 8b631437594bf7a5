#!/usr/bin/env bash
# Re-vendor the dashboard's browser libraries from the npm registry (a maintainer's step,
# not a run-time or test-time one: the files in vendor/ are committed).
#
#   bash dashboard/update-vendor.sh
#
# Takes the exact versions below with `npm pack` (npm checks each tarball's integrity
# against the registry), copies the built browser files and the licences into vendor/,
# and rewrites vendor/VERSIONS.txt with their sha256 sums.
set -euo pipefail
MQTT=5.16.0          # dist/mqtt.min.js: UMD build, global `mqtt`
AJV=8.17.1           # ajv-dist: dist/ajv2020.min.js, Ajv for JSON Schema 2020-12, global `ajv2020`
FAST_URI=3.1.9       # bundled inside ajv2020.min.js (BSD-3-Clause)
FAST_DEEP_EQUAL=3.1.3
JSON_SCHEMA_TRAVERSE=1.0.0

here="$(cd "$(dirname "$0")" && pwd)"
out="$here/vendor"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "mqtt@$MQTT" "ajv-dist@$AJV" "ajv@$AJV" "fast-uri@$FAST_URI" \
  "fast-deep-equal@$FAST_DEEP_EQUAL" "json-schema-traverse@$JSON_SCHEMA_TRAVERSE" >/dev/null
for t in *.tgz; do d="${t%.tgz}"; mkdir "$d"; tar xzf "$t" -C "$d" --strip-components=1; done

mkdir -p "$out"
cp "mqtt-$MQTT/dist/mqtt.min.js" "$out/mqtt.min.js"
cp "mqtt-$MQTT/LICENSE.md" "$out/LICENSE.mqtt.md"
cp "ajv-dist-$AJV/dist/ajv2020.min.js" "$out/ajv2020.min.js"
cp "ajv-$AJV/LICENSE" "$out/LICENSE.ajv.txt"   # ajv-dist ships no licence file; same MIT text
cp "fast-uri-$FAST_URI/LICENSE" "$out/LICENSE.fast-uri.txt"
cp "fast-deep-equal-$FAST_DEEP_EQUAL/LICENSE" "$out/LICENSE.fast-deep-equal.txt"
cp "json-schema-traverse-$JSON_SCHEMA_TRAVERSE/LICENSE" "$out/LICENSE.json-schema-traverse.txt"

{
  echo "# Vendored browser files (written by dashboard/update-vendor.sh; do not edit)."
  echo "mqtt $MQTT (npm package mqtt, dist/mqtt.min.js), MIT: LICENSE.mqtt.md;"
  echo "  the bundle keeps the licence comments of the modules it includes (buffer, ieee754, ...)."
  echo "ajv $AJV (npm package ajv-dist, dist/ajv2020.min.js), MIT: LICENSE.ajv.txt;"
  echo "  bundles fast-uri (BSD-3-Clause: LICENSE.fast-uri.txt), fast-deep-equal and"
  echo "  json-schema-traverse (MIT: LICENSE.fast-deep-equal.txt, LICENSE.json-schema-traverse.txt)."
  echo
  (cd "$out" && sha256sum mqtt.min.js ajv2020.min.js)
} > "$out/VERSIONS.txt"
echo "vendored into $out:"
cat "$out/VERSIONS.txt"
