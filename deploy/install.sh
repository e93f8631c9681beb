#!/usr/bin/env bash
# Install the training daemon on a node: a venv under PREFIX, the service user and
# directories, /etc/ringrift, and the systemd unit with its paths pointing at this venv.
#
#   sudo deploy/install.sh [--prefix /opt/ringrift-daemon] [--torch-index URL] [--no-start]
#
# --torch-index: where pip gets torch, e.g. https://download.pytorch.org/whl/cu124 for a CUDA
# 12.4 build (default: PyPI's torch, which is a CUDA build on x86_64 Linux).
# Re-running it upgrades the package in place (see docs/OPERATIONS.md, "Upgrades").
set -euo pipefail

PREFIX=/opt/ringrift-daemon
TORCH_INDEX=""
START=1
while (($#)); do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --torch-index) TORCH_INDEX=$2; shift 2 ;;
    --no-start) START=0; shift ;;
    *) echo "usage: $0 [--prefix DIR] [--torch-index URL] [--no-start]" >&2; exit 2 ;;
  esac
done
SRC=$(cd "$(dirname "$0")/.." && pwd)
VENV=$PREFIX/venv
UNIT=/etc/systemd/system/ringrift-training-daemon.service

id ringrift >/dev/null 2>&1 || useradd --system --home /var/lib/ringrift --shell /usr/sbin/nologin ringrift
getent group video >/dev/null && usermod -aG video ringrift   # /dev/nvidia* are often root:video 0660

python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
if [[ -n $TORCH_INDEX ]]; then
  "$VENV/bin/pip" install -q torch --index-url "$TORCH_INDEX"
fi
"$VENV/bin/pip" install -q "$SRC"

install -d -m 0750 -o root -g ringrift /etc/ringrift
[[ -e /etc/ringrift/config.yaml ]] || install -m 0640 -o root -g ringrift "$SRC/deploy/config.gpu.yaml" /etc/ringrift/config.yaml
[[ -e /etc/ringrift/daemon.env ]] || install -m 0640 -o root -g ringrift "$SRC/systemd/ringrift-training-daemon.env.example" /etc/ringrift/daemon.env
install -d -m 0755 /srv/ringrift/games
install -d -m 0755 "$PREFIX/share"
install -m 0644 "$SRC/README.md" "$SRC/docs/OPERATIONS.md" "$PREFIX/share/"

# Point the unit's Exec lines at this venv's console script and Documentation= at these docs.
tmp=$(mktemp -d)
"$SRC/deploy/render-unit.sh" "$PREFIX" > "$tmp/ringrift-training-daemon.service"
systemd-analyze verify "$tmp/ringrift-training-daemon.service"
install -m 0644 "$tmp/ringrift-training-daemon.service" "$UNIT"
rm -r "$tmp"
systemctl daemon-reload

"$VENV/bin/ringrift-daemon" check --config /etc/ringrift/config.yaml || true
if ((START)); then
  systemctl enable --now ringrift-training-daemon
fi
echo "installed $VENV/bin/ringrift-daemon; unit $UNIT"
