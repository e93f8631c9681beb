#!/usr/bin/env bash
# Print the systemd unit for an install under PREFIX: its Exec lines run PREFIX/venv's
# console script and Documentation= points at PREFIX/share. Used by deploy/install.sh.
#   deploy/render-unit.sh /opt/ringrift-daemon > ringrift-training-daemon.service
set -euo pipefail
PREFIX=${1:?usage: $0 PREFIX}
SRC=$(cd "$(dirname "$0")/.." && pwd)
sed -E -e "s#^(ExecStart(Pre)?=)[^ ]*/ringrift-daemon #\\1$PREFIX/venv/bin/ringrift-daemon #" \
    -e "s#^Documentation=.*#Documentation=file://$PREFIX/share/OPERATIONS.md#" \
    "$SRC/systemd/ringrift-training-daemon.service"
