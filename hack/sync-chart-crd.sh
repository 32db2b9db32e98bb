#!/bin/sh
# Copy the Slot CRD (single source: crds/slots.woved.dev.yaml) into the Helm chart.
# tests/unit/test_chart.py fails while the two differ.
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cp "$root/crds/slots.woved.dev.yaml" "$root/charts/slot-operator/crds/slots.woved.dev.yaml"
