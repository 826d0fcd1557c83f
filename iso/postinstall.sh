#!/usr/bin/env bash
# Installs llmbasedos into an Arch Linux root (the ISO's airootfs during the build, or an installed system):
# a virtual environment under /opt/llmbasedos, the models baked in so the appliance works offline, and the
# systemd units enabled. Usage: postinstall.sh [PATH_TO_LLMBASEDOS_SOURCE]   (default: /opt/llmbasedos/src)
set -euo pipefail

src="${1:-/opt/llmbasedos/src}"
prefix=/opt/llmbasedos
venv="$prefix/venv"
torch_version="${TORCH_VERSION:-2.13.0}"

if [ ! -f "$src/pyproject.toml" ]; then
    echo "postinstall: no llmbasedos source at $src" >&2
    exit 1
fi

systemd-sysusers /etc/sysusers.d/llmbasedos.conf
python -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir --upgrade pip
# torch first and pinned to a CPU build, or the search extra would pull a CUDA build of several GB.
"$venv/bin/pip" install --no-cache-dir "torch==${torch_version}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
"$venv/bin/pip" install --no-cache-dir "${src}[search,local-llm,native]"
# The gateway's per-call modules compiled to C (mypyc); without the build it runs as plain Python, only slower.
"$venv/bin/llmbasedos" native build || echo "postinstall: the gateway will run as plain Python"

# Bake the local model into the image: nothing is downloaded at run time.
install -d -o llmbasedos -g llmbasedos -m 0750 /var/lib/llmbasedos/data/models
"$venv/bin/llmbasedos" prepare-models --data-dir /var/lib/llmbasedos/data
chown -R llmbasedos:llmbasedos /var/lib/llmbasedos

install -d -m 0755 /etc/llmbasedos
install -m 0644 "$src/licence_tiers.yaml" /etc/llmbasedos/licence_tiers.yaml
install -d -m 0755 /etc/llmbasedos/workflows
cp -r "$src/workflows/." /etc/llmbasedos/workflows/

systemctl enable llmbasedos-firstboot.service luca-shell.service
echo "postinstall: llmbasedos installed in $venv; the first boot asks for a root password and starts it."
