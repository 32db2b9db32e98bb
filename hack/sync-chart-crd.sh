#!/bin/sh
# Copy the CRDs (single source: crds/*.yaml, the Slot and the SlotImageCheck) into the Helm chart.
# tests/unit/chart/test_chart.py fails while the two directories differ.
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
rm -f "$root"/charts/slot-operator/crds/*.yaml
cp "$root"/crds/*.yaml "$root/charts/slot-operator/crds/"
